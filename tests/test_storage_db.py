"""The database layer: versioned schema, v1 -> v2 upgrade, SQLite settings, URL selection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from services.context import Studio
from storage.db import SCHEMA_VERSION, SchemaError, default_database_url, open_database
from storage.models import Base, Image, Job, Project

V1_SQL = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE projects (
    id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL UNIQUE, has_background BOOLEAN NOT NULL,
    created_at DATETIME NOT NULL
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    project_id INTEGER REFERENCES projects (id) ON DELETE CASCADE,
    kind VARCHAR(16) NOT NULL, status VARCHAR(16) NOT NULL, progress FLOAT NOT NULL,
    message TEXT NOT NULL, params JSON NOT NULL, metrics JSON NOT NULL, result JSON NOT NULL,
    error TEXT, cancel_requested BOOLEAN NOT NULL, created_at DATETIME NOT NULL,
    started_at DATETIME, finished_at DATETIME
);
INSERT INTO projects VALUES (1, 'old', 1, '2024-01-01 00:00:00');
INSERT INTO jobs VALUES (7, 1, 'train', 'succeeded', 1.0, 'done', '{"epochs": 3}', '{}', '{"run_id": 2}',
                         NULL, 0, '2024-01-01 00:00:00', '2024-01-01 00:01:00', '2024-01-01 00:09:00');
"""


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_fresh_database_has_every_table_and_the_current_version(tmp_path: Path) -> None:
    engine, _ = open_database(_sqlite_url(tmp_path / "s.db"))
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) | {"schema_version"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).scalars().all() == [SCHEMA_VERSION]
    engine.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine, Session = open_database(_sqlite_url(tmp_path / "s.db"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    with pytest.raises(IntegrityError), Session.begin() as session:
        session.add(Image(project_id=999, name="x.jpg", sha256="0" * 64, path="p", width=1, height=1))
    engine.dispose()


def test_deleting_a_project_cascades_in_the_database(tmp_path: Path) -> None:
    engine, Session = open_database(_sqlite_url(tmp_path / "s.db"))
    with Session.begin() as session:
        project = Project(name="p")
        session.add(project)
        session.flush()
        session.add(Image(project_id=project.id, name="a.jpg", sha256="a" * 64, path="p", width=1, height=1))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM projects"))
        assert conn.execute(text("SELECT count(*) FROM images")).scalar() == 0
    engine.dispose()


def test_v1_database_is_upgraded_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SQL)
    engine, Session = open_database(_sqlite_url(path))
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert {"worker", "heartbeat_at"} <= columns
    with Session.begin() as session:
        job = session.get(Job, 7)
        assert (job.kind, job.status, job.message, job.params, job.result) == (
            "train", "succeeded", "done", {"epochs": 3}, {"run_id": 2}
        )
        assert job.worker is None and job.heartbeat_at is None
        assert session.scalars(select(Project.name)).all() == ["old"]
        job.worker = "gpu-1"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
        assert conn.execute(text("SELECT worker FROM jobs WHERE id = 7")).scalar() == "gpu-1"
    engine.dispose()
    # Opening again is a no-op: the version stays and nothing is re-applied.
    engine, _ = open_database(_sqlite_url(path))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM schema_version")).scalar() == 1
    engine.dispose()


def test_newer_or_unversioned_databases_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaError, match="this code knows up to"):
        open_database(_sqlite_url(newer))
    unversioned = tmp_path / "unversioned.db"
    with sqlite3.connect(unversioned) as conn:
        conn.execute("CREATE TABLE projects (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaError, match="no schema_version"):
        open_database(_sqlite_url(unversioned))


def test_database_url_defaults_to_the_data_dir_and_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLRNET_DATABASE_URL", raising=False)
    assert default_database_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'studio.db'}"
    other = tmp_path / "elsewhere" / "other.db"
    monkeypatch.setenv("SLRNET_DATABASE_URL", _sqlite_url(other))
    studio = Studio.open(tmp_path / "data")
    studio.close()
    assert other.is_file()
    assert not (tmp_path / "data" / "studio.db").exists()


def test_studio_open_uses_env_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLRNET_DATABASE_URL", raising=False)
    monkeypatch.setenv("SLRNET_DATA", str(tmp_path / "envdata"))
    monkeypatch.setenv("SLRNET_MAX_PIXELS", "1234")
    studio = Studio.open()
    studio.close()
    assert studio.data_dir == (tmp_path / "envdata").resolve()
    assert (studio.data_dir / "studio.db").is_file()
    assert studio.max_pixels == 1234


def test_concurrent_opens_and_writers_do_not_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from services import labeling

    monkeypatch.delenv("SLRNET_DATABASE_URL", raising=False)
    with ThreadPoolExecutor(4) as pool:  # separate engines, as separate processes would have
        studios = list(pool.map(lambda _: Studio.open(tmp_path / "data"), range(4)))

    def create(worker: int) -> None:
        for i in range(10):
            labeling.create_project(studios[worker], f"w{worker}-{i}", ["cat", "dog"])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, range(4)))
    assert len(labeling.list_projects(studios[0])) == 40
    with studios[0].engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM schema_version")).scalar() == 1
    for studio in studios:
        studio.close()
