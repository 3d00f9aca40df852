"""services.training services on a tiny synthetic project: mode choice, train, cancel, resume, predict,
evaluate; and storage.runs versioning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from services import evaluation, publishing, train_plan, training
from services.context import Studio
from services.devices import open_device
from services.errors import UserError
from services.import_options import ImportOptions
from services.importing import import_dataset
from services.progress import Cancelled
from services.train_options import TrainOptions
from services.train_plan import THROUGHPUT_FILE, LabelCounts, choose_mode, plan_training
from storage import labels as label_repo
from storage import runs as run_repo
from storage.models import PseudoLabel, TrainingRun
from storage.projects import get_project_by_name

FAST = {"backbone": "tiny", "epochs": 2, "image_size": 32, "device": "cpu",
        "model_overrides": {"feature_channels": 32}}


def write_dataset(root: Path, n: int = 6, masks: int = 2, tags: bool = True) -> dict[str, Path]:
    """Images with a red or blue top half (class 1 / 2) on grey (background 0)."""
    images, gt = root / "images", root / "gt"
    images.mkdir(parents=True)
    gt.mkdir()
    (root / "masks").mkdir()
    rows = ["image,tags"]
    for i in range(n):
        cls = 1 + i % 2
        pixels = np.random.default_rng(i).integers(110, 146, (40, 48, 3), dtype=np.uint8)
        pixels[:20] = (220, 30, 30) if cls == 1 else (30, 30, 220)
        mask = np.zeros((40, 48), np.uint8)
        mask[:20] = cls
        PILImage.fromarray(pixels).save(images / f"im{i}.png")
        PILImage.fromarray(mask).save(gt / f"im{i}.png")
        if i < masks:
            PILImage.fromarray(mask).save(root / "masks" / f"im{i}.png")
        rows.append(f"im{i}.png,{'red' if cls == 1 else 'blue'}")
    (root / "classes.txt").write_text("red\nblue\n")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    return {"images": images, "gt": gt, "masks": root / "masks", "classes": root / "classes.txt",
            "tags": root / "tags.csv"}


@pytest.fixture()
def studio(tmp_path: Path) -> Iterator[Studio]:
    s = Studio.open(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture()
def project(studio: Studio, tmp_path: Path) -> dict[str, Path]:
    files = write_dataset(tmp_path / "src")
    import_dataset(studio, files["images"], ImportOptions(
        classes_file=files["classes"], tags_csv=files["tags"], masks_dir=files["masks"]), project="p")
    return files


def runs(studio: Studio) -> list[TrainingRun]:
    with studio.Session() as session:
        return list(session.query(TrainingRun).order_by(TrainingRun.id))


@pytest.mark.parametrize(
    ("tagged", "masked", "mode"), [(5, 0, "wsss"), (0, 3, "ssss"), (4, 2, "ssss_tags")]
)
def test_mode_follows_the_labels(tagged: int, masked: int, mode: str) -> None:
    choice = choose_mode(LabelCounts(tagged, masked, 10), "auto")
    assert choice.mode == mode
    assert "\n" not in choice.reason and str(max(tagged, masked)) in choice.reason


@pytest.mark.parametrize(
    ("tagged", "masked", "requested"), [(0, 0, "auto"), (0, 3, "wsss"), (5, 0, "ssss"), (5, 0, "ssss_tags"),
                                        (5, 0, "bogus")]
)
def test_mode_refuses_what_the_labels_cannot_support(tagged: int, masked: int, requested: str) -> None:
    with pytest.raises(UserError):
        choose_mode(LabelCounts(tagged, masked, 1), requested)


def test_mode_override_is_accepted_when_labels_allow(studio: Studio, project: dict[str, Path]) -> None:
    assert plan_training(studio, "p").mode == "ssss_tags"
    assert plan_training(studio, "p", "wsss").mode == "wsss"
    with pytest.raises(UserError, match="no project"):
        plan_training(studio, "nope")


def test_a_predict_is_timed_and_the_next_plan_estimates_predict_from_it(
    studio: Studio, project: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan's "then about N s to predict" comes from the last predict of the same model (a
    guess before any), as training's duration does."""
    options = TrainOptions(**FAST)
    training.train(studio, "p", options)
    before = train_plan.preview_training(studio, "p", options)
    assert before.predict_speed_source == "guessed"
    assert before.predict_s == pytest.approx(6 / train_plan.GUESS_PREDICT_IMAGES_PER_S)
    monkeypatch.setattr(publishing, "TIMED_PREDICT_IMAGES", 6)  # the project has 6 images
    publishing.predict(studio, "p", device="cpu")
    key = train_plan.predict_throughput_key("cpu", before.model_config, FAST["image_size"])
    measured = train_plan.read_throughput(studio.data_dir)[key]
    after = train_plan.preview_training(studio, "p", options)
    assert after.predict_speed_source == "measured" and after.predict_images_per_s == pytest.approx(measured)
    assert after.predict_s == pytest.approx(6 / measured) and "img/s measured" in after.summary()


