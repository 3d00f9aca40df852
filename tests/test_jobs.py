"""Job machinery in huey's immediate mode, with a torch-free stand-in for ``services.training``:
status transitions, stored errors, two-phase progress, one training per project, cancel,
interruption and resume, views."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from jobs import queue, recovery, runner
from jobs.kinds import TRAIN_SHARE
from jobs.submit import (
    cancel_job,
    resume_job,
    submit_predict,
    submit_train_on_my_labels,
)
from jobs.views import get_job, list_jobs
from services.context import Studio
from services.errors import UserError
from services.train_options import TrainOptions
from storage import jobs as job_rows
from storage import runs as run_repo
from storage.labels import current_run_id
from storage.models import Job, PseudoLabel, TrainingRun, utcnow
from tests.jobs_support import FakeTraining, SimulatedCrash, make_project, wait_for

FAST = runner.RunnerSettings(heartbeat_s=0.05, write_interval_s=0.0)


@pytest.fixture()
def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Studio]:
    monkeypatch.setattr(runner, "SETTINGS", FAST)
    queue.set_immediate(True)
    s = Studio.open(tmp_path / "data")
    make_project(s, "p")
    yield s
    queue.set_immediate(False)
    runner.reset_shutdown()
    s.close()


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeTraining) -> FakeTraining:
    fake.install(monkeypatch)
    return fake


def _job_row(studio: Studio, job_id: int) -> Job:
    with studio.Session() as session:
        return session.get(Job, job_id)


def _runs(studio: Studio) -> list[TrainingRun]:
    with studio.Session() as session:
        return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id)))


def _current_run(studio: Studio, project_id: int = 1) -> int | None:
    with studio.Session() as session:
        return current_run_id(session, project_id)


def _start_in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, list]:
    """Immediate mode runs the job inside submit; run it in a thread to act on it meanwhile."""
    out: list = []

    def target() -> None:
        try:
            out.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def _wait_status(studio: Studio, job_id: int, status: str) -> Job:
    return wait_for(lambda: (job := _job_row(studio, job_id)) and job.status == status and job)


def _first_job_id(studio: Studio) -> int:
    return wait_for(lambda: _first_job_id_now(studio))


def _first_job_id_now(studio: Studio) -> int | None:
    with studio.Session() as session:
        return session.scalar(select(func.min(Job.id)))


# --- success, phases, metrics -------------------------------------------------------------------


def test_train_on_my_labels_is_one_job_in_two_phases(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, FakeTraining())
    view = submit_train_on_my_labels(studio, "p")

    assert view.status == "succeeded", view.error
    assert view.kind == "train" and view.title == "Train on my labels" and view.project == "p"
    assert view.progress == 1.0
    assert [c[0] for c in fake.calls] == ["train", "predict"]
    assert fake.calls[0][1]["mode"] == "auto" and fake.calls[0][1]["job_id"] == view.id
    run = _runs(studio)[0]
    assert run.status == "published" and _current_run(studio) == run.id
    assert view.result["run_id"] == run.id and view.result["version"] == 1 and view.result["images"] == 3
    assert "published" in view.message and view.error is None
    assert view.started_at is not None and view.finished_at >= view.started_at

    # What a poller saw in the row while it ran: training within 0..0.8, then predicting 0.8..1.
    training = [p for phase, p, _ in fake.seen if phase == "training"]
    predicting = [p for phase, p, _ in fake.seen if phase == "predicting"]
    assert training and predicting
    assert all(0.0 < p <= TRAIN_SHARE + 1e-9 for p in training) and training[-1] == pytest.approx(TRAIN_SHARE)
    assert all(TRAIN_SHARE < p <= 1.0 for p in predicting) and predicting[-1] == pytest.approx(1.0)
    progresses = [p for _, p, _ in fake.seen]
    assert progresses == sorted(progresses)
    assert all(m.startswith(("training: ", "predicting: ")) for _, _, m in fake.seen)

    curve = view.loss_curve
    assert [point["step"] for point in curve] == [1, 2, 3, 4, 5, 6]  # 3 epochs x 2 steps, counted on
    assert curve[0]["epoch"] == 1 and curve[-1]["epoch"] == 3 and curve[-1]["total"] < curve[0]["total"]
    assert all("bad" not in point for point in curve)  # NaN loss terms are dropped
    assert view.metrics["losses"]["bad"] is None  # and stored as null, never NaN
    assert view.metrics["mode"] == "wsss" and view.metrics["run_id"] == run.id
    assert "eta_s" in view.metrics and view.eta_s is None  # no ETA once finished


def test_train_only_does_not_publish(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, FakeTraining())
    view = submit_train_on_my_labels(studio, "p", TrainOptions(epochs=1), predict_after=False)
    assert view.status == "succeeded" and view.title == "Train"
    assert [c[0] for c in fake.calls] == ["train"] and fake.calls[0][1]["epochs"] == 1
    assert _runs(studio)[0].status == "trained" and _current_run(studio) is None

    predicted = submit_predict(studio, "p")
    assert predicted.status == "succeeded" and predicted.result["version"] == 1
    assert _current_run(studio) == _runs(studio)[0].id


# --- errors -------------------------------------------------------------------------------------


def test_user_error_is_stored_as_is(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    message = "the checkpoint of model version 3 is missing"
    install(monkeypatch, FakeTraining(fail=UserError(message)))
    view = submit_train_on_my_labels(studio, "p")
    assert view.status == "failed"
    assert view.error == message
    assert not view.active and not view.can_resume


def test_a_mode_the_labels_do_not_allow_is_refused_before_anything_is_queued(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = install(monkeypatch, FakeTraining())
    with pytest.raises(UserError, match="mode ssss needs images with masks"):
        submit_train_on_my_labels(studio, "p", TrainOptions(mode="ssss"))  # project p has tags only
    assert list_jobs(studio, "p") == [] and fake.calls == []


def test_unexpected_error_stores_type_and_message_and_logs_traceback(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install(monkeypatch, FakeTraining(fail=RuntimeError("CUDA out of memory")))
    with caplog.at_level(logging.ERROR, logger="jobs.runner"):
        view = submit_train_on_my_labels(studio, "p")
    assert view.status == "failed" and view.error == "RuntimeError: CUDA out of memory"
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_a_failed_progress_write_does_not_fail_the_job(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeTraining())
    real = job_rows.report_progress
    failures = []

    def flaky(*args: object, **kwargs: object) -> bool:
        if len(failures) < 2:
            failures.append(1)
            raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(job_rows, "report_progress", flaky)
    view = submit_train_on_my_labels(studio, "p")
    assert len(failures) == 2
    assert view.status == "succeeded", view.error
    assert [point["step"] for point in view.loss_curve] == [1, 2, 3, 4, 5, 6]  # nothing lost


def test_submit_checks_input_before_queueing(studio: Studio, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no project named 'nope'"):
        submit_train_on_my_labels(studio, "nope")
    with pytest.raises(UserError, match="unknown mode"):
        submit_train_on_my_labels(studio, "p", TrainOptions(mode="fully"))
    make_project(studio, "unlabelled", images=2, tagged=0)
    with pytest.raises(UserError, match="no labels yet"):
        submit_train_on_my_labels(studio, "unlabelled")
    make_project(studio, "empty", images=0, tagged=0)
    with pytest.raises(UserError, match="no images"):
        submit_train_on_my_labels(studio, "empty")
    assert list_jobs(studio) == []


# --- one training per project -------------------------------------------------------------------


def test_second_training_of_a_project_is_refused_while_one_runs(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    install(monkeypatch, FakeTraining(gate=gate))
    make_project(studio, "other")
    thread, out = _start_in_thread(submit_train_on_my_labels, studio, "p")
    job_id = _first_job_id(studio)
    _wait_status(studio, job_id, "running")

    with pytest.raises(UserError) as err:
        submit_train_on_my_labels(studio, "p")
    assert str(err.value) == f"a training job for project 'p' is already running (job {job_id})"
    with pytest.raises(UserError, match="already running"):
        submit_predict(studio, "p")
    assert [j.id for j in list_jobs(studio, "p", active_only=True)] == [job_id]

    gate.set()
    thread.join(30)
    assert out[0].status == "succeeded"
    assert submit_train_on_my_labels(studio, "other").status == "succeeded"  # other projects: unaffected
    assert submit_train_on_my_labels(studio, "p").status == "succeeded"  # and p again once done


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_while_running_keeps_the_last_good_model(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeTraining())
    first = submit_train_on_my_labels(studio, "p", TrainOptions(epochs=1))
    good_run = first.result["run_id"]
    assert _current_run(studio) == good_run

    gate = threading.Event()
    install(monkeypatch, FakeTraining(gate=gate, steps=1000))
    thread, out = _start_in_thread(submit_train_on_my_labels, studio, "p")
    job_id = wait_for(lambda: (v := list_jobs(studio, "p", active_only=True)) and v[0].id)
    _wait_status(studio, job_id, "running")
    gate.set()
    wait_for(lambda: _job_row(studio, job_id).progress > 0.0)

    view = cancel_job(studio, job_id)
    assert view.cancel_requested and view.message == "cancelling…" and not view.can_cancel
    thread.join(30)
    assert not thread.is_alive()
    assert out[0].id == job_id and out[0].status == "cancelled"
    final = get_job(studio, job_id)
    assert final.status == "cancelled" and final.error is None
    assert "cancelled" in final.message
    assert _runs(studio)[-1].status == "cancelled"
    assert _current_run(studio) == good_run  # the published model is still the current one
    with pytest.raises(UserError, match="already ended"):
        cancel_job(studio, job_id)


# --- interruption, recovery, resume -------------------------------------------------------------


def test_crashed_training_is_recovered_and_resumes_from_its_checkpoint(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeTraining(crash_after_epoch=2, default_epochs=4))
    with pytest.raises(SimulatedCrash):
        submit_train_on_my_labels(studio, "p")
    job_id = _first_job_id(studio)
    assert _job_row(studio, job_id).status == "running"  # what a killed process leaves behind

    # The job is held by this very process, which is not running it: orphaned (a restart reusing PIDs).
    assert recovery.recover_jobs(studio) == [job_id]
    view = get_job(studio, job_id)
    assert view.status == "interrupted" and view.can_resume and "resume" in view.message
    run = _runs(studio)[0]
    assert run.status == "interrupted" and run.epoch == 2
    assert _current_run(studio) is None  # nothing of the half-trained model is current

    fake = install(monkeypatch, FakeTraining(default_epochs=4))
    resumed = resume_job(studio, job_id)
    assert resumed.id == job_id and resumed.status == "succeeded", resumed.error
    assert resumed.result["resumed_from_epoch"] == 2 and resumed.result["run_id"] == run.id
    assert fake.calls[0][1]["resume"] is True
    assert len(_runs(studio)) == 1 and _current_run(studio) == run.id
    with pytest.raises(UserError, match="only an interrupted job"):
        resume_job(studio, job_id)


def test_job_interrupted_while_predicting_only_predicts_on_resume(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeTraining(crash_in_predict_after=1))
    with pytest.raises(SimulatedCrash):
        submit_train_on_my_labels(studio, "p")
    job_id = _first_job_id(studio)
    recovery.recover_jobs(studio)
    run = _runs(studio)[0]
    assert run.status == "trained"  # a finished training stays trained, it is just not published
    assert _current_run(studio) is None

    fake = install(monkeypatch, FakeTraining())
    view = resume_job(studio, job_id)
    assert view.status == "succeeded" and [c[0] for c in fake.calls] == ["predict"]
    assert view.result["run_id"] == run.id and _current_run(studio) == run.id
    with studio.Session() as session:
        assert session.scalar(select(func.count(PseudoLabel.id))) == 3


def test_recovery_marks_only_orphaned_jobs(studio: Studio) -> None:
    now = utcnow()
    rows = {
        "stale remote": ("elsewhere:4242", now - timedelta(seconds=600)),
        "fresh remote": ("elsewhere:4243", now),
        "dead local": (f"{runner.worker_name().rpartition(':')[0]}:999999999", now),
    }
    ids = {}
    with studio.Session.begin() as session:
        for name, (worker, beat) in rows.items():
            job = job_rows.create_job(session, "predict", 1, {"project": "p"})
            job.status, job.worker, job.started_at, job.heartbeat_at = "running", worker, beat, beat
            ids[name] = job.id
        run_id = run_repo.create_run(session, 1, mode="wsss", backbone="b", config={},
                                     job_id=ids["stale remote"]).id
    assert sorted(recovery.recover_jobs(studio, stale_after_s=60)) == sorted(
        [ids["stale remote"], ids["dead local"]]
    )
    assert get_job(studio, ids["fresh remote"]).status == "running"
    assert "no heartbeat from elsewhere:4242" in get_job(studio, ids["stale remote"]).message
    with studio.Session() as session:
        assert session.get(TrainingRun, run_id).status == "interrupted"
    assert recovery.recover_jobs(studio, stale_after_s=60) == []  # idempotent


def test_a_live_jobs_heartbeat_survives_a_long_database_lock(studio: Studio) -> None:
    # A 90 s lock made a worker's own sweep mark its live training interrupted: the heartbeat could
    # not be written, and the sweep read the late heartbeat as a dead worker.
    import sqlite3

    with studio.Session.begin() as session:
        job_id = job_rows.create_job(session, "export", None, {}).id
    started, finish = threading.Event(), threading.Event()

    def service(studio_: Studio, job: Job, progress, should_stop) -> dict:
        started.set()
        finish.wait(60)
        return {"stopped": should_stop()}

    settings = runner.RunnerSettings(heartbeat_s=0.05, write_interval_s=0.0)
    thread = threading.Thread(target=runner.run_job, args=(studio, job_id, service),
                              kwargs={"settings": settings})
    thread.start()
    assert started.wait(30)
    blocker = sqlite3.connect(studio.engine.url.database, timeout=30, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the database's write lock
    time.sleep(1.5)  # the heartbeat cannot be written meanwhile
    threading.Timer(0.5, lambda: (blocker.rollback(), blocker.close())).start()
    recovery.recover_jobs(studio, stale_after_s=1)  # this process's own sweep, as the lock ends
    assert _job_row(studio, job_id).status == "running"
    finish.set()
    thread.join(60)
    view = get_job(studio, job_id)
    assert view.status == "succeeded" and view.result == {"stopped": False}


def test_the_sweep_thread_recovers_stale_jobs(studio: Studio) -> None:
    with studio.Session.begin() as session:
        job = job_rows.create_job(session, "train", 1, {"project_id": 1})
        long_ago = utcnow() - timedelta(seconds=recovery.STALE_AFTER_S + 30)
        job.status, job.worker, job.started_at, job.heartbeat_at = "running", "gpu-7:77", long_ago, long_ago
        job_id = job.id
    sweeper = recovery.Sweeper(studio, interval_s=0.05).start()
    try:
        wait_for(lambda: get_job(studio, job_id).status == "interrupted", 10)
    finally:
        sweeper.stop()


def test_the_sweep_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(recovery.SWEEP_INTERVAL_ENV, "0.5")
    assert recovery.sweep_interval_s() == 0.5
    for bad in ("soon", "-1", "0"):
        monkeypatch.setenv(recovery.SWEEP_INTERVAL_ENV, bad)
        assert recovery.sweep_interval_s() == recovery.SWEEP_INTERVAL_S


def test_shutdown_leaves_the_job_interrupted_and_resumable(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeTraining(steps=1000))
    thread, out = _start_in_thread(submit_train_on_my_labels, studio, "p")
    job_id = _first_job_id(studio)
    wait_for(lambda: _job_row(studio, job_id).progress > 0.0)
    runner.request_shutdown()
    thread.join(30)
    runner.reset_shutdown()
    view = get_job(studio, job_id)
    assert out[0] == view and view.status == "interrupted" and view.can_resume
    assert _runs(studio)[0].status == "interrupted"  # not "cancelled": it can continue

    fake = install(monkeypatch, FakeTraining(default_epochs=1))
    assert resume_job(studio, job_id).status == "succeeded"
    assert len(_runs(studio)) == 1 and fake.calls[0][0] == "train"


def test_a_job_taken_from_its_worker_stops_and_is_left_alone(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeTraining(steps=1000))
    thread, out = _start_in_thread(submit_train_on_my_labels, studio, "p")
    job_id = _first_job_id(studio)
    wait_for(lambda: _job_row(studio, job_id).progress > 0.0)
    with studio.Session.begin() as session:  # a sweep that wrongly thought the worker dead
        job_rows.mark_interrupted(session, job_id, "interrupted: no heartbeat")
    thread.join(30)
    assert not thread.is_alive()
    view = get_job(studio, job_id)
    assert out[0] == view and view.status == "interrupted" and view.message == "interrupted: no heartbeat"
    assert _runs(studio)[0].status == "interrupted"  # resumable, though the service saw a stop


# --- views --------------------------------------------------------------------------------------


def test_views(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeTraining(default_epochs=1))
    make_project(studio, "q")
    a = submit_train_on_my_labels(studio, "p")
    b = submit_train_on_my_labels(studio, "q")
    assert [j.id for j in list_jobs(studio)] == [b.id, a.id]
    assert [j.id for j in list_jobs(studio, "q")] == [b.id]
    assert list_jobs(studio, active_only=True) == []
    assert get_job(studio, a.id) == a
    with pytest.raises(UserError, match="no job with id 999"):
        get_job(studio, 999)
    with pytest.raises(UserError, match="no project named"):
        list_jobs(studio, "nope")


def test_job_parameters_are_typed_and_rows_written_before_them_still_read(studio: Studio) -> None:
    from jobs.kinds import ExportParams, TrainOptions, TrainParams, job_params
    from services.exporting import ExportOptions

    with studio.Session.begin() as session:
        legacy = job_rows.create_job(session, "train", 1, {"project": "p", "predict_after": False,
                                                          "options": {"epochs": 2, "unknown": 1}})
        export = job_rows.create_job(session, "export", 1, {"project": "p", "fmt": "voc", "out": "/x"})
        assert job_params(legacy) == TrainParams(project_id=1, options=TrainOptions(epochs=2),
                                                 predict_after=False)
        assert job_params(export) == ExportParams(project_id=1, out="/x", options=ExportOptions(fmt="voc"))
    titles = {j.id: j.title for j in list_jobs(studio, "p")}
    assert titles == {legacy.id: "Train", export.id: "Export (voc)"}
