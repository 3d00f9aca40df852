"""COCO instances JSON -> semantic label maps.

Instances (polygons, uncompressed or compressed RLE) are rasterised with pycocotools and drawn
largest first, so smaller objects end up on top. A pixel no instance covers is background (0)
in projects with a background class and unknown (``IGNORE_INDEX``) otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from services.errors import UserError
from storage.models import IGNORE_INDEX


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


def _require(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise UserError(f"{path}: not a COCO instances file ({what})")


def load_coco(path: Path) -> CocoDataset:
    """Read and check a COCO instances JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read JSON ({exc})") from exc
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
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a COCO instances file (bad or missing field {exc})") from exc
    names = list(categories.values())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    _require(not duplicates, path, f"category names {duplicates} are used twice")
    images: dict[str, CocoImage] = {}
    for image in by_id.values():
        _require(image.file_name not in images, path, f"two images named {image.file_name}")
        images[image.file_name] = image
    return CocoDataset(categories=categories, images=images)


def _instance_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A ``(H, W) bool`` mask of one instance's segmentation."""
    if isinstance(segmentation, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError("segmentation is neither polygons nor RLE")
    if isinstance(rle, dict) and list(rle["size"]) != [height, width]:
        raise ValueError(f"RLE size {rle['size']} differs from the image's {height}x{width}")
    return mask_utils.decode(rle).astype(bool)


def rasterize(image: CocoImage, class_of_category: dict[int, int], has_background: bool) -> np.ndarray:
    """The semantic label map of one COCO image: ``(H, W) uint8`` class indices."""
    label_map = np.full((image.height, image.width), 0 if has_background else IGNORE_INDEX, np.uint8)
    instances = []
    for ann in image.annotations:
        try:
            instance = _instance_mask(ann["segmentation"], image.height, image.width)
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(
                f"COCO annotation {ann.get('id')} of {image.file_name}: bad segmentation ({exc})"
            ) from exc
        instances.append((int(instance.sum()), instance, class_of_category[int(ann["category_id"])]))
    for _, instance, class_index in sorted(instances, key=lambda t: -t[0]):  # largest first (stable)
        label_map[instance] = class_index
    return label_map
