"""The plan shown before training: epochs, image size, estimated duration (services.train_plan
preview, the Train tab's text and options, the options reaching the job)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app import polling
from app.settings import train_defaults
from app.tabs import train as train_tab
from jobs import queue
from jobs.kinds import job_params
from services import labeling, train_plan
from services.context import Studio
from services.import_options import ImportOptions
from services.train_options import TrainOptions
from slrnet.config import default_mask_repeat
from storage import jobs as job_rows
from tests.ui_support import image_ids, make_project


@pytest.fixture()
def project(studio: Studio, tmp_path: Path) -> str:
    return make_project(studio, tmp_path, count=10)


def _tag(studio: Studio, project: str, names: list[str]) -> None:
    cat = labeling.get_project(studio, project).classes[1].id
    ids = image_ids(studio, project)
    for name in names:
        labeling.set_image_tags(studio, ids[name], [cat])


def _speeds(studio: Studio, known: dict[str, float]) -> None:
    (studio.data_dir / train_plan.THROUGHPUT_FILE).write_text(json.dumps(known))


def _preview(studio: Studio, project: str, **options: Any) -> train_plan.TrainPlan:
    return train_plan.preview_training(studio, project, TrainOptions(**options))


def _publish_model(studio: Studio, project: str, plan: train_plan.TrainPlan) -> int:
    """A published model version trained as ``plan`` says (its run row and checkpoint file)."""
    from storage import runs as run_repo
    from storage.projects import get_project_by_name

    names = tuple(c.name for c in labeling.get_project(studio, project).classes)
    with studio.Session.begin() as session:
        row = get_project_by_name(session, project)
        run = run_repo.create_run(session, row.id, mode=plan.mode, backbone=plan.model_config.backbone,
                                  config=train_plan.run_config(plan.model_config, plan.train_config, names))
        run_repo.set_checkpoint_path(session, run, f"checkpoints/run-{run.id}.pt")
        run_repo.mark_trained(session, run)
        run_repo.mark_published(session, run)
        version = run.version
    (studio.data_dir / "checkpoints").mkdir(exist_ok=True)
    (studio.data_dir / "checkpoints" / f"run-{run.id}.pt").write_bytes(b"weights")
    return version


def test_preview_guesses_the_speed_when_nothing_was_measured(studio: Studio, project: str) -> None:
    _tag(studio, project, ["img0.png", "img1.png", "img2.png"])
    default = _preview(studio, project, device="cpu", budget_s=10, backbone="mobilenet_v2")
    assert default.image_size == train_plan.CPU_IMAGE_SIZE
    preview = _preview(studio, project, device="cpu", budget_s=10, image_size=224, backbone="mobilenet_v2")
    assert (preview.mode, preview.image_size, preview.images_per_epoch) == ("wsss", 224, 3)
    assert preview.speed_source == "guessed" and preview.images_per_s == pytest.approx(3.0)
    assert preview.epochs == 10  # floor(10 s / (3 images / 3 img/s))
    assert preview.estimated_s == pytest.approx(10.0)
    assert preview.predict_images == 10
    assert preview.predict_s == pytest.approx(10 / train_plan.GUESS_PREDICT_IMAGES_PER_S)
    # half the side, a quarter of the pixels: four times the guessed speed
    small = _preview(studio, project, device="cpu", budget_s=10, image_size=112, backbone="mobilenet_v2")
    assert small.images_per_s == pytest.approx(12.0) and small.epochs == 30  # clamped to 30


def test_preview_uses_the_measured_speed_and_scales_another_size(studio: Studio, project: str) -> None:
    _tag(studio, project, ["img0.png", "img1.png"])
    _speeds(studio, {"cpu/mobilenet_v2/64/224": 1.0, "cpu/tiny/64/64": 40.0})
    measured = _preview(studio, project, device="cpu", budget_s=60, image_size=224, backbone="mobilenet_v2")
    assert measured.speed_source == "measured" and measured.epochs == 30
    assert measured.estimated_s == pytest.approx(60.0)  # 30 epochs x 2 images at 1 img/s
    scaled = _preview(studio, project, device="cpu", backbone="tiny", image_size=128,
                                         budget_s=1)
    assert scaled.speed_source == "scaled" and scaled.images_per_s == pytest.approx(10.0)
    assert scaled.epochs == 5 and scaled.estimated_s == pytest.approx(1.0)


def test_preview_default_budget_epochs_given_and_gpu(studio: Studio, project: str) -> None:
    _tag(studio, project, [f"img{i}.png" for i in range(10)])
    default = _preview(studio, project, device="cpu", backbone="mobilenet_v2")
    assert default.budget_s == train_plan.CPU_TRAIN_BUDGET_S
    assert default.epochs == 30  # 240 s / (10 images / 3 img/s) = 72 epochs, clamped
    given = _preview(studio, project, device="cpu", epochs=2, image_size=224, backbone="mobilenet_v2")
    # the loader drops the last partial batch of 8: an epoch trains on 8 of the 10 images
    assert given.epochs == 2 and given.budget_s is None and given.estimated_s == pytest.approx(2 * 8 / 3)
    gpu = _preview(studio, project, device="cuda")
    assert (gpu.image_size, gpu.epochs, gpu.estimated_s) == (448, 30, None)  # nothing measured on a GPU
    assert "measured when it starts" in train_tab._preview_text(gpu)


def test_mask_modes_count_every_image_and_the_mask_repeats(studio: Studio, project: str) -> None:
    labeling.save_mask(studio, image_ids(studio, project)["img0.png"], np.zeros((30, 40), np.uint8))
    preview = _preview(studio, project, device="cpu", budget_s=30)
    # ssss: 10 images, the one masked image seen 9 times per epoch (masks are half the views):
    # 18 views, of which one epoch trains on the 2 whole batches of 8 (as the service counts them)
    assert default_mask_repeat(1, 9, "ssss") == 9
    assert preview.mode == "ssss" and preview.images_per_epoch == 16


def test_preview_continues_from_the_current_model(studio: Studio, project: str) -> None:
    _tag(studio, project, ["img0.png", "img1.png", "img2.png"])
    _publish_model(studio, project, _preview(studio, project, device="cpu"))
    warm = _preview(studio, project, device="cpu")
    fresh = _preview(studio, project, device="cpu", warm_start=False)
    assert warm.warm_start_from == 1 and fresh.warm_start_from is None
    assert warm.budget_s == train_plan.CPU_TRAIN_BUDGET_S * train_plan.WARM_START_BUDGET_SHARE
    assert fresh.budget_s == train_plan.CPU_TRAIN_BUDGET_S
    assert "continues from model v1" in warm.summary() and "continues" not in fresh.summary()
    # a budget given by hand is not halved
    assert _preview(studio, project, device="cpu", budget_s=90).budget_s == 90


def test_unreadable_throughput_file_falls_back_to_the_guess(studio: Studio, project: str) -> None:
    _tag(studio, project, ["img0.png"])
    (studio.data_dir / train_plan.THROUGHPUT_FILE).write_text("{not json")
    assert _preview(studio, project, device="cpu").speed_source == "guessed"
    train_plan.record_throughput(studio.data_dir, "cpu/tiny/64/64", 12.3456)
    assert train_plan.read_throughput(studio.data_dir) == {"cpu/tiny/64/64": 12.346}


def test_train_tab_shows_the_plan_and_follows_the_options(studio: Studio, project: str) -> None:
    _tag(studio, project, ["img0.png", "img1.png", "img2.png"])
    text = train_tab.plan_markdown(studio, project, "auto", "mobilenet_v2", None, 224, "cpu", None, True)
    assert "Will train in **wsss** mode" in text
    assert "Plan: **30 epoch(s)** of 3 images at **224 px**, about **30 s** of training" in text
    assert "a first guess" in text and "to label all 10 images" in text
    shorter = train_tab.plan_markdown(studio, project, "auto", "mobilenet_v2", None, 112, "cpu", 0.05, True)
    assert "Plan: **12 epoch(s)** of 3 images at **112 px**, about **3 s**" in shorter  # 3 s budget
    assert "positive whole number" in train_tab.plan_markdown(studio, project, "auto", "", 1.5)


def test_choosing_a_project_ticks_continue_only_with_a_model(studio: Studio, project: str) -> None:
    _tag(studio, project, ["img0.png"])
    options = ("", None, None, "cpu", None, True)
    before = train_tab.choose_project_training(studio, project, "auto", *options)
    assert before["warm"]["value"] is False and before["warm"]["interactive"] is False
    _publish_model(studio, project, _preview(studio, project, device="cpu"))
    after = train_tab.choose_project_training(studio, project, "auto", *options[:-1], False)
    assert after["warm"]["value"] is True and "Continues from model v1" in after["plan"]


def test_train_button_passes_minutes_and_continue_to_the_job(studio: Studio, project: str) -> None:
    _tag(studio, project, ["img0.png"])
    queue.set_immediate(False)
    queue.bind(studio)
    try:
        train_tab.start_training(studio, project, "auto", "tiny", None, 64, "cpu", 1.5, False)
        job = polling.latest_model_job(studio, project)
        with studio.Session.begin() as session:
            options = job_params(job_rows.get_job(session, job.id)).options
        assert (options.budget_s, options.warm_start, options.epochs) == (90.0, False, None)
        train_tab.cancel_training(studio, project)
        train_tab.start_training(studio, project, "auto", "tiny", None, 64, "cpu", None, True)
        job = polling.latest_model_job(studio, project)
        with studio.Session.begin() as session:
            options = job_params(job_rows.get_job(session, job.id)).options
        assert (options.budget_s, options.warm_start) == (None, None)  # continue when it matches
    finally:
        queue.unbind()


def test_minutes_in_the_train_defaults() -> None:
    assert train_defaults('{"minutes": 0.5}') == TrainOptions(budget_s=30.0)
    with pytest.raises(Exception, match="minutes must be a positive number"):
        train_defaults('{"minutes": -1}')


def _budgeted_project(tmp_path: Path) -> Studio:
    from services.importing import import_dataset
    from tests.test_train_service import write_dataset

    files = write_dataset(tmp_path / "src", n=12, masks=0)
    studio = Studio.open(tmp_path / "data")
    import_dataset(studio, files["images"], ImportOptions(
        classes_file=files["classes"], tags_csv=files["tags"]), project="p")
    return studio


BUDGETED = {"backbone": "tiny", "image_size": 96, "device": "cpu", "budget_s": 25.0, "warm_start": False}


@pytest.mark.slow
def test_the_service_plan_is_within_30_percent_of_the_training_time(tmp_path: Path) -> None:
    """A 25 s budgeted run on 12 synthetic images: the plan's estimate (from its timed probe
    steps) against the time its epochs took."""
    from services.training import train

    with _budgeted_project(tmp_path) as studio:
        result = train(studio, "p", TrainOptions(**BUDGETED))
    plan, seconds = result.metrics["plan"], result.metrics["train_seconds"]
    print(f"\nservice plan: {plan['epochs']} epochs, estimated {plan['estimated_s']:.1f} s, "
          f"trained {seconds:.1f} s")
    assert plan["images_per_epoch"] == 8 and result.epochs == plan["epochs"]  # whole batches of 8 of 12
    assert 0.7 * seconds <= plan["estimated_s"] <= 1.3 * seconds


@pytest.mark.slow
def test_the_preview_is_within_30_percent_of_the_training_time(tmp_path: Path) -> None:
    """The plan shown before the second click of the same settings against that run's time."""
    from services.training import train

    with _budgeted_project(tmp_path) as studio:
        train(studio, "p", TrainOptions(**BUDGETED))
        preview = _preview(studio, "p", **BUDGETED)
        result = train(studio, "p", TrainOptions(**BUDGETED))
    seconds = result.metrics["train_seconds"]
    print(f"\npreview: {preview.epochs} epochs, estimated {preview.estimated_s:.1f} s "
          f"({preview.images_per_s:.1f} img/s {preview.speed_source}), trained {seconds:.1f} s "
          f"in {result.epochs} epochs")
    assert preview.speed_source == "measured"
    # the epochs come from each run's own probe steps; the preview's duration per epoch is the claim
    assert 0.7 * seconds <= preview.estimated_s * result.epochs / preview.epochs <= 1.3 * seconds


