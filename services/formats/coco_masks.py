"""COCO instances JSON -> semantic label maps.

Instances (polygons, uncompressed or compressed RLE) are rasterised with pycocotools, polygons in
their bounding box (memory does not grow with the annotation count), and drawn largest first, so
smaller objects end up on top. pycocotools trusts its input (NaN or huge
coordinates make it allocate without bound or crash, RLE counts past the image overrun its buffer),
so every segmentation is checked first: coordinates must be finite and polygons are clipped to the
image plus a margin of :data:`CLIP_MARGIN` pixels; RLE counts must be whole, non-negative and cover
the image exactly. A pixel no instance covers is background (0)
in projects with a background class and unknown (``IGNORE_INDEX``) otherwise.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from services.errors import UserError
from slrnet.config import IGNORE_INDEX


@dataclass(frozen=True)
class CocoImage:
    file_name: str  # base name, as images are imported
    width: int
    height: int
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CocoDataset:
    categories: dict[int, str]  # category id -> name, in id order
    images: dict[str, CocoImage]  # by base file name


CLIP_MARGIN = 2.0  # pixels around the image kept when clipping polygons (rasterising needs none)


def _require(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise UserError(f"{path}: not a COCO instances file ({what})")


def load_coco(path: Path) -> CocoDataset:
    """Read and check a COCO instances JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        what = exc.strerror if isinstance(exc, OSError) else "not UTF-8 JSON"
        raise UserError(f"{path}: cannot read JSON ({what})") from exc
    _require(isinstance(data, dict), path, "top level is not an object")
    for key in ("images", "annotations", "categories"):
        _require(isinstance(data.get(key), list), path, f"no '{key}' list")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in sorted(data["categories"], key=lambda c: c["id"])}
        by_id: dict[int, CocoImage] = {}
        for im in data["images"]:
            file_name = PurePosixPath(str(im["file_name"]).replace("\\", "/")).name
            by_id[int(im["id"])] = CocoImage(file_name, int(im["width"]), int(im["height"]))
        for ann in data["annotations"]:
            image = by_id.get(int(ann["image_id"]))
            _require(
                image is not None, path, f"annotation {ann.get('id')} names unknown image {ann['image_id']}"
            )
            _require(
                int(ann["category_id"]) in categories,
                path,
                f"annotation {ann.get('id')} has unknown category {ann['category_id']}",
            )
            _require("segmentation" in ann, path, f"annotation {ann.get('id')} has no segmentation")
            image.annotations.append(ann)
    except KeyError as exc:
        raise UserError(f"{path}: not a COCO instances file (missing field {exc})") from exc
    except (TypeError, ValueError) as exc:  # the messages would quote the file's values
        raise UserError(f"{path}: not a COCO instances file (a field has the wrong type)") from exc
    duplicates = sorted(n for n, count in Counter(categories.values()).items() if count > 1)
    _require(not duplicates, path, f"category names {duplicates} are used twice")
    images: dict[str, CocoImage] = {}
    for image in by_id.values():
        _require(image.file_name not in images, path, f"two images named {image.file_name}")
        images[image.file_name] = image
    return CocoDataset(categories=categories, images=images)


def _clip(points: list[tuple[float, float]], inside: Any, cross: Any) -> list[tuple[float, float]]:
    """One Sutherland-Hodgman step: the part of a closed polygon on the inside of one edge."""
    out: list[tuple[float, float]] = []
    for i, current in enumerate(points):
        previous = points[i - 1]
        if inside(current):
            if not inside(previous):
                out.append(cross(previous, current))
            out.append(current)
        elif inside(previous):
            out.append(cross(previous, current))
    return out


def clip_polygon(flat: list[Any], height: int, width: int) -> list[float]:
    """A COCO polygon ``[x0, y0, x1, y1, ...]`` checked and clipped to the image plus
    :data:`CLIP_MARGIN` (exactly: the pixels inside the image are the same). ``[]`` when nothing
    of it is left. Raises ValueError for non-numbers, non-finite values or an odd count."""
    if len(flat) % 2:
        raise ValueError("a polygon needs an even number of coordinates")
    values = []
    for v in flat:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"polygon coordinate {v!r} is not a number")
        if not math.isfinite(v):
            raise ValueError(f"polygon coordinate {v!r} is not finite")
        values.append(float(v))
    points = list(zip(values[0::2], values[1::2], strict=True))
    lo_x, lo_y = -CLIP_MARGIN, -CLIP_MARGIN
    hi_x, hi_y = width + CLIP_MARGIN, height + CLIP_MARGIN
    if all(lo_x <= x <= hi_x and lo_y <= y <= hi_y for x, y in points):
        return values

    def at_x(a: tuple[float, float], b: tuple[float, float], x: float) -> tuple[float, float]:
        return x, a[1] + (b[1] - a[1]) * (x - a[0]) / (b[0] - a[0])

    def at_y(a: tuple[float, float], b: tuple[float, float], y: float) -> tuple[float, float]:
        return a[0] + (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]), y

    for inside, cross in (
        (lambda p: p[0] >= lo_x, lambda a, b: at_x(a, b, lo_x)),
        (lambda p: p[0] <= hi_x, lambda a, b: at_x(a, b, hi_x)),
        (lambda p: p[1] >= lo_y, lambda a, b: at_y(a, b, lo_y)),
        (lambda p: p[1] <= hi_y, lambda a, b: at_y(a, b, hi_y)),
    ):
        if not points:
            break
        points = _clip(points, inside, cross)
    if len(points) < 3:
        return []
    return [min(max(c, lo), hi) for x, y in points for c, lo, hi in ((x, lo_x, hi_x), (y, lo_y, hi_y))]