def test_train_predict_evaluate_publish_versions(studio: Studio, project: dict[str, Path]) -> None:
    reports: list[tuple[float, str, dict]] = []
    result = training.train(studio, "p", TrainOptions(**FAST),
                            progress=lambda f, m, x: reports.append((f, m, x)))
    assert result.mode == "ssss_tags" and result.version == 1 and result.epochs == 2
    assert (studio.data_dir / result.checkpoint_path).is_file()
    assert result.checkpoint_path.startswith("checkpoints/")
    fractions = [f for f, _, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("images_per_s" in x and "losses" in x for _, _, x in reports)
    [run] = runs(studio)
    assert (run.status, run.version, run.epoch) == ("trained", 1, 2)
    assert len(run.metrics["history"]) == 2

    with pytest.raises(UserError, match="no published model"):
        evaluation.evaluate(studio, "p", gt_masks=project["gt"])
    published = publishing.predict(studio, "p", device="cpu")
    assert (published.version, published.images) == (1, 6)
    with studio.Session() as session:
        pid = get_project_by_name(session, "p").id
        assert label_repo.current_run_id(session, pid) == run.id
        rows = session.query(PseudoLabel).filter_by(run_id=run.id).all()
        assert len(rows) == 6
        labels, confidence = label_repo.pseudo_label_arrays(rows[0])
        assert labels.shape == (40, 48) and confidence.shape == (40, 48)
        assert set(np.unique(labels)) <= {0, 1, 2, 255}

    scores = evaluation.evaluate(studio, "p", gt_masks=project["gt"])
    assert scores["images"] == 6
    assert set(scores["per_class_iou"]) == {"background", "red", "blue"}
    assert 0.0 <= scores["miou"] <= 1.0 and 0.0 <= scores["pixel_accuracy"] <= 1.0

    second = training.train(studio, "p", TrainOptions(seed=1, **FAST))
    assert second.version == 2
    with studio.Session() as session:  # trained but not yet published: version 1 stays current
        assert label_repo.current_run_id(session, pid) == run.id
        assert run_repo.latest_trained_run(session, pid).id == second.run_id


def test_cancel_keeps_the_published_model_and_resume_continues(studio: Studio,
                                                               project: dict[str, Path]) -> None:
    first = training.train(studio, "p", TrainOptions(**FAST))
    publishing.predict(studio, "p", device="cpu")

    calls = 0

    def stop_after_first_epoch() -> bool:
        nonlocal calls
        calls += 1
        return calls > 1  # 6 images + 2 masks repeated, batch 6: 1 step per epoch

    settings = {**FAST, "epochs": 3, "seed": 5}
    with pytest.raises(Cancelled):
        training.train(studio, "p", TrainOptions(**settings), should_stop=stop_after_first_epoch)
    cancelled = runs(studio)[-1]
    assert (cancelled.status, cancelled.epoch, cancelled.version) == ("cancelled", 1, None)
    with studio.Session() as session:
        pid = get_project_by_name(session, "p").id
        assert label_repo.current_run_id(session, pid) == first.run_id

    # A worker that died mid-run leaves it interrupted; the next train with the same settings resumes.
    with studio.Session.begin() as session:
        session.get(TrainingRun, cancelled.id).status = "interrupted"
    resumed = training.train(studio, "p", TrainOptions(**settings))
    assert resumed.run_id == cancelled.id and resumed.resumed_from_epoch == 1 and resumed.epochs == 3
    assert resumed.version == 2
    assert training.train(studio, "p", TrainOptions(**settings), resume=False).run_id != cancelled.id


def test_bad_input_changes_nothing(studio: Studio, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no project"):
        training.train(studio, "missing", TrainOptions(**FAST))
    files = write_dataset(tmp_path / "bare", masks=0)
    import_dataset(studio, files["images"], ImportOptions(classes_file=files["classes"]), project="bare")
    with pytest.raises(UserError, match="no labels"):
        training.train(studio, "bare", TrainOptions(**FAST))
    with pytest.raises(UserError, match="no trained model"):
        publishing.predict(studio, "bare", device="cpu")
    import_dataset(studio, files["images"], ImportOptions(tags_csv=files["tags"]), project="bare")
    with pytest.raises(UserError, match="ssss needs"):
        training.train(studio, "bare", TrainOptions(mode="ssss", **FAST))
    with pytest.raises(UserError, match="epochs"):
        training.train(studio, "bare", TrainOptions(**{**FAST, "epochs": -1}))
    assert runs(studio) == []
    assert not (studio.data_dir / "checkpoints").exists()


def test_run_repository_versions_and_current(studio: Studio, project: dict[str, Path]) -> None:
    with studio.Session.begin() as session:
        pid = get_project_by_name(session, "p").id
        b = run_repo.create_run(session, pid, mode="wsss", backbone="tiny", config={})
        assert run_repo.latest_published_run(session, pid) is None
        with pytest.raises(ValueError):
            run_repo.mark_published(session, b)  # not trained yet
        assert run_repo.mark_trained(session, b) == 1
        a = run_repo.create_run(session, pid, mode="wsss", backbone="tiny", config={})  # one running at once
        assert run_repo.mark_trained(session, a) == 2
        run_repo.mark_published(session, a)
        assert run_repo.latest_published_run(session, pid).id == a.id
        run_repo.mark_published(session, b)
        current = label_repo.current_run_id(session, pid)
        assert run_repo.latest_published_run(session, pid).id == b.id == current
        c = run_repo.create_run(session, pid, mode="wsss", backbone="tiny", config={})
        run_repo.set_checkpoint_path(session, c, "checkpoints/x.pt")
        run_repo.mark_ended(session, c, "interrupted", "worker died")
        assert run_repo.latest_resumable_run(session, pid).id == c.id
        assert c.metrics["error"] == "worker died" and c.version is None


def test_cpu_default_sizes_the_run_to_the_budget_and_reports_the_plan_first(
        studio: Studio, project: dict[str, Path]) -> None:
    reports: list[tuple[float, str, dict]] = []
    options = {k: v for k, v in FAST.items() if k != "epochs"}
    result = training.train(studio, "p", TrainOptions(budget_s=3600, **options),
                            progress=lambda f, m, x: reports.append((f, m, x)))
    plan = result.metrics["plan"]
    assert reports[0][1].startswith("plan: ") and reports[0][2]["plan"] == plan  # before any step
    assert plan["seconds_per_image"] > 0 and plan["images_per_epoch"] == 6
    assert result.epochs == plan["epochs"] == 30  # an hour fits the cap of 30 epochs of 6 images
    assert (studio.data_dir / THROUGHPUT_FILE).is_file()  # the whole run's speed, for the preview
    tiny = training.train(studio, "p", TrainOptions(budget_s=1e-3, warm_start=False, **options))
    assert tiny.epochs == 1  # nothing fits: one epoch, never zero


def test_warm_start_continues_from_the_current_model_without_warm_up(
        studio: Studio, project: dict[str, Path]) -> None:
    first = training.train(studio, "p", TrainOptions(**FAST))
    with pytest.raises(UserError, match="no current model"):
        training.train(studio, "p", TrainOptions(warm_start=True, **FAST))  # trained, not yet published
    publishing.predict(studio, "p", run_id=first.run_id, device="cpu")
    again = training.train(studio, "p", TrainOptions(**FAST))  # default: warm start when a model is current
    assert again.metrics["plan"]["warm_start_from_version"] == first.version
    assert runs(studio)[-1].config["train"]["warmup_epochs"] == 0
    fresh = training.train(studio, "p", TrainOptions(warm_start=False, **FAST))
    assert "warm_start_from_version" not in fresh.metrics["plan"]


def test_compute_consumers_share_the_cores_between_their_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import torch

    from jobs.consumers import share_cpu_threads
    from services.progress import THREADS_ENV

    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    share_cpu_threads(4)
    assert os.environ[THREADS_ENV] == "2"
    monkeypatch.setenv(THREADS_ENV, "1")  # set by the operator: kept
    share_cpu_threads(1)
    assert os.environ[THREADS_ENV] == "1"
    before = torch.get_num_threads()
    try:
        open_device("cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cpu_model_keeps_the_backbone_frozen_with_tags_only(
    studio: Studio, project: dict[str, Path]
) -> None:
    training.train(studio, "p", TrainOptions(mode="wsss", **FAST))
    training.train(studio, "p", TrainOptions(mode="ssss_tags", **FAST))
    tags_only, with_masks = (run.config["model"] for run in runs(studio))
    assert tags_only["freeze_backbone"] is True and tags_only["mode"] == "wsss"
    assert with_masks["freeze_backbone"] is False  # masks: fine-tuned (frozen did not help on CamVid)
    # each run's speed is recorded under its own key, the one its preview reads
    assert set(train_plan.read_throughput(studio.data_dir)) == {
        train_plan.throughput_key("cpu", "tiny", 32, 32, True),
        train_plan.throughput_key("cpu", "tiny", 32, 32)}


def test_a_model_trained_on_other_classes_does_not_predict(studio: Studio, project: dict[str, Path],
                                                            torch_one_thread: None) -> None:
    # its output channels follow the old class list: predicting after a reorder would relabel
    from services import labeling

    training.train(studio, "p", TrainOptions(**FAST))
    names = [c.name for c in labeling.get_project(studio, "p").classes]
    labeling.set_classes(studio, "p", [names[0], *reversed(names[1:])])
    with pytest.raises(UserError, match="changed since model version 1 was trained; train again"):
        publishing.predict(studio, "p", device="cpu")
    assert [r.status for r in runs(studio)] == ["trained"]  # nothing published with the old classes


def test_the_cpu_default_trains_the_light_head_on_stored_features_and_a_warm_round_reuses_them(
        studio: Studio, tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    files = write_dataset(tmp_path / "src", n=8, masks=0)
    import_dataset(studio, files["images"],
                   ImportOptions(classes_file=files["classes"], tags_csv=files["tags"]), project="p")
    options = {"device": "cpu", "model_overrides": {"feature_channels": 16, "feature_image_size": 64},
               "image_size": 32}
    first = training.train(studio, "p", TrainOptions(epochs=2, **options))
    plan = first.metrics["plan"]
    assert first.mode == "wsss" and plan["features_missing"] == 8 and "feature_spec" in plan
    state = training.load_checkpoint(studio.data_dir / first.checkpoint_path)
    assert state["model_config"]["head"] == "light"
    assert state["model_config"]["backbone"] == "efficientnet_lite0"
    assert studio.features.usage(plan["feature_spec"]).images == 8            # stored for the next round
    speeds = train_plan.read_throughput(studio.data_dir)
    assert speeds[train_plan.feature_throughput_key("cpu", plan["feature_spec"])] > 0
    assert speeds["cpu/efficientnet_lite0+light/16/32"] > 0, speeds
    predicted = publishing.predict(studio, "p", device="cpu")
    assert predicted.images == 8
    # a second round on the same project: warm-started, nothing left to compute, and it says so
    preview = train_plan.preview_training(studio, "p", TrainOptions(**options))
    assert preview.warm_start_from == first.version and preview.features_missing == 0
    assert preview.estimated_s is not None and "all ready" in preview.summary()
    second = training.train(studio, "p", TrainOptions(**options))
    assert second.metrics["plan"]["features_missing"] == 0
    assert second.metrics["plan"]["warm_start_from_version"] == first.version
