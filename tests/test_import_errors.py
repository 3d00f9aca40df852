"""Bad input to the import service: a clear one-line UserError, and nothing changed (rows or files)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.context import Studio
from services.errors import UserError
from services.import_options import ImportOptions
from services.importing import import_dataset
from tests.image_bytes import image_bytes, label_png, png_header_claiming, write
from tests.import_data import import_options_and_rest, make_dataset, snapshot

Case = Callable[[Path], dict[str, Any]]


def _base(tmp: Path) -> Path:
    """A folder with one new image n.jpg (32x24); the project already has three other images."""
    folder = tmp / "new"
    write(folder / "n.jpg", image_bytes(32, 24, seed=100))
    return folder


def truncated(tmp: Path) -> dict[str, Any]:
    good = image_bytes(320, 240, seed=101)
    write(_base(tmp) / "t.jpg", good[: len(good) * 2 // 3])
    return {"match": r"t\.jpg: corrupt or truncated image"}


def text_file(tmp: Path) -> dict[str, Any]:
    write(_base(tmp) / "notes.txt", b"hello")
    return {"match": r"notes\.txt: not an image file \(supported: "}


def text_named_jpg(tmp: Path) -> dict[str, Any]:
    write(_base(tmp) / "z.jpg", b"hello, not a jpeg")
    return {"match": r"z\.jpg: not an image file"}


def over_limit(tmp: Path) -> dict[str, Any]:
    write(_base(tmp) / "z.jpg", image_bytes(64, 64, seed=102))
    return {"max_pixels": 40 * 30, "match": r"z\.jpg: image is 64x64 = 4096 pixels, over the limit of 1200"}


def bomb(tmp: Path) -> dict[str, Any]:
    write(_base(tmp) / "z.png", png_header_claiming(40_000, 40_000))
    return {"match": r"z\.png: image is over the pixel limit of 100000000"}


def zip_escape(tmp: Path) -> dict[str, Any]:
    archive = tmp / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("n.jpg", image_bytes(32, 24, seed=100))
        zf.writestr("../evil.jpg", image_bytes(8, 8, seed=103))
    return {"path": archive, "match": r"entry '\.\./evil\.jpg' escapes the archive's folder"}


def zip_absolute(tmp: Path) -> dict[str, Any]:
    archive = tmp / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("/abs/evil.jpg", image_bytes(8, 8, seed=103))
    return {"path": archive, "match": "escapes the archive's folder"}


def not_a_zip(tmp: Path) -> dict[str, Any]:
    return {"path": write(tmp / "fake.zip", b"not a zip"), "match": "not a readable zip archive"}


def empty_folder(tmp: Path) -> dict[str, Any]:
    (tmp / "empty").mkdir()
    return {"path": tmp / "empty", "match": "no images found"}


def csv_unknown_image(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"tags_csv": write(tmp / "t.csv", b"image,tags\nn.jpg,cat\nghost.jpg,cat\n"),
            "match": r"t\.csv:3: image 'ghost\.jpg' is neither in the import nor in the project"}


def csv_unknown_class(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"tags_csv": write(tmp / "t.csv", b"image,tags\nn.jpg,cat;unicorn\n"),
            "match": r"t\.csv:2: unknown class 'unicorn'"}


def csv_bad_header(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"tags_csv": write(tmp / "t.csv", b"file,labels\nn.jpg,cat\n"),
            "match": r"t\.csv: not a tags CSV \(its first line must name the columns image,tags\)$"}


def mask_size(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    write(tmp / "m" / "n.png", label_png(np.zeros((32, 24), np.uint8)))
    return {"masks_dir": tmp / "m", "match": r"n\.png: mask is 24x32 but image n\.jpg is 32x24"}


def mask_values(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    values = np.zeros((24, 32), np.uint8)
    values[0, :3] = [3, 7, 255]
    write(tmp / "m" / "n.png", label_png(values))
    return {"masks_dir": tmp / "m", "match": r"n\.png: mask values \[3, 7\] are not class indices"}


def mask_rgb(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    write(tmp / "m" / "n.png", image_bytes(32, 24, fmt="PNG"))
    return {"masks_dir": tmp / "m", "match": "indexed or grayscale PNG, got mode RGB"}


def masks_match_nothing(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    write(tmp / "m" / "other.png", label_png(np.zeros((24, 32), np.uint8)))
    return {"masks_dir": tmp / "m", "match": r"none of its 1 PNG files is named like an imported image"}


def masks_folder_empty(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    (tmp / "m").mkdir()
    return {"masks_dir": tmp / "m", "match": r"none of its 0 PNG files"}


def missing_path(tmp: Path) -> dict[str, Any]:
    return {"path": tmp / "nowhere", "match": "import path .*nowhere does not exist"}


def missing_classes(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"classes_file": tmp / "nope.txt", "match": "class file .*nope.txt does not exist"}


def missing_tags(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"tags_csv": tmp / "nope.csv", "match": "tags CSV .*nope.csv does not exist"}


def missing_masks(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"masks_dir": tmp / "nope", "match": "masks folder .*nope does not exist"}


def missing_coco(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"coco_json": tmp / "nope.json", "match": "COCO file .*nope.json does not exist"}


def other_classes(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"classes_file": write(tmp / "c.txt", b"cow\n"), "match": "already has 3 other classes"}


def masks_and_coco(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    (tmp / "m").mkdir()
    return {"masks_dir": tmp / "m", "coco_json": write(tmp / "i.json", b"{}"),
            "match": "give one of a masks folder, a COCO file or a Label Studio export"}


def labels_without_classes(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"project": "fresh", "tags_csv": write(tmp / "t.csv", b"image,tags\n"),
            "match": "has no classes yet"}


def coco_bad_json(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"coco_json": write(tmp / "i.json", b"{not json"), "match": "cannot read JSON"}


def coco_unknown_category(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "zebra"}]}
    return {"coco_json": write(tmp / "i.json", json.dumps(coco).encode()),
            "match": r"COCO categories \['zebra'\] are not classes"}


def coco_size_mismatch(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    coco = {"images": [{"id": 1, "file_name": "n.jpg", "width": 10, "height": 10}], "annotations": [],
            "categories": [{"id": 1, "name": "cat"}]}
    return {"coco_json": write(tmp / "i.json", json.dumps(coco).encode()),
            "match": r"COCO image n\.jpg is 10x10 but the file is 32x24"}


def _coco_one(tmp: Path, segmentation: Any) -> Path:
    coco = {"images": [{"id": 1, "file_name": "n.jpg", "width": 32, "height": 24}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": segmentation}],
            "categories": [{"id": 1, "name": "cat"}]}
    return write(tmp / "i.json", json.dumps(coco).encode())


def coco_nan_polygon(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"coco_json": _coco_one(tmp, [[0, 0, float("nan"), 0, 9, 9]]), "match": "nan is not finite"}


def coco_inf_polygon(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"coco_json": _coco_one(tmp, [[0, 0, float("-inf"), 0, 9, 9]]), "match": "-inf is not finite"}


def coco_rle_overrun(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"coco_json": _coco_one(tmp, {"size": [24, 32], "counts": [0, 10**9]}),
            "match": "RLE counts cover 1000000000 pixels"}


def coco_compressed_rle_overrun(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return {"coco_json": _coco_one(tmp, {"size": [24, 32], "counts": "0" + "W" * 8 + "0"}),
            "match": "bad segmentation"}


def name_clash(tmp: Path) -> dict[str, Any]:
    write(_base(tmp) / "a.jpg", image_bytes(40, 30, seed=999))  # the project's a.jpg has other content
    return {"match": r"a\.jpg: an image with other content is already named so"}


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "set")


CASES = [
    truncated, text_file, text_named_jpg, over_limit, bomb, zip_escape, zip_absolute, not_a_zip,
    empty_folder, csv_unknown_image, csv_unknown_class, csv_bad_header, mask_size, mask_values, mask_rgb,
    missing_path, missing_classes, missing_tags, missing_masks, missing_coco, other_classes, masks_and_coco,
    labels_without_classes, coco_bad_json, coco_unknown_category, coco_size_mismatch, name_clash,
    coco_nan_polygon, coco_inf_polygon, coco_rle_overrun, coco_compressed_rle_overrun,
    masks_match_nothing, masks_folder_empty,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    studio: Studio, dataset: Path, tmp_path: Path, case: Case
) -> None:
    import_dataset(studio, dataset / "images", ImportOptions(
        classes_file=dataset / "classes.txt"), project="p")
    before = snapshot(studio)
    kwargs = {"project": "p", "path": tmp_path / "new", **case(tmp_path)}
    match = kwargs.pop("match")
    with pytest.raises(UserError, match=match) as info:
        path = kwargs.pop("path")
        options, rest = import_options_and_rest(kwargs)
        import_dataset(studio, path, options, **rest)
    assert "\n" not in str(info.value)
    assert snapshot(studio) == before
    assert not (tmp_path.parent / "evil.jpg").exists()
