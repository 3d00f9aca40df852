"""The pure COCO / VOC writers of the export: RLE regions, streaming JSON, label PNGs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from services.formats.coco_format import CocoDatasetWriter, CocoResultsWriter, encode_rle, label_map_regions
from services.formats.voc_format import build_palette, label_file_name, write_classes_file, write_label_png

# pycocotools' decode trips numpy 2's copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _label_map() -> np.ndarray:
    lm = np.zeros((6, 8), np.uint8)  # 0 = background
    lm[1:3, 2:5] = 3
    lm[4, 0:2] = 7
    lm[5, 7] = 255  # ignore
    lm[0, 7] = 9  # a value of no exported class
    return lm


def test_encode_rle_round_trips_and_is_json_ready() -> None:
    rng = np.random.default_rng(0)
    binary = rng.random((13, 17)) > 0.5
    rle = encode_rle(binary)
    assert isinstance(rle["counts"], str)
    assert rle["size"] == [13, 17]
    json.dumps(rle)
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), binary)


def test_regions_cover_only_exported_classes() -> None:
    lm = _label_map()
    regions = label_map_regions(lm, category_ids=[3, 7, 8])
    assert [r.category_id for r in regions] == [3, 7]
    r3, r7 = regions
    assert r3.area == 6 and r3.bbox == [2.0, 1.0, 3.0, 2.0]
    assert r7.area == 2 and r7.bbox == [0.0, 4.0, 2.0, 1.0]
    assert r3.score is None
    np.testing.assert_array_equal(mask_utils.decode(r3.segmentation).astype(bool), lm == 3)


def test_region_score_is_mean_confidence_of_its_pixels() -> None:
    lm = _label_map()
    conf = np.full(lm.shape, 255, np.uint8)
    conf[1, 2:5] = 51  # half of class 3's pixels at 0.2, half at 1.0
    (r3,) = label_map_regions(lm, category_ids=[3], confidence=conf)
    assert r3.score == pytest.approx(0.6, abs=1e-4)


def test_regions_reject_mismatched_confidence() -> None:
    with pytest.raises(ValueError):
        label_map_regions(_label_map(), [3], confidence=np.zeros((2, 2), np.uint8))


def _write_dataset(path: Path, maps: dict[int, np.ndarray], model_version: int | None = None) -> int:
    categories = [{"id": k, "name": f"c{k}"} for k in (3, 7)]
    with path.open("w") as fh, tempfile.TemporaryFile("w+") as spool:
        writer = CocoDatasetWriter(fh, spool, categories, info={"description": "test"})
        for image_id, lm in maps.items():
            conf = np.full(lm.shape, 204, np.uint8) if model_version else None
            regions = label_map_regions(lm, [3, 7], confidence=conf)
            writer.add_image(image_id, f"im{image_id}.jpg", lm.shape[1], lm.shape[0], regions, model_version)
        writer.finish()
    return writer.n_annotations


def test_dataset_writer_output_loads_in_pycocotools(tmp_path: Path) -> None:
    empty = np.zeros((4, 5), np.uint8)
    maps = {10: _label_map(), 11: empty, 12: np.full((3, 3), 7, np.uint8)}
    out = tmp_path / "ds.json"
    n = _write_dataset(out, maps)
    coco = COCO(str(out))
    assert n == 3
    assert sorted(coco.getImgIds()) == [10, 11, 12]
    assert coco.imgs[10] == {"id": 10, "file_name": "im10.jpg", "width": 8, "height": 6}
    assert sorted(coco.getCatIds()) == [3, 7]
    assert coco.getAnnIds(imgIds=[11]) == []
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert ids == [1, 2, 3]
    for image_id, lm in maps.items():
        rebuilt = np.zeros_like(lm)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            assert ann["iscrowd"] == 0 and "score" not in ann
            rebuilt[coco.annToMask(ann).astype(bool)] = ann["category_id"]
        expected = np.where(np.isin(lm, [3, 7]), lm, 0)
        np.testing.assert_array_equal(rebuilt, expected)


def test_dataset_writer_marks_model_labels(tmp_path: Path) -> None:
    out = tmp_path / "ds.json"
    _write_dataset(out, {1: _label_map()}, model_version=4)
    anns = json.loads(out.read_text())["annotations"]
    assert {a["model_version"] for a in anns} == {4}
    assert {a["score"] for a in anns} == {0.8}


def test_results_writer_output_loads_with_loadres(tmp_path: Path) -> None:
    gt_path = tmp_path / "gt.json"
    _write_dataset(gt_path, {1: _label_map()})
    res_path = tmp_path / "res.json"
    conf = np.full((6, 8), 128, np.uint8)
    with res_path.open("w") as fh:
        writer = CocoResultsWriter(fh)
        writer.add_image(1, label_map_regions(_label_map(), [3, 7], confidence=conf))
        writer.add_image(1, label_map_regions(_label_map(), [3]))
        writer.finish()
    results = json.loads(res_path.read_text())
    assert writer.n_results == 3
    assert set(results[0]) == {"image_id", "category_id", "segmentation", "score"}
    assert [r["score"] for r in results] == [0.502, 0.502, 1.0]
    res = COCO(str(gt_path)).loadRes(str(res_path))
    assert res.anns[1]["area"] == 6  # area computed from the RLE, not a bbox


@pytest.mark.parametrize("with_palette", [False, True])
def test_label_png_reads_back_as_indices(tmp_path: Path, with_palette: bool) -> None:
    lm = _label_map()
    palette = build_palette({0: "#000000", 3: "#ff8000", 7: "#0000ff"}) if with_palette else None
    path = tmp_path / "x.png"
    write_label_png(path, lm, palette)
    image = Image.open(path)
    assert image.mode == ("P" if with_palette else "L")
    np.testing.assert_array_equal(np.array(image), lm)
    if with_palette:
        rgb = np.array(image.convert("RGB"))
        assert tuple(rgb[1, 2]) == (255, 128, 0)
        assert tuple(rgb[5, 7]) == (224, 224, 192)


def test_label_png_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_label_png(tmp_path / "x.png", np.zeros((2, 2), np.int64))


def test_classes_file_lines_are_label_values(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    write_classes_file(path, {1: "cat", 0: "background", 2: "dog"})
    assert path.read_text().splitlines() == ["background", "cat", "dog"]
    with pytest.raises(ValueError):
        write_classes_file(path, {0: "background", 2: "dog"})


def test_label_file_name_is_stem_png() -> None:
    assert label_file_name("000000000009.jpg") == "000000000009.png"
    assert label_file_name("sub/dir/a.b.JPEG") == "a.b.png"
    assert label_file_name("win\\a.jpg") == "a.png"