def test_the_duration_comes_from_the_last_whole_run_of_the_model(studio: Studio, project: str) -> None:
    """Epochs and duration come from how fast the last finished run of the same model really
    trained (no timed steps when a speed was measured)."""
    from storage import runs as run_repo
    from storage.projects import get_project_by_name

    _tag(studio, project, [f"img{i}.png" for i in range(10)])
    # tags only: the CPU model of this mode keeps its backbone frozen (a faster model to time)
    config = {"model": {"backbone": "mobilenet_v2", "feature_channels": 64, "freeze_backbone": True},
              "train": {"image_size": 224, "batch_size": 8, "amp": False}}
    metrics = {"plan": {"images_per_epoch": 10}, "history": [{"seconds": 2.0}, {"seconds": 2.0}]}
    with studio.Session.begin() as session:
        row = get_project_by_name(session, project)
        other = run_repo.create_run(session, row.id, mode="wsss", backbone="tiny", config={
            "model": {"backbone": "tiny", "feature_channels": 64}, "train": {"image_size": 224}})
        run_repo.mark_trained(session, other)
        run = run_repo.create_run(session, row.id, mode="wsss", backbone="mobilenet_v2", config=config)
        run_repo.record_epoch(session, run, 2, metrics)
        run_repo.mark_trained(session, run)
    preview = _preview(studio, project, device="cpu", budget_s=20, image_size=224, backbone="mobilenet_v2")
    assert preview.images_per_s == pytest.approx(4.0)  # 2 epochs x 8 trained images in 4 s
    # the same speed sizes the epochs: 20 s / (8 images, the whole batch of the 10, / 4 img/s)
    assert preview.epochs == 10 and preview.images_per_epoch == 8 and preview.speed_source == "measured"
    assert preview.estimated_s == pytest.approx(10 * 8 / 4.0)
    # another image size, or the backbone fine-tuned: no run of that model, back to the guess
    smaller = _preview(studio, project, device="cpu", image_size=112, backbone="mobilenet_v2")
    assert smaller.speed_source == "guessed"
    tuned = _preview(studio, project, device="cpu", budget_s=20, image_size=224, backbone="mobilenet_v2",
                                        model_overrides={"freeze_backbone": False})
    assert tuned.speed_source == "guessed"


