"""Importing the real shared data sets (coco128, CamVid val) and checking them against the source files."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import launch
from services import labeling
from services.context import Studio
from services.import_options import ImportOptions
from services.importing import ImportReport, import_dataset
from tests.import_data import images_of


def _open(root: Path) -> Studio:
    return Studio.open(root, database_url=f"sqlite:///{root / 'studio.db'}")


def _gold(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


@pytest.fixture(scope="module")
def coco_import(
    coco128: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Studio, ImportReport]]:
    """coco128 imported with its class file, tags and mask PNGs, and the import's report."""
    studio = _open(tmp_path_factory.mktemp("coco"))
    report = import_dataset(studio, coco128 / "images", ImportOptions(
        classes_file=coco128 / "classes.txt", tags_csv=coco128 / "tags.csv",
        masks_dir=coco128 / "masks"), project="coco")
    yield studio, report
    studio.close()


def test_coco128_counts_tags_and_masks(coco_import: tuple[Studio, ImportReport], coco128: Path) -> None:
    coco_studio, report = coco_import
    with (coco128 / "tags.csv").open(newline="") as f:
        rows = {r["image"]: [t for t in r["tags"].split(";") if t] for r in csv.DictReader(f)}
    assert (report.images_added, report.duplicates_skipped, report.masks_added) == (128, 0, 128)
    assert report.tags_added == sum(len(t) for t in rows.values())
    project = labeling.get_project(coco_studio, "coco")
    lines = (coco128 / "classes.txt").read_text().splitlines()
    assert len(project.classes) == 81 and [c.name for c in project.classes] == lines
    assert project.classes[0].is_background and project.class_index()["person"] == 1
    by_id = {c.id: c.name for c in project.classes}
    images = {i.name: i for i in images_of(coco_studio, "coco")}
    assert len(images) == 128
    assert sorted(by_id[c] for c in labeling.get_image_tags(coco_studio, images["000000000009.jpg"].id)) == [
        "bowl", "broccoli", "orange"
    ]
    for name in ["000000000025.jpg", "000000000030.jpg", "000000000034.jpg"]:
        tags = sorted(by_id[c] for c in labeling.get_image_tags(coco_studio, images[name].id))
        assert tags == sorted(rows[name])
    for name in list(images)[::16]:
        image = images[name]
        gold = _gold(coco128 / "masks" / f"{Path(name).stem}.png")
        assert (image.height, image.width) == gold.shape
        assert np.array_equal(labeling.get_mask(coco_studio, image.id), gold)
    nine = labeling.get_mask(coco_studio, images["000000000009.jpg"].id)
    assert set(np.unique(nine).tolist()) == {0, 46, 50, 51}  # bowl, orange, broccoli


def test_coco128_rerun_adds_nothing(coco_import: tuple[Studio, ImportReport], coco128: Path) -> None:
    coco_studio = coco_import[0]
    report = import_dataset(coco_studio, coco128 / "images", ImportOptions(
        classes_file=coco128 / "classes.txt", tags_csv=coco128 / "tags.csv",
        masks_dir=coco128 / "masks"), project="coco")
    assert (report.images_added, report.duplicates_skipped, report.tags_added, report.masks_added) == (
        0, 128, 0, 0
    )
    assert labeling.image_counts(coco_studio, "coco")["all"] == 128


def test_coco128_instances_json_matches_the_mask_pngs(studio: Studio, coco128: Path) -> None:
    report = import_dataset(studio, coco128 / "images", ImportOptions(
        classes_file=coco128 / "classes.txt", coco_json=coco128 / "instances.json"), project="c")
    assert (report.images_added, report.masks_added) == (128, 128)
    equal = total = 0
    worst = 1.0
    for image in images_of(studio, "c"):
        gold = _gold(coco128 / "masks" / f"{Path(image.name).stem}.png")
        same = int((labeling.get_mask(studio, image.id) == gold).sum())
        equal, total, worst = equal + same, total + gold.size, min(worst, same / gold.size)
    # pycocotools rasterises polygon edges slightly differently from the gold PNGs (measured:
    # 99.64% of all pixels equal, worst image 98.8%); the differences are boundary pixels only.
    assert equal / total > 0.995 and worst > 0.98


def test_camvid_val_without_background(studio: Studio, camvid: Path) -> None:
    val = camvid / "val"
    report = import_dataset(studio, val / "images", ImportOptions(
        classes_file=camvid / "classes.txt", has_background=False, masks_dir=val / "masks"), project="camvid")
    assert (report.images_added, report.masks_added, report.classes) == (101, 101, 11)
    project = labeling.get_project(studio, "camvid")
    assert not project.has_background
    assert [c.name for c in project.classes] == (camvid / "classes.txt").read_text().split()
    assert project.class_index()["sky"] == 0 and project.class_index()["bicyclist"] == 10
    images = images_of(studio, "camvid")
    for image in images[::25]:
        gold = _gold(val / "masks" / f"{Path(image.name).stem}.png")
        mask = labeling.get_mask(studio, image.id)
        assert np.array_equal(mask, gold) and (mask == 255).any()
    again = import_dataset(studio, val / "images", ImportOptions(
        classes_file=camvid / "classes.txt", has_background=False, masks_dir=val / "masks"), project="camvid")
    assert (again.images_added, again.duplicates_skipped, again.masks_added) == (0, 101, 0)


def test_cli_import_acceptance(
    coco128: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLRNET_DATABASE_URL", raising=False)
    argv = [
        "import", str(coco128 / "images"), "--classes", str(coco128 / "classes.txt"),
        "--tags", str(coco128 / "tags.csv"), "--masks", str(coco128 / "masks"), "--data", str(tmp_path / "d"),
    ]
    assert launch.main(argv) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert "128 images added" in first and "128 masks added" in first
    assert launch.main(argv) == 0
    assert "0 images added, 128 duplicates skipped, 0 tags added, 0 masks added" in capsys.readouterr().out
    assert launch.main(["import", str(tmp_path / "missing"), "--data", str(tmp_path / "d")]) == 2
    assert "error: import path" in capsys.readouterr().err
