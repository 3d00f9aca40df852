"""Hostile COCO segmentations are checked before pycocotools sees them (it allocates without bound
on NaN coordinates, crashes on huge ones, and overruns its buffer on RLE counts past the image)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from services.errors import UserError
from services.formats.coco_masks import CocoImage, check_rle_counts, clip_polygon, rasterize
from tests.image_bytes import image_bytes, write

REPO = Path(__file__).resolve().parents[1]


def test_non_finite_and_non_numeric_coordinates_are_refused() -> None:
    for bad in ([0, 0, float("nan"), 0, 5, 5], [0, 0, float("inf"), 0, 5, 5], [0, 0, "7", 0, 5, 5],
                [0, 0, True, 0, 5, 5], [0, 0, 5]):
        with pytest.raises(ValueError):
            clip_polygon(bad, 10, 10)


def test_polygons_are_clipped_to_the_image_plus_a_margin() -> None:
    inside = [1.0, 1.0, 8.0, 1.0, 8.0, 8.0]
    assert clip_polygon(inside, 10, 10) == inside  # untouched
    huge = clip_polygon([0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9], 10, 20)
    assert max(huge[0::2]) <= 22 and max(huge[1::2]) <= 12 and min(huge) >= -2
    assert clip_polygon([-1e9, -1e9, -1e9 + 5, -1e9, -1e9, -1e9 + 5], 10, 10) == []  # all outside


def test_clipping_keeps_the_pixels_inside_the_image() -> None:
    h, w = 16, 24
    big = [-30.0, -10.0, 60.0, 4.0, 10.0, 50.0]  # a triangle reaching far outside
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([big], h, w)))
    clipped = clip_polygon(big, h, w)
    got = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([clipped], h, w)))
    assert expected.sum() > 50
    assert np.array_equal(got, expected)


def test_rle_counts_must_cover_the_image_exactly() -> None:
    check_rle_counts([3, 5, 4], 3, 4)
    for bad in ([3, 5, 5], [3, -1, 10], [3.5, 8.5], [10**12]):
        with pytest.raises(ValueError):
            check_rle_counts(bad, 3, 4)


def test_compressed_rle_past_the_image_is_refused() -> None:
    long = mask_utils.encode(np.asfortranarray(np.ones((64, 64), np.uint8)))["counts"].decode()
    image = CocoImage("x.jpg", 8, 8, [{"id": 1, "category_id": 1,
                                        "segmentation": {"size": [8, 8], "counts": long}}])
    with pytest.raises(UserError, match="RLE counts cover 4096 pixels"):
        rasterize(image, {1: 1}, True)


def test_rasterise_a_huge_polygon(tmp_path: Path) -> None:
    image = CocoImage("x.jpg", 20, 10, [{"id": 1, "category_id": 1,
                                          "segmentation": [[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]]}])
    assert (rasterize(image, {1: 1}, True) == 1).all()


def _cli_import(tmp_path: Path, polygon: list, rss_file: Path) -> subprocess.CompletedProcess:
    write(tmp_path / "imgs" / "a.jpg", image_bytes(32, 24, seed=1))
    write(tmp_path / "classes.txt", b"cat\n")
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 24}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": [polygon]}],
            "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "i.json").write_text(json.dumps(coco))  # json writes NaN / Infinity literally
    code = (
        "import sys, launch\n"
        "code = launch.main(sys.argv[2:])\n"
        "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
        "open(sys.argv[1], 'w').write(peak[0] if peak else '0')\n"
        "sys.exit(code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(rss_file), "import", str(tmp_path / "imgs"), "--data",
         str(tmp_path / "data"), "--project", "p", "--classes", str(tmp_path / "classes.txt"),
         "--coco", str(tmp_path / "i.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_cli_refuses_nan_coordinates_with_one_line(tmp_path: Path) -> None:
    done = _cli_import(tmp_path, [0, 0, float("nan"), 0, 10, 10], tmp_path / "rss")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert errors == [
        "error: COCO annotation 7 of a.jpg: bad segmentation (polygon coordinate nan is not finite)"
    ]
    assert int((tmp_path / "rss").read_text()) < 1_000_000  # KiB: far below the 18 GB of the old code


def test_cli_imports_a_polygon_with_huge_coordinates(tmp_path: Path) -> None:
    done = _cli_import(tmp_path, [0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9], tmp_path / "rss")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 masks added" in done.stdout
