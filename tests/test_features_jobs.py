"""The background ``features`` job: queued after an import, one per project at a time, making way
for training and prediction jobs; with a fake extractor (no torch)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest

from jobs import kinds, queue, runner
from jobs import submit as job_submit
from jobs.submit import submit_features, submit_import
from jobs.views import get_job
from services import features as feature_service
from services.context import Studio
from storage import jobs as job_rows
from storage.models import Job
from tests.feature_support import FakeExtractor, FakeSpec, write_images

SPEC = FakeSpec()


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeExtractor:
    extractor = FakeExtractor()
    monkeypatch.setenv(feature_service.PREFILL_ENV, "1")
    monkeypatch.setattr(feature_service, "features_available", lambda: True)
    monkeypatch.setattr(job_submit, "features_available", lambda: True)
    monkeypatch.setattr(feature_service, "feature_spec", lambda backbone=None, image_size=None: SPEC)
    monkeypatch.setattr(feature_service, "make_extractor", lambda spec, device="auto": extractor)
    monkeypatch.setattr(kinds, "PAUSE_CHECK_S", 0.0)
    return extractor


@pytest.fixture()
def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Studio]:
    monkeypatch.setattr(runner, "SETTINGS", runner.RunnerSettings(heartbeat_s=0.05, write_interval_s=0.0))
    queue.set_immediate(True)
    s = Studio.open(tmp_path / "data")
    yield s
    queue.set_immediate(False)
    s.close()


def _jobs(studio: Studio, kind: str) -> list[Job]:
    with studio.Session() as session:
        return [j for j in job_rows.list_jobs(session) if j.kind == kind]


def test_an_import_job_queues_the_fill_of_its_project(studio: Studio, tmp_path: Path,
                                                       fake: FakeExtractor) -> None:
    imported = submit_import(studio, write_images(tmp_path / "src", 4), "p")
    assert get_job(studio, imported.id).status == "succeeded"
    [job] = _jobs(studio, "features")
    view = get_job(studio, job.id)
    assert view.status == "succeeded", view.error
    assert view.title == "Compute features" and view.project == "p"
    assert view.result["computed"] == 4 and view.result["spec_key"] == SPEC.key
    assert view.metrics["features_ready"] == 4 and view.metrics["features_total"] == 4
    assert fake.calls == 4
    assert feature_service.images_needing_features(studio, "p", SPEC.key) == 0

    # importing the same images again adds nothing: no second fill
    submit_import(studio, tmp_path / "src", "p")
    assert len(_jobs(studio, "features")) == 1


def test_no_fill_after_an_import_when_switched_off(studio: Studio, tmp_path: Path, fake: FakeExtractor,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(feature_service.PREFILL_ENV, "0")
    submit_import(studio, write_images(tmp_path / "src", 2), "p")
    assert _jobs(studio, "features") == [] and fake.calls == 0


def test_the_fill_makes_way_for_a_queued_training(studio: Studio, tmp_path: Path, fake: FakeExtractor,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(feature_service.PREFILL_ENV, "0")
    submit_import(studio, write_images(tmp_path / "src", 5), "p")
    original = fake.extract

    def extract_then_queue_a_prediction(image):  # after the second image, another project's
        out = original(image)                    # prediction is queued
        if fake.calls == 2:
            with studio.Session.begin() as session:
                job_rows.create_job(session, "predict", None, {"project_id": 99})
        return out

    monkeypatch.setattr(fake, "extract", extract_then_queue_a_prediction)
    view = submit_features(studio, "p")
    done = get_job(studio, view.id)
    assert done.status == "succeeded", done.error
    assert done.result["computed"] == 2 and "prediction job" in done.result["paused"]
    assert "paused" in done.message
    assert feature_service.images_needing_features(studio, "p", SPEC.key) == 3


def test_training_waits_sees_queued_and_running_jobs_of_any_project(
        studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kinds, "PAUSE_CHECK_S", 0.0)
    check = kinds.training_waits(studio)
    assert check() is None
    with studio.Session.begin() as session:
        job_id = job_rows.create_job(session, "train", None, {"project_id": 1}).id
        job_rows.create_job(session, "export", None, {"project_id": 1})
    assert f"training job (job {job_id}) is queued" in check()
    with studio.Session.begin() as session:
        job_rows.claim_job(session, job_id, "w")
    assert "is running" in check()
    with studio.Session.begin() as session:
        job_rows.finish_job(session, job_id, "w", "succeeded", "done")
    assert check() is None


def test_one_fill_per_project_at_a_time(studio: Studio, tmp_path: Path, fake: FakeExtractor,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(feature_service.PREFILL_ENV, "0")
    submit_import(studio, write_images(tmp_path / "src", 2), "p")
    queue.set_immediate(False)  # leave the job queued
    queue.bind(studio)
    try:
        first = submit_features(studio, "p")
        second = submit_features(studio, "p")
    finally:
        queue.unbind()
    assert first.id == second.id and first.status == "queued"
    assert len(_jobs(studio, "features")) == 1
    queue.bind(studio)
    try:
        other = submit_features(studio, "p", backbone="other")  # other settings: a job of its own
        assert submit_features(studio, "p", backbone="other").id == other.id != first.id
    finally:
        queue.unbind()
    assert len(_jobs(studio, "features")) == 2


def test_choosing_another_backbone_in_the_train_tab_queues_its_features(
        studio: Studio, tmp_path: Path, fake: FakeExtractor, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.tabs import train as train_tab
    from services.errors import UserError

    monkeypatch.setenv(feature_service.PREFILL_ENV, "0")
    submit_import(studio, write_images(tmp_path / "src", 2), "p")
    train_tab.prefill_features(studio, "p", "fakenet")
    assert _jobs(studio, "features") == []  # switched off (the test suite's default)
    monkeypatch.setenv(feature_service.PREFILL_ENV, "1")
    train_tab.prefill_features(studio, None, "fakenet")
    assert _jobs(studio, "features") == []
    asked: list[str | None] = []

    def spec_of(backbone: str | None = None, image_size: int | None = None) -> FakeSpec:
        asked.append(backbone)
        if backbone == "resnet50":
            raise UserError("backbone 'resnet50' has no multi-level features")
        return FakeSpec(backbone=backbone or "fake")

    monkeypatch.setattr(feature_service, "feature_spec", spec_of)
    train_tab.prefill_features(studio, "p", "fakenet")
    [job] = _jobs(studio, "features")
    assert job.status == "succeeded" and job.params["backbone"] == "fakenet" and asked == ["fakenet"]
    assert feature_service.images_needing_features(studio, "p", FakeSpec(backbone="fakenet").key) == 0
    train_tab.prefill_features(studio, "p", "resnet50")  # trains on images: nothing to store
    done = _jobs(studio, "features")[0]
    assert done.status == "succeeded" and done.result["summary"].startswith("nothing to compute: ")
    train_tab.prefill_features(studio, "nope", "fakenet")  # a project gone meanwhile: quiet


def test_no_fill_without_an_extractor(
        studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_submit, "features_available", lambda: False)
    submit_import(studio, write_images(tmp_path / "src", 1), "p")
    assert submit_features(studio, "p") is None and _jobs(studio, "features") == []


# --- launch.py features ----------------------------------------------------------------------------


def test_cli_features_fills_and_shows_sizes(tmp_path: Path, fake: FakeExtractor,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import launch
    from services.context import FEATURE_CACHE_ENV
    from services.importing import import_dataset

    monkeypatch.setenv(FEATURE_CACHE_ENV, "4096")  # restored after main() sets it
    data = tmp_path / "data"
    with Studio.open(data) as s:
        import_dataset(s, write_images(tmp_path / "src", 3), project="p")
    assert launch.main(["features", "--data", str(data), "--project", "p", "--status"]) == 0
    out = capsys.readouterr().out
    assert "features: 0/3 images ready" in out and fake.calls == 0
    assert launch.main(["features", "--data", str(data), "--project", "p", "--feature-cache-mb", "7"]) == 0
    out = capsys.readouterr().out
    assert "features: 3/3 images ready (3 computed" in out and fake.calls == 3
    assert f"features: 3/3 images ready, 0.0 MB (store 0.0 MB of 7.0 MB) for {SPEC.key}" in out
    assert "feature store " in out and "3 images" in out
    assert launch.main(["features", "--data", str(data), "--project", "nope"]) == 2
    assert "no project named 'nope'" in capsys.readouterr().err


# --- the line the Import tab shows -----------------------------------------------------------------


def test_import_tab_shows_the_feature_fill(studio: Studio, tmp_path: Path, fake: FakeExtractor) -> None:
    from app.polling import any_active
    from app.tabs import import_ as import_tab
    from jobs.views import features_line
    from services import labeling

    labeling.create_project(studio, "p", ["cat"])
    assert features_line(studio, "p") is None and features_line(studio, None) is None
    images = sorted(map(str, write_images(tmp_path / "src", 3).iterdir()))
    _status, _bar, job_ids = import_tab.import_uploads(studio, "p", images)
    status, _bar, seen, _summary = import_tab.poll_imports(studio, "p", job_ids, None)
    assert "succeeded" in status
    assert "features: 3/3 images ready, 0.0 MB (store 0.0 MB of 4096.0 MB)" in status
    assert import_tab.poll_imports(studio, "p", job_ids, seen)[0] == gr.skip()
    assert not any_active(studio, "p", job_ids, None)

    queue.set_immediate(False)  # a fill left queued: the line says so and the page keeps polling
    queue.bind(studio)
    try:
        submit_features(studio, "p")
    finally:
        queue.unbind()
    assert features_line(studio, "p") == "features: waiting to be computed"
    assert any_active(studio, "p", job_ids, None) and not any_active(studio, "p", None, None)
