"""Real consumers on the SQLite queue: a ``worker`` subprocess (progress visible from another
connection, kill -9 mid-training then recovery and resume), the app's embedded consumer (import,
train, export end to end; stop leaves running jobs resumable), and concurrent writes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from jobs import queue, recovery, runner
from jobs.consumers import start_embedded_consumer
from jobs.submit import resume_job, submit_export, submit_import, submit_predict, submit_train_on_my_labels
from jobs.views import JobView, get_job
from services import labeling
from services.context import Studio
from services.exporting import ExportOptions
from services.import_options import ImportOptions
from services.train_options import TrainOptions
from storage import jobs as job_rows
from storage.labels import current_run_id, get_pseudo_label, get_tag_class_ids
from storage.models import Image as ImageRow
from storage.models import Job, TrainingRun, utcnow
from storage.projects import list_classes
from tests.conftest import REPO_ROOT
from tests.jobs_support import FakeTraining, make_project, wait_for


@pytest.fixture()
def studio(tmp_path: Path) -> Iterator[Studio]:
    s = Studio.open(tmp_path / "data")
    yield s
    queue.unbind()
    runner.reset_shutdown()
    s.close()


class WorkerProcess:
    """``launch.py worker`` in a subprocess, with the stand-in training."""

    def __init__(self, data_dir: Path, log: Path, step_s: float, epochs: int) -> None:
        code = (f"from tests.jobs_support import worker_main; "
                f"worker_main({str(data_dir)!r}, {step_s}, {epochs})")
        self.log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.name = f"{socket.gethostname()}:{self.proc.pid}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        finally:
            self.log.close()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()


def _row(studio: Studio, job_id: int) -> Job:
    with studio.Session() as session:
        return session.get(Job, job_id)


def _finished(studio: Studio, job_id: int) -> JobView:
    """The job once it has ended."""
    return wait_for(lambda: not (v := get_job(studio, job_id)).active and v, 60)


def _run_of(studio: Studio, job_id: int) -> TrainingRun | None:
    with studio.Session() as session:
        return session.scalars(select(TrainingRun).where(TrainingRun.job_id == job_id)).first()


def test_worker_subprocess_runs_a_job_and_progress_is_visible(studio: Studio, tmp_path: Path) -> None:
    make_project(studio, "p")
    view = submit_train_on_my_labels(studio, "p")
    assert view.status == "queued"
    worker = WorkerProcess(studio.data_dir, tmp_path / "worker.log", step_s=0.1, epochs=3)
    observer = Studio.open(studio.data_dir)  # a separate engine: what another app process sees
    try:
        running = wait_for(lambda: (j := _row(observer, view.id)).status == "running" and j.progress and j)
        assert running.worker == worker.name and running.heartbeat_at is not None
        assert running.message.startswith("training: ")
        done = _finished(observer, view.id)
        assert done.status == "succeeded", done.error
        assert done.result["images"] == 3 and done.progress == 1.0
        with observer.Session() as session:
            assert current_run_id(session, 1) == done.result["run_id"]
    finally:
        observer.close()
        code = worker.stop()
    assert code == 0, (tmp_path / "worker.log").read_text()


def test_launch_py_worker_runs_the_real_service_and_stores_its_error(studio: Studio, tmp_path: Path) -> None:
    make_project(studio, "p")
    view = submit_predict(studio, "p")  # no model trained yet: the real predict service refuses
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "launch.py", "worker", "--data", str(studio.data_dir)],
                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        done = _finished(studio, view.id)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        log.close()
    assert done.status == "failed"
    assert done.error == "project 'p' has no trained model to predict with; run train first"
    assert done.worker == f"{socket.gethostname()}:{proc.pid}"
    assert code == 0, (tmp_path / "worker.log").read_text()


def test_worker_killed_mid_training_is_recovered_and_resumed(studio: Studio, tmp_path: Path) -> None:
    make_project(studio, "p")
    view = submit_train_on_my_labels(studio, "p")
    log = tmp_path / "worker.log"
    first = WorkerProcess(studio.data_dir, log, step_s=0.15, epochs=5)
    try:
        wait_for(lambda: (run := _run_of(studio, view.id)) is not None and run.epoch >= 2, 60)
    finally:
        first.kill()
    assert _row(studio, view.id).status == "running"  # what kill -9 leaves behind
    epochs_done = _run_of(studio, view.id).epoch

    second = WorkerProcess(studio.data_dir, log, step_s=0.01, epochs=5)
    try:
        # The new worker's start-up sweep finds the job held by a dead process on this host.
        interrupted = wait_for(lambda: (j := _row(studio, view.id)).status == "interrupted" and j, 60)
        assert first.name in interrupted.message and "resume" in interrupted.message
        run = _run_of(studio, view.id)
        assert run.status == "interrupted" and run.epoch == epochs_done
        with studio.Session() as session:
            assert current_run_id(session, 1) is None  # the half-trained model is not current

        assert resume_job(studio, view.id).status == "queued"
        done = _finished(studio, view.id)
        assert done.status == "succeeded", done.error
        assert done.worker == second.name
        assert done.result["run_id"] == run.id and done.result["resumed_from_epoch"] == epochs_done
        with studio.Session() as session:
            assert current_run_id(session, 1) == run.id
            assert session.scalars(select(TrainingRun)).all() == [session.get(TrainingRun, run.id)]
    finally:
        code = second.stop()
    assert code == 0, log.read_text()


def _write_images(folder: Path, n: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_embedded_consumer_runs_import_train_export_and_stops_cleanly(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "SETTINGS", runner.RunnerSettings(heartbeat_s=0.1, write_interval_s=0.05))
    fake = FakeTraining(step_s=0.01)
    fake.install(monkeypatch)
    _write_images(tmp_path / "photos", 3)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    handle = start_embedded_consumer(studio)
    try:
        imported = submit_import(studio, tmp_path / "photos", "pets", ImportOptions(
            classes_file=tmp_path / "classes.txt"))
        done = _finished(studio, imported.id)
        assert done.status == "succeeded", done.error
        assert done.result["images_added"] == 3 and done.project == "pets"
        with studio.Session() as session:
            assert _row(studio, imported.id).project_id is not None
            image_ids = list(session.scalars(select(ImageRow.id)))
            cat = list_classes(session, _row(studio, imported.id).project_id)[1]
        labeling.set_image_tags(studio, image_ids[0], [cat.id])

        trained = submit_train_on_my_labels(studio, "pets")
        done = _finished(studio, trained.id)
        assert done.status == "succeeded", done.error

        exported = submit_export(studio, "pets", options=ExportOptions(source="model"))
        done = _finished(studio, exported.id)
        assert done.status == "succeeded", done.error
        assert Path(done.result["out"]).is_file() and done.result["exported"] == 3

        # Stopping the app while a training runs leaves it interrupted, resumable.
        fake.gate = threading.Event()
        fake.steps = 10_000
        blocked = submit_train_on_my_labels(studio, "pets")
        wait_for(lambda: get_job(studio, blocked.id).status == "running")
    finally:
        if fake.gate is not None:
            fake.gate.set()
        left = handle.stop()
    assert left == [] and get_job(studio, blocked.id).status == "interrupted"
    assert not runner.shutting_down()  # later jobs in this process run normally
    assert _run_of(studio, blocked.id).status == "interrupted"


def test_tagging_while_a_job_writes_pseudo_labels_loses_nothing(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 40
    project_id = make_project(studio, "p", images=n, tagged=1)
    fake = FakeTraining()
    fake.install(monkeypatch)
    handle = start_embedded_consumer(studio)
    try:
        trained = submit_train_on_my_labels(studio, "p", TrainOptions(epochs=1), predict_after=False)
        wait_for(lambda: get_job(studio, trained.id).status == "succeeded")
        with studio.Session() as session:
            classes = list_classes(session, project_id)
            image_ids = list(session.scalars(select(ImageRow.id).where(ImageRow.project_id == project_id)))

        fake.step_s = 0.02  # the job writes pseudo-labels for a while, and
        fake.last_image_gate = threading.Event()  # does not finish before tagging is done
        predicting = submit_predict(studio, "p")
        wait_for(lambda: get_job(studio, predicting.id).progress > 0)
        errors: list[BaseException] = []

        def tag(ids: list[int], class_ids: list[int]) -> None:
            try:
                for image_id in ids:
                    labeling.set_image_tags(studio, image_id, class_ids)
            except BaseException as exc:
                errors.append(exc)

        taggers = [threading.Thread(target=tag, args=(image_ids[k::2], [classes[k + 1].id])) for k in (0, 1)]
        for t in taggers:
            t.start()
        for t in taggers:
            t.join(60)
        assert get_job(studio, predicting.id).status == "running"  # held at its last image
        fake.last_image_gate.set()
        done = _finished(studio, predicting.id)
    finally:
        if fake.last_image_gate is not None:
            fake.last_image_gate.set()
        handle.stop()
    assert errors == []
    assert done.status == "succeeded", done.error
    with studio.Session() as session:
        for k, image_id in enumerate(image_ids):
            assert get_tag_class_ids(session, image_id) == [classes[k % 2 + 1].id]
            assert get_pseudo_label(session, image_id, done.result["run_id"]) is not None


@pytest.mark.parametrize("compute", [True, False], ids=["serve", "serve --no-worker"])
def test_a_dead_workers_job_is_recovered_while_the_workers_are_busy(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, compute: bool
) -> None:
    # The sweep used to be a periodic task on the compute queue: it waited behind a long training,
    # and `serve --no-worker` never ran it at all.
    monkeypatch.setattr(recovery, "SWEEP_INTERVAL_S", 0.1)
    fake = FakeTraining(gate=threading.Event())
    fake.install(monkeypatch)
    make_project(studio, "p")
    orphan_project = make_project(studio, "q")
    busy = submit_train_on_my_labels(studio, "p")
    consumers = start_embedded_consumer(studio, compute=compute)
    try:
        if compute:
            wait_for(lambda: _row(studio, busy.id).status == "running")
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        with studio.Session.begin() as session:  # a job whose worker on this host was killed
            job = job_rows.create_job(session, "train", orphan_project, {"project_id": orphan_project})
            job.status, job.worker = "running", f"{socket.gethostname()}:{int(gone.stdout)}"
            job.started_at = job.heartbeat_at = utcnow()
            orphan = job.id
        wait_for(lambda: _row(studio, orphan).status == "interrupted", 15)
        assert _row(studio, busy.id).status == ("running" if compute else "queued")
    finally:
        fake.gate.set()
        consumers.stop()
