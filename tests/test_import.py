"""The import service on small synthetic data sets: labels, duplicates, zips, COCO, bad input."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from pycocotools import mask as mask_utils

from services import labeling
from services.context import Studio
from services.import_options import ImportOptions
from services.importing import ImportReport, import_dataset
from services.progress import Cancelled
from tests.image_bytes import image_bytes, label_png, write
from tests.import_data import images_of, import_options_and_rest, make_dataset, snapshot


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "set")


def _import(studio: Studio, root: Path, **kwargs: object) -> ImportReport:
    defaults = {
        "project": "p",
        "classes_file": root / "classes.txt",
        "tags_csv": root / "tags.csv",
        "masks_dir": root / "masks",
    }
    path = kwargs.pop("path", root / "images")
    options, rest = import_options_and_rest({**defaults, **kwargs})
    return import_dataset(studio, path, options, **rest)


def test_import_folder_with_classes_tags_and_masks(studio: Studio, dataset: Path) -> None:
    seen: list[float] = []
    report = _import(studio, dataset, progress=lambda f, m, x: seen.append(f))
    counts = (report.images_added, report.duplicates_skipped, report.tags_added, report.masks_added)
    assert counts == (3, 0, 3, 2)
    assert report.classes == 3 and seen[-1] == 1.0 and seen == sorted(seen)
    project = labeling.get_project(studio, "p")
    assert [c.name for c in project.classes] == ["background", "cat", "dog"]
    images = {i.name: i for i in images_of(studio, "p")}
    assert sorted(images) == ["a.jpg", "b.png", "c.jpg"]
    assert (images["c.jpg"].width, images["c.jpg"].height) == (20, 40)  # after EXIF orientation
    assert studio.images.read_rgb(images["c.jpg"].path).shape == (40, 20, 3)
    stored = studio.images.abspath(images["a.jpg"].path)
    assert stored.read_bytes() == (dataset / "images" / "a.jpg").read_bytes()
    ids = {c.name: c.id for c in project.classes}
    assert labeling.get_image_tags(studio, images["a.jpg"].id) == sorted([ids["cat"], ids["dog"]])
    assert labeling.get_image_tags(studio, images["b.png"].id) == []
    assert labeling.get_image_tags(studio, images["c.jpg"].id) == [ids["dog"]]
    mask_a = labeling.get_mask(studio, images["a.jpg"].id)
    assert mask_a[7, 7] == 1 and mask_a[0, 0] == 0 and mask_a[25, 0] == 255
    assert (labeling.get_mask(studio, images["c.jpg"].id) == 2).all()
    assert labeling.get_mask(studio, images["b.png"].id) is None
    assert labeling.image_counts(studio, "p")["has_mask"] == 2


def test_rerun_adds_nothing(studio: Studio, dataset: Path) -> None:
    _import(studio, dataset)
    before = snapshot(studio)
    report = _import(studio, dataset)
    counts = (report.images_added, report.duplicates_skipped, report.tags_added, report.masks_added)
    assert counts == (0, 3, 0, 0)
    assert report.masks_kept == 2
    assert snapshot(studio) == before


def test_duplicate_content_is_skipped(studio: Studio, tmp_path: Path) -> None:
    data = image_bytes(32, 32, seed=5)
    write(tmp_path / "dup" / "one.jpg", data)
    write(tmp_path / "dup" / "sub" / "two.jpg", data)
    write(tmp_path / "dup" / "three.jpg", image_bytes(32, 32, seed=6))
    report = import_dataset(studio, tmp_path / "dup", project="d")
    assert (report.images_added, report.duplicates_skipped) == (2, 1)
    assert [i.name for i in images_of(studio, "d")] == ["one.jpg", "three.jpg"]
    assert len(list((studio.data_dir / "images").rglob("*.jpg"))) == 2
    # The same content in another project is a separate image there (the file is shared).
    other = import_dataset(studio, tmp_path / "dup", project="e")
    assert other.images_added == 2 and len(list((studio.data_dir / "images").rglob("*.jpg"))) == 2


def test_import_zip(studio: Studio, dataset: Path, tmp_path: Path) -> None:
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((dataset / "images").iterdir()):
            zf.write(p, f"photos/{p.name}")
        zf.writestr("__MACOSX/photos/._a.jpg", b"resource fork")
        zf.writestr("photos/", b"")
    report = _import(studio, dataset, path=archive)
    assert (report.images_added, report.tags_added, report.masks_added) == (3, 3, 2)
    names = [i.name for i in images_of(studio, "p")]
    assert names == ["a.jpg", "b.png", "c.jpg"]


def test_images_only_then_labels_later(studio: Studio, dataset: Path) -> None:
    report = import_dataset(studio, dataset / "images", project="p")
    assert report.images_added == 3 and report.classes == 0
    assert labeling.get_project(studio, "p").classes == ()
    report = _import(studio, dataset)
    assert (report.images_added, report.tags_added, report.masks_added, report.classes) == (0, 3, 2, 3)


def test_no_background_numbers_lines_from_zero(studio: Studio, tmp_path: Path) -> None:
    write(tmp_path / "cv" / "images" / "f.jpg", image_bytes(16, 8, seed=7))
    write(tmp_path / "cv" / "classes.txt", b"sky\nroad\n")
    rows = [[0] * 16] * 4 + [[1] * 16] * 3 + [[255] * 16]
    write(tmp_path / "cv" / "masks" / "f.png", label_png(np.array(rows)))
    report = import_dataset(studio, tmp_path / "cv" / "images", ImportOptions(
        has_background=False, classes_file=tmp_path / "cv" / "classes.txt",
        masks_dir=tmp_path / "cv" / "masks"), project="cv")
    assert report.masks_added == 1
    project = labeling.get_project(studio, "cv")
    assert project.class_index() == {"sky": 0, "road": 1} and not project.has_background
    image = images_of(studio, "cv")[0]
    mask = labeling.get_mask(studio, image.id)
    assert mask[0, 0] == 0 and mask[5, 0] == 1 and mask[7, 0] == 255


def _polygon(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_coco_import_draws_small_objects_over_large_ones(studio: Studio, tmp_path: Path) -> None:
    write(tmp_path / "c" / "images" / "x.jpg", image_bytes(40, 30, seed=8))
    write(tmp_path / "c" / "images" / "y.jpg", image_bytes(20, 10, seed=9))
    write(tmp_path / "c" / "images" / "z.jpg", image_bytes(8, 8, seed=10))
    small = np.zeros((10, 20), np.uint8, order="F")
    small[2:4, 2:6] = 1
    compressed = mask_utils.encode(np.asfortranarray(small))
    coco = {
        "images": [
            {"id": 1, "file_name": "x.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "sub/y.jpg", "width": 20, "height": 10},
            {"id": 3, "file_name": "z.jpg", "width": 8, "height": 8},
            {"id": 4, "file_name": "not-imported.jpg", "width": 8, "height": 8},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            # listed small first: drawing order must not follow the list
            {"id": 1, "image_id": 1, "category_id": 3, "segmentation": _polygon(10, 10, 15, 15)},
            {"id": 2, "image_id": 1, "category_id": 7, "segmentation": _polygon(0, 0, 30, 25)},
            {"id": 3, "image_id": 2, "category_id": 7, "iscrowd": 1,
             "segmentation": {"size": [10, 20], "counts": [15, 5, 180]}},  # uncompressed RLE
            {"id": 4, "image_id": 2, "category_id": 3,
             "segmentation": {"size": [10, 20], "counts": compressed["counts"].decode()}},
        ],
    }
    write(tmp_path / "c" / "instances.json", json.dumps(coco).encode())
    report = import_dataset(studio, tmp_path / "c" / "images", ImportOptions(
        coco_json=tmp_path / "c" / "instances.json"), project="c")
    assert (report.images_added, report.masks_added, report.classes) == (3, 3, 3)
    project = labeling.get_project(studio, "c")
    assert project.class_index() == {"background": 0, "cat": 1, "dog": 2}  # by category id order
    images = {i.name: i.id for i in images_of(studio, "c")}
    x = labeling.get_mask(studio, images["x.jpg"])
    assert x[12, 12] == 1 and x[5, 5] == 2 and x[28, 38] == 0
    y = labeling.get_mask(studio, images["y.jpg"])
    expected_dog = np.zeros(200, bool)
    expected_dog[15:20] = True
    expected = np.where(expected_dog.reshape(20, 10).T, 2, 0)  # column-major RLE
    expected[small.astype(bool)] = 1
    assert np.array_equal(y, expected)
    assert (labeling.get_mask(studio, images["z.jpg"]) == 0).all()  # no objects: all background


def test_coco_without_background_leaves_uncovered_pixels_unknown(studio: Studio, tmp_path: Path) -> None:
    write(tmp_path / "c" / "images" / "x.jpg", image_bytes(20, 20, seed=11))
    coco = {"images": [{"id": 1, "file_name": "x.jpg", "width": 20, "height": 20}],
            "categories": [{"id": 1, "name": "road"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _polygon(0, 0, 10, 10)}
            ]}
    write(tmp_path / "c" / "i.json", json.dumps(coco).encode())
    import_dataset(studio, tmp_path / "c" / "images", ImportOptions(
        has_background=False, coco_json=tmp_path / "c" / "i.json"), project="c")
    mask = labeling.get_mask(studio, images_of(studio, "c")[0].id)
    assert mask[5, 5] == 0 and mask[15, 15] == 255


def test_cancel_leaves_nothing(studio: Studio, dataset: Path) -> None:
    before = snapshot(studio)
    with pytest.raises(Cancelled):
        _import(studio, dataset, should_stop=lambda: True)
    assert snapshot(studio) == before


def test_one_bit_png_masks_are_read_as_zero_and_one(studio: Studio, tmp_path: Path) -> None:
    write(tmp_path / "imgs" / "a.jpg", image_bytes(16, 8, seed=1))
    bits = np.zeros((8, 16), bool)
    bits[2:5, 3:9] = True
    buf = io.BytesIO()
    PILImage.fromarray(bits).convert("1").save(buf, format="PNG")
    write(tmp_path / "m" / "a.png", buf.getvalue())
    classes = write(tmp_path / "c.txt", b"cat\n")
    masks = tmp_path / "m"
    report = import_dataset(studio, tmp_path / "imgs", ImportOptions(
        classes_file=classes, masks_dir=masks), project="b")
    assert report.masks_added == 1
    mask = labeling.get_mask(studio, images_of(studio, "b")[0].id)
    np.testing.assert_array_equal(mask, bits.astype(np.uint8))
