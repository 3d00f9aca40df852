"""What a user reads when something fails: one translation (services.errors.user_message) for the
CLI, the web UI and failed jobs; a full disk is called a full disk, wherever it is noticed, and a
database driver's text (SQL, parameters) never reaches a user."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import gradio as gr
import pytest
import torch
from sqlalchemy import event

from app.errors import shows_user_errors
from jobs import runner
from services import labeling
from services.context import Studio
from services.errors import user_message
from slrnet.train import save_checkpoint
from storage import jobs as job_rows


def _full_database(studio: Studio) -> None:
    """Make the studio's SQLite file unable to grow (SQLite then answers SQLITE_FULL, as on a full disk)."""

    @event.listens_for(studio.engine, "connect")
    def _cap(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA max_page_count = 1")

    studio.engine.dispose()


def _sql_free(text: str) -> None:
    for raw in ("[SQL", "INSERT", "UPDATE", "sqlite3", "psycopg", "Background on this error"):
        assert raw not in text, text


def test_a_checkpoint_on_a_full_disk_raises_enospc(tmp_path: Path) -> None:
    # torch.save to a path turned ENOSPC into "RuntimeError: [enforce fail ...] unexpected pos"
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    target = tmp_path / "run-1.pt"
    (tmp_path / f".{target.name}.tmp-{os.getpid()}").symlink_to("/dev/full")
    with pytest.raises(OSError) as caught:
        save_checkpoint(target, {"weights": torch.zeros(100_000)})
    assert caught.value.errno == errno.ENOSPC
    assert user_message(caught.value).startswith("the disk is full")
    assert not target.exists()


def test_a_full_database_is_a_full_disk_without_sql(studio: Studio) -> None:
    labeling.create_project(studio, "p", ["cat"])
    _full_database(studio)
    with pytest.raises(Exception) as caught:
        labeling.create_project(studio, "q" * 200, [f"c{k}" for k in range(200)])
    message = user_message(caught.value)
    assert message.startswith("the disk is full") and "database" in message
    _sql_free(message)


def test_a_failed_job_stores_the_translated_line(studio: Studio) -> None:
    with studio.Session.begin() as session:
        job_id = job_rows.create_job(session, "export", None, {}).id

    def service(studio_: Studio, job, progress, should_stop) -> dict:
        labeling.create_project(studio_, "x" * 150, [f"class{k}" for k in range(5)])
        from sqlalchemy import text

        with studio_.Session.begin() as session:  # a statement the database refuses
            session.execute(text("INSERT INTO no_such_table VALUES (1)"))
        return {}

    assert runner.run_job(studio, job_id, service) == "failed"
    with studio.Session.begin() as session:
        error = job_rows.get_job(session, job_id).error
    assert error.startswith("the database failed (OperationalError)")
    _sql_free(error)


def test_the_ui_shows_a_database_failure_as_one_line_without_sql(studio: Studio) -> None:
    @shows_user_errors
    def handler() -> None:
        labeling.create_project(studio, "p", ["cat"])
        _full_database(studio)
        labeling.create_project(studio, "q" * 200, [f"c{k}" for k in range(200)])

    with pytest.raises(gr.Error) as caught:
        handler()
    assert str(caught.value.message).startswith("the disk is full")
    _sql_free(str(caught.value.message))
