"""COCO import works in memory independent of the annotation count: each annotation is rasterised
in its bounding box (a 1.77 MB file of 20,000 tiny polygons on one 640x480 image got the server
OOM-killed: every instance was a full-size mask). Category names are checked like class names, in
linear time."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from services.errors import UserError
from services.formats.coco_masks import CocoImage, clip_polygon, load_coco, rasterize
from services.labeling import full_class_list


def _reference(image: CocoImage, class_of: dict[int, int]) -> np.ndarray:
    """The old full-image rasterisation (of the clipped polygons), kept here as the definition of
    the right answer."""
    out = np.zeros((image.height, image.width), np.uint8)
    masks = []
    for ann in image.annotations:
        polygons = [clip_polygon(p, image.height, image.width) for p in ann["segmentation"]]
        polygons = [p for p in polygons if len(p) >= 6]
        if not polygons:
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, image.height, image.width))
        m = mask_utils.decode(rle).astype(bool)
        masks.append((int(m.sum()), m, class_of[ann["category_id"]]))
    for _, m, c in sorted(masks, key=lambda t: -t[0]):
        out[m] = c
    return out


def test_bounding_box_rasterisation_matches_the_full_image_one() -> None:
    rng = np.random.default_rng(0)
    h, w = 37, 53
    annotations = []
    for k in range(60):
        cx, cy, r = rng.uniform(-5, w + 5), rng.uniform(-5, h + 5), rng.uniform(0.3, 15)
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))
        polygon = [float(v) for a in angles for v in (cx + r * np.cos(a), cy + r * np.sin(a))]
        parts = [polygon] if k % 5 else [polygon, [v + 3.5 for v in polygon]]  # some in two parts
        annotations.append({"id": k, "category_id": 1 + k % 3, "segmentation": parts})
    image = CocoImage("a.jpg", w, h, annotations)
    class_of = {1: 1, 2: 2, 3: 3}
    got = rasterize(image, class_of, True)
    assert (got > 0).sum() > 200
    np.testing.assert_array_equal(got, _reference(image, class_of))


def test_many_tiny_polygons_rasterise_in_bounded_memory() -> None:
    w, h, n = 640, 480, 2000  # the old code held n full-size masks: 614 MB here
    rng = np.random.default_rng(1)
    annotations = []
    for k in range(n):
        x, y = float(rng.uniform(0, w - 3)), float(rng.uniform(0, h - 3))
        annotations.append({"id": k, "category_id": 1,
                            "segmentation": [[x, y, x + 2.5, y, x + 2.5, y + 2.5, x, y + 2.5]]})
    image = CocoImage("a.jpg", w, h, annotations)
    tracemalloc.start()
    try:
        label_map = rasterize(image, {1: 1}, True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (label_map == 1).sum() > n
    assert peak < 20 * 2**20, f"rasterising took {peak / 2**20:.0f} MB"


def test_category_names_are_checked_like_class_names(tmp_path: Path) -> None:
    coco = {"images": [], "annotations": [],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "do\x07g"}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    names = list(load_coco(path).categories.values())
    with pytest.raises(UserError, match="control characters"):
        full_class_list(names, True)


def test_duplicate_categories_are_found_in_linear_time(tmp_path: Path) -> None:
    n = 100_000  # the old quadratic check took 576 s here
    categories = [{"id": k, "name": f"c{k}"} for k in range(n)] + [{"id": n, "name": "c7"}]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    started = time.monotonic()
    with pytest.raises(UserError, match=r"category names \['c7'\] are used twice"):
        load_coco(path)
    assert time.monotonic() - started < 60  # generous: a 2-core machine shared by many