def _compressed_counts(counts: bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString, checked)."""
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts) or k > 6:
                raise ValueError("compressed RLE counts are malformed")
            c = counts[p] - 48
            if not 0 <= c < 64:
                raise ValueError("compressed RLE counts are malformed")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def check_rle_counts(counts: list[Any], height: int, width: int) -> None:
    """RLE run lengths must be whole, non-negative and sum to the image's pixel count."""
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
        raise ValueError("RLE counts must be non-negative whole numbers")
    if sum(counts) != height * width:
        raise ValueError(f"RLE counts cover {sum(counts)} pixels, not the image's {height * width}")


@dataclass(frozen=True)
class _Instance:
    """One annotation as an RLE of its bounding box (compact however large the image)."""

    top: int
    left: int
    rle: dict[str, Any]  # pycocotools RLE of the (h, w) box
    area: int


RASTER_SCALE = 5  # pycocotools rasterises polygons on a grid 5x finer, at int(5 * x + 0.5)


def _moved(value: float, by: int) -> float:
    """``value - by`` as pycocotools will see it: the coordinate whose grid point is exactly
    ``by`` pixels less than ``value``'s (C truncates toward zero, as ``int`` does), so that a
    moved polygon rasterises to exactly the moved pixels."""
    n = int(RASTER_SCALE * value + 0.5) - RASTER_SCALE * by
    return n / RASTER_SCALE if n >= 0 else (n - 1) / RASTER_SCALE


def _polygon_instance(polygons: list[list[float]], height: int, width: int) -> _Instance | None:
    """Clipped polygons rasterised in their bounding box: the polygons are moved by whole pixels
    on pycocotools' own grid, so the box holds exactly the pixels a full-image rasterisation
    would."""
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    left, top = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
    right, bottom = min(width, math.ceil(max(xs)) + 1), min(height, math.ceil(max(ys)) + 1)
    if right <= left or bottom <= top:
        return None
    moved = [[_moved(v, left if k % 2 == 0 else top) for k, v in enumerate(p)] for p in polygons]
    rle = mask_utils.merge(mask_utils.frPyObjects(moved, bottom - top, right - left))
    return _Instance(top, left, rle, int(mask_utils.area(rle)))


def _instance(segmentation: Any, height: int, width: int) -> _Instance | None:
    """One instance's segmentation, checked before pycocotools sees it (None: no pixel)."""
    if isinstance(segmentation, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        if not all(isinstance(p, list) for p in segmentation):
            raise ValueError("polygons must be lists of coordinates")
        clipped = [clip_polygon(p, height, width) for p in segmentation]
        polygons = [p for p in clipped if len(p) >= 6]
        return _polygon_instance(polygons, height, width) if polygons else None
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list | str | bytes):
        if list(segmentation.get("size") or []) != [height, width]:
            raise ValueError(f"RLE size {segmentation.get('size')} differs from the image's {height}x{width}")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            check_rle_counts(counts, height, width)
            rle = mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE
        else:
            counts = counts.encode() if isinstance(counts, str) else counts
            check_rle_counts(_compressed_counts(counts), height, width)
            rle = {"size": [height, width], "counts": counts}
        return _Instance(0, 0, rle, int(mask_utils.area(rle)))  # an RLE is of the whole image
    raise ValueError("segmentation is neither polygons nor RLE")


def rasterize(image: CocoImage, class_of_category: dict[int, int], has_background: bool) -> np.ndarray:
    """The semantic label map of one COCO image: ``(H, W) uint8`` class indices.

    Memory is the label map plus one instance's box at a time, whatever the number of annotations:
    every instance is first kept as an RLE of its bounding box, then decoded and drawn, largest
    first (by pixel count; ties in file order)."""
    label_map = np.full((image.height, image.width), 0 if has_background else IGNORE_INDEX, np.uint8)
    instances = []
    for ann in image.annotations:
        try:
            instance = _instance(ann["segmentation"], image.height, image.width)
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(
                f"COCO annotation {ann.get('id')} of {image.file_name}: bad segmentation ({exc})"
            ) from exc
        if instance is not None and instance.area:
            instances.append((instance, class_of_category[int(ann["category_id"])]))
    for instance, class_index in sorted(instances, key=lambda t: -t[0].area):  # stable
        box = mask_utils.decode(instance.rle).astype(bool)
        h, w = box.shape
        label_map[instance.top:instance.top + h, instance.left:instance.left + w][box] = class_index
    return label_map
