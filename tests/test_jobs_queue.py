"""Submitting to the real SQLite queue with no consumer running: jobs wait 'queued', a project's
second training is refused even under concurrent submits, queued jobs cancel at once; the modules
the UI imports stay torch-free; queue URLs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs import queue
from jobs.submit import cancel_job, submit_export, submit_predict, submit_train_on_my_labels
from jobs.views import list_jobs
from services.context import Studio
from services.errors import UserError
from services.exporting import ExportOptions
from services.train_options import TrainOptions
from tests.conftest import REPO_ROOT
from tests.jobs_support import make_project


@pytest.fixture()
def studio(tmp_path: Path) -> Iterator[Studio]:
    s = Studio.open(tmp_path / "data")
    make_project(s, "p")
    yield s
    queue.unbind()
    s.close()


def test_jobs_wait_queued_and_a_second_training_is_refused(studio: Studio) -> None:
    first = submit_train_on_my_labels(studio, "p", TrainOptions(epochs=2))
    assert first.status == "queued" and first.active and first.can_cancel and first.progress == 0.0
    assert first.params["options"]["epochs"] == 2 and first.params["predict_after"] is True
    assert queue.compute.pending_count() == 1 and queue.local.pending_count() == 0
    assert (studio.data_dir / queue.QUEUE_FILE).is_file()

    with pytest.raises(UserError) as err:
        submit_train_on_my_labels(studio, "p")
    assert str(err.value) == f"a training job for project 'p' is already queued (job {first.id})"
    with pytest.raises(UserError, match=f"already queued \\(job {first.id}\\)"):
        submit_predict(studio, "p")
    assert queue.compute.pending_count() == 1  # nothing was queued for the refused submits

    cancelled = cancel_job(studio, first.id)
    assert cancelled.status == "cancelled" and not cancelled.active and cancelled.finished_at is not None
    second = submit_train_on_my_labels(studio, "p")
    assert second.status == "queued" and second.id != first.id


def test_concurrent_submits_queue_exactly_one_training(tmp_path: Path) -> None:
    # Separate Studio objects: separate engines and connections, as separate app processes have.
    studios = [Studio.open(tmp_path / "data") for _ in range(4)]
    make_project(studios[0], "p")
    barrier = threading.Barrier(len(studios))
    outcomes: list[object] = []

    def submit(s: Studio) -> None:
        barrier.wait()
        try:
            outcomes.append(submit_train_on_my_labels(s, "p"))
        except UserError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit, args=(s,)) for s in studios]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(outcomes) == 4
        errors = [o for o in outcomes if isinstance(o, UserError)]
        assert len(errors) == 3, outcomes
        assert all("already queued" in str(e) for e in errors)
        assert len(list_jobs(studios[0], "p", active_only=True)) == 1
    finally:
        queue.unbind()
        for s in studios:
            s.close()


def test_export_goes_to_the_local_queue_with_a_default_path(studio: Studio) -> None:
    view = submit_export(studio, "p", options=ExportOptions(fmt="voc", source="human"))
    assert view.status == "queued" and view.title == "Export (voc)"
    assert view.params["out"] == str(studio.data_dir / "exports" / f"p-voc-{view.id}")
    assert queue.local.pending_count() == 1 and queue.compute.pending_count() == 0
    with pytest.raises(UserError, match="unknown export format"):
        submit_export(studio, "p", options=ExportOptions(fmt="tiff"))


def test_ui_facing_job_modules_do_not_import_torch() -> None:
    code = (
        "import sys, jobs.submit, jobs.views, jobs.consumers, jobs.tasks; "
        "print(sorted(m for m in ('torch', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("url", "package"), [("redis://localhost:6379/0", "redis"), ("postgresql+psycopg://db/studio", "psycopg")]
)
def test_a_queue_url_without_its_client_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, package: str
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == package else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)  # as if the driver were missing
    with pytest.raises(UserError, match=f"pip install {package}"):
        queue.make_storage("slrnet-compute", tmp_path, url)


def test_an_unknown_queue_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="expected a redis"):
        queue.make_storage("slrnet-compute", tmp_path, "amqp://localhost")