def test_a_frozen_backbone_is_timed_apart_from_a_fine_tuned_one() -> None:
    """Tags-only CPU runs freeze the backbone (~1.5x faster a step): their speed must not size
    the epochs of a mask project's fine-tuned run on the same data folder, nor the reverse."""
    frozen_key = train_plan.throughput_key("cpu", "mobilenet_v2", 64, 160, True)
    tuned_key = train_plan.throughput_key("cpu", "mobilenet_v2", 64, 160)
    assert frozen_key != tuned_key
    known = {frozen_key: 9.0, tuned_key: 6.0}
    args = ("cpu", "mobilenet_v2", 64, 160)
    assert train_plan.guessed_images_per_s(known, *args, True) == (9.0, "measured")
    assert train_plan.guessed_images_per_s(known, *args, False) == (6.0, "measured")
    # another size of the frozen model scales; with no frozen speed at all, the fine-tuned one
    assert train_plan.guessed_images_per_s({frozen_key: 9.0}, "cpu", "mobilenet_v2", 64, 320,
                                           True) == (pytest.approx(2.25), "scaled")
    assert train_plan.guessed_images_per_s({tuned_key: 6.0}, *args, True) == (6.0, "measured")
    assert train_plan.guessed_images_per_s({frozen_key: 9.0}, *args, False)[1] == "guessed"
    assert train_plan.freezes_backbone("cpu", "wsss") and not train_plan.freezes_backbone("cuda", "wsss")
    assert not train_plan.freezes_backbone("cpu", "ssss_tags")
    assert not train_plan.freezes_backbone("cpu", "wsss", {"freeze_backbone": False})


