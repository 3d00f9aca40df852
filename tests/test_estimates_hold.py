"""The CPU default's estimates against the real times (slow: real MSRC photos, two rounds).

Round 1 (empty feature store): the plan the service runs (its timed steps included) against the
time of the feature pass + training. Round 2 (warm start, store warm): the preview shown before
the click, from the speeds round 1 measured (no timed steps), against the real training and
predict times; and round 2 is faster than round 1.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from services import publishing, training
from services.context import Studio
from services.import_options import ImportOptions
from services.importing import import_dataset
from services.train_options import TrainOptions
from services.train_plan import preview_training

pytestmark = pytest.mark.slow

PHOTOS = 24
OPTIONS = TrainOptions(device="cpu", budget_s=30.0)


def _msrc_project(msrc: Path, tmp_path: Path) -> Studio:
    with open(msrc / "train" / "tags.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image"])[:PHOTOS]
    folder = tmp_path / "photos"
    folder.mkdir()
    for row in rows:
        (folder / row["image"]).symlink_to(msrc / "train" / "images" / row["image"])
    tags = tmp_path / "tags.csv"
    with open(tags, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "tags"])
        writer.writeheader()
        writer.writerows({"image": r["image"], "tags": r["tags"]} for r in rows)
    studio = Studio.open(tmp_path / "data")
    options = ImportOptions(classes_file=str(msrc / "classes.txt"), tags_csv=str(tags), has_background=False)
    import_dataset(studio, folder, options, project="p")
    return studio


def _within(estimate: float, real: float, what: str) -> None:
    print(f"{what}: estimated {estimate:.1f} s, took {real:.1f} s")
    assert 0.7 * real <= estimate <= 1.3 * real, f"{what}: estimated {estimate:.1f} s, took {real:.1f} s"


def test_the_estimates_hold_cold_and_warm_for_features_training_and_predict(
    shared_data: Path, tmp_path: Path
) -> None:
    msrc = shared_data / "msrc"
    if not msrc.is_dir():
        pytest.skip("msrc not in shared data")
    with _msrc_project(msrc, tmp_path) as studio:
        started = time.monotonic()
        first = training.train(studio, "p", OPTIONS)
        first_s = time.monotonic() - started
        plan = first.metrics["plan"]
        assert plan["features_missing"] == PHOTOS  # the store was empty: features counted
        _within(plan["estimated_s"] - plan["features_s"], first.metrics["train_seconds"], "round 1 training")
        started = time.monotonic()
        publishing.predict(studio, "p", device="cpu")
        first_s += time.monotonic() - started

        preview = preview_training(studio, "p", OPTIONS)
        assert preview.warm_start_from == first.version and preview.features_missing == 0
        assert preview.speed_source == "measured" and preview.predict_speed_source == "measured"
        started = time.monotonic()
        second = training.train(studio, "p", OPTIONS)
        second_s = time.monotonic() - started
        assert second.metrics["plan"]["speed_source"] == "measured"  # no timed steps this time
        _within(preview.estimated_s, second.metrics["train_seconds"], "round 2 training")
        started = time.monotonic()
        publishing.predict(studio, "p", device="cpu")
        predict_s = time.monotonic() - started
        second_s += predict_s
        _within(preview.predict_s, predict_s, "round 2 predict")
        print(f"round 1 {first_s:.1f} s, round 2 {second_s:.1f} s")
        assert second_s < first_s
