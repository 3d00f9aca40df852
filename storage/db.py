"""Database engine, sessions and the versioned schema.

``open_database(url)`` returns an engine and a sessionmaker with the schema created or upgraded.
A fresh database gets the current schema (``Base.metadata``) stamped with ``SCHEMA_VERSION``; an
older one runs the steps of ``MIGRATIONS`` above its stored version, in order, in one transaction.
The version lives in the one-row table ``schema_version``.

SQLite (the embedded default) is opened in WAL mode with foreign keys on and a busy timeout, so the
app, CLI runs and queue workers can write to the same file. Any other SQLAlchemy URL (PostgreSQL)
works the same way; set it with ``SLRNET_DATABASE_URL``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from storage.models import Base, Image, Job, Project, TrainingRun

logger = logging.getLogger(__name__)

DATABASE_URL_ENV = "SLRNET_DATABASE_URL"
SCHEMA_VERSION = 5
BUSY_TIMEOUT_S = 30.0

_version_metadata = MetaData()
schema_version_table = Table(
    "schema_version", _version_metadata, Column("version", Integer, nullable=False)
)


class SchemaError(RuntimeError):
    """The database cannot be used by this code (unknown layout or a newer schema)."""


def default_database_url(data_dir: str | Path) -> str:
    """The URL to use for ``data_dir``: ``$SLRNET_DATABASE_URL`` or ``<data_dir>/studio.db`` (SQLite)."""
    env = os.environ.get(DATABASE_URL_ENV)
    if env:
        return env
    return f"sqlite:///{Path(data_dir).resolve() / 'studio.db'}"


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite connections get WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    }
    if in_memory:
        kwargs["poolclass"] = StaticPool
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not in_memory:
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    return engine


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL (persistent, so only a new file's first connections do it).

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is locked" at
    once, without its busy handler, while another connection of a new file holds one; so retry
    until the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def open_database(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and sessionmaker for ``url``, with the schema created or migrated to ``SCHEMA_VERSION``.

    Sessions do not expire objects on commit, so rows read inside ``Session.begin()`` stay readable
    after the block (their unloaded relationships do not).
    """
    engine = create_db_engine(url)
    try:
        migrate(engine)
    except Exception:
        engine.dispose()
        raise
    return engine, sessionmaker(bind=engine, expire_on_commit=False)


def read_schema_version(conn: Connection) -> int | None:
    """The stored schema version, or None when the database has no ``schema_version`` table."""
    if not inspect(conn).has_table(schema_version_table.name):
        return None
    return conn.execute(select(schema_version_table.c.version)).scalar_one_or_none()


def migrate(engine: Engine) -> int:
    """Create or upgrade the schema to ``SCHEMA_VERSION``; returns the version found before."""
    with engine.connect() as conn:
        found = read_schema_version(conn)
        conn.rollback()
        if found == SCHEMA_VERSION:
            return found
        _lock_for_migration(conn)
        found = read_schema_version(conn)  # another process may have migrated meanwhile
        if found is None:
            if inspect(conn).has_table("projects"):
                raise SchemaError("the database has Studio tables but no schema_version table")
            Base.metadata.create_all(conn)
            _version_metadata.create_all(conn)
            conn.execute(schema_version_table.insert().values(version=SCHEMA_VERSION))
            logger.info("created database schema v%d", SCHEMA_VERSION)
        elif found > SCHEMA_VERSION:
            raise SchemaError(
                f"the database has schema v{found}; this code knows up to v{SCHEMA_VERSION}"
            )
        else:
            for version, step in MIGRATIONS:
                if version > found:
                    step(conn)
                    conn.execute(update(schema_version_table).values(version=version))
                    logger.info("migrated database schema to v%d", version)
        conn.commit()
        return SCHEMA_VERSION if found is None else found


def _lock_for_migration(conn: Connection) -> None:
    """Serialize concurrent migrations: SQLite takes the write lock, PostgreSQL an advisory lock."""
    backend = conn.dialect.name
    if backend == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif backend == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7271001)"))


def _v2_job_worker_heartbeat(conn: Connection) -> None:
    """v1 -> v2: jobs record which worker runs them and when it last reported (stale-job detection)."""
    for name in ("worker", "heartbeat_at"):
        column = Job.__table__.c[name]
        ddl_type = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE jobs ADD COLUMN {name} {ddl_type}")


def _v3_run_owner_and_lock(conn: Connection) -> None:
    """v2 -> v3: runs record their owner and heartbeat; at most one running run per project (the
    older extra ones, left by two trainings of one project at once, become interrupted)."""
    if not inspect(conn).has_table(TrainingRun.__tablename__):
        TrainingRun.__table__.create(conn)  # with its index
        return
    for name in ("owner", "heartbeat_at"):
        column = TrainingRun.__table__.c[name]
        ddl_type = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE training_runs ADD COLUMN {name} {ddl_type}")
    runs = TrainingRun.__table__
    rows = conn.execute(select(runs.c.id, runs.c.project_id).where(runs.c.status == "running")
                        .order_by(runs.c.id.desc())).all()
    newest: set[int] = set()
    for run_id, project_id in rows:
        if project_id in newest:
            conn.execute(update(runs).where(runs.c.id == run_id).values(status="interrupted"))
        newest.add(project_id)
    for index in runs.indexes:
        if index.name == "uq_training_runs_one_running":
            index.create(conn)


def _v4_image_tags_checked(conn: Connection) -> None:
    """v3 -> v4: images record when their tags were last checked (saved, possibly with none)."""
    if not inspect(conn).has_table(Image.__tablename__):
        Image.__table__.create(conn)
        return
    column = Image.__table__.c["tags_checked_at"]
    ddl_type = column.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE images ADD COLUMN tags_checked_at {ddl_type}")


def _v5_label_versions(conn: Connection) -> None:
    """v4 -> v5: masks and images' human tags carry a version for compare-and-set saves."""
    for table, name, default in (("masks", "version", 1), ("images", "tags_version", 0)):
        if not inspect(conn).has_table(table):
            Base.metadata.tables[table].create(conn)
            continue
        if name in {c["name"] for c in inspect(conn).get_columns(table)}:
            continue  # created by an earlier step with today's layout
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} INTEGER NOT NULL DEFAULT {default}")


# (version reached, step) in ascending order; a step runs when the stored version is below it.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (2, _v2_job_worker_heartbeat),
    (3, _v3_run_owner_and_lock),
    (4, _v4_image_tags_checked),
    (5, _v5_label_versions),
]


def lock_project(session: Session, project_id: int) -> None:
    """Serialize writers of one project's jobs or runs until the caller's transaction ends.

    Call it first in a transaction that checks and then claims (a job slot, the running run).
    PostgreSQL locks the project row; SQLite (whose driver starts transactions lazily, at the first
    write) starts the transaction with ``BEGIN IMMEDIATE``, taking the database's write lock.
    """
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        if not connection.connection.dbapi_connection.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        session.execute(select(Project.id).where(Project.id == project_id).with_for_update())