def test_after_a_tags_only_cpu_model_a_round_with_masks_does_not_continue_from_it(
        studio: Studio, project: str) -> None:
    """The tags-only CPU model keeps its backbone frozen; a round with masks fine-tunes it: another
    architecture, so it trains afresh at the full budget (the service's rule) and the preview says so."""
    from storage import runs as run_repo
    from storage.projects import get_project_by_name

    _tag(studio, project, ["img0.png", "img1.png"])
    tags_only = {"num_classes": 3, "mode": "wsss", "backbone": "mobilenet_v2", "pretrained": True,
                 "has_background": True, "feature_channels": 64, "freeze_low": True,
                 "freeze_backbone": True}
    with studio.Session.begin() as session:
        row = get_project_by_name(session, project)
        run = run_repo.create_run(session, row.id, mode="wsss", backbone="mobilenet_v2",
                                  config={"model": tags_only, "train": {"image_size": 160}})
        run_repo.set_checkpoint_path(session, run, "checkpoints/run-1.pt")
        run_repo.mark_trained(session, run)
        run_repo.mark_published(session, run)
    labeling.save_mask(studio, image_ids(studio, project)["img3.png"], np.zeros((30, 40), np.uint8))
    preview = _preview(studio, project, device="cpu")
    assert preview.mode == "ssss_tags"
    assert preview.warm_start_from is None and "continues" not in preview.summary()
    assert preview.budget_s == train_plan.CPU_TRAIN_BUDGET_S
