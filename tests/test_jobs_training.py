"""Jobs around the real ``services.training`` services (tiny backbone, a few synthetic images, CPU):
"Train on my labels" end to end, and a training stopped mid-way that resumes from its checkpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs import queue, runner
from jobs.kinds import TRAIN_SHARE
from jobs.submit import resume_job, submit_train_on_my_labels
from jobs.views import get_job
from services.context import Studio
from services.import_options import ImportOptions
from services.importing import import_dataset
from services.train_options import TrainOptions
from storage.labels import current_run_id
from storage.models import PseudoLabel, TrainingRun
from tests.jobs_support import wait_for
from tests.test_train_service import write_dataset

TINY = {"backbone": "tiny", "image_size": 32, "device": "cpu", "model_overrides": {"feature_channels": 32}}


@pytest.fixture()
def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Studio]:
    monkeypatch.setattr(runner, "SETTINGS", runner.RunnerSettings(heartbeat_s=0.1, write_interval_s=0.0))
    queue.set_immediate(True)
    s = Studio.open(tmp_path / "data")
    files = write_dataset(tmp_path / "src", n=6, masks=0)
    import_dataset(s, files["images"], ImportOptions(
        classes_file=files["classes"], tags_csv=files["tags"]), project="p")
    yield s
    queue.set_immediate(False)
    runner.reset_shutdown()
    s.close()


def _runs(studio: Studio) -> list[TrainingRun]:
    with studio.Session() as session:
        return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id)))


def test_train_on_my_labels_trains_predicts_and_publishes(studio: Studio) -> None:
    view = submit_train_on_my_labels(studio, "p", TrainOptions(epochs=2, **TINY))
    assert view.status == "succeeded", view.error
    assert view.result["mode"] == "wsss" and "tags" in view.result["mode_reason"]
    assert view.result["images"] == 6 and view.result["version"] == 1
    (run,) = _runs(studio)
    assert run.status == "published" and run.job_id == view.id
    with studio.Session() as session:
        assert current_run_id(session, run.project_id) == run.id
        assert session.scalar(select(func.count(PseudoLabel.id)).where(PseudoLabel.run_id == run.id)) == 6
    curve = view.loss_curve
    assert curve and all(p["fraction"] <= TRAIN_SHARE + 1e-9 for p in curve)
    assert curve[-1]["epoch"] == 2 and curve[-1]["step"] > curve[0]["step"]
    assert view.metrics["phase"] == "predicting" and view.metrics["mode"] == "wsss"


def test_training_stopped_mid_way_resumes_from_its_checkpoint(studio: Studio) -> None:
    outcome: list = []
    thread = threading.Thread(
        target=lambda: outcome.append(submit_train_on_my_labels(studio, "p", TrainOptions(epochs=4, **TINY)))
    )
    thread.start()
    try:
        wait_for(lambda: (runs := _runs(studio)) and runs[0].epoch >= 1, timeout=120)
    finally:
        runner.request_shutdown()  # the app stops while the job trains
        thread.join(120)
        runner.reset_shutdown()
    view = outcome[0]
    assert view.status == "interrupted" and view.can_resume
    (run,) = _runs(studio)
    stopped_at = run.epoch
    assert run.status == "interrupted" and 1 <= stopped_at < 4
    with studio.Session() as session:
        assert current_run_id(session, run.project_id) is None  # nothing half-trained is current

    resumed = resume_job(studio, view.id)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.result["run_id"] == run.id and resumed.result["resumed_from_epoch"] == stopped_at
    assert resumed.result["epochs"] == 4
    assert [r.status for r in _runs(studio)] == ["published"]
    assert get_job(studio, view.id).progress == 1.0
