"""COCO output: label maps to RLE annotations, and streaming writers for the two COCO JSON kinds.

Pure: numpy + pycocotools + json, no database. Two files come out of a COCO export:

* a *dataset* file (``images``, ``categories``, ``annotations``) as COCO instances JSON with
  compressed-RLE segmentations, one annotation per class present in an image;
* a *results* file: a JSON list of ``{image_id, category_id, segmentation, score}`` as
  ``pycocotools.coco.COCO.loadRes`` reads it (no ``bbox``, so loadRes treats it as segmentation).

Both writers take an open text file and write one entry at a time, so memory does not grow with
the number of images (the dataset writer spools its ``images`` entries to a second file).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from pycocotools import mask as mask_utils

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Region:
    """All pixels of one class in one label map, as COCO wants them."""

    category_id: int
    segmentation: dict[str, Any]  # compressed RLE: {"size": [h, w], "counts": str}
    area: int
    bbox: list[float]  # [x, y, width, height]
    score: float | None = None  # mean model confidence over the region, 0..1


def encode_rle(binary: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a 2-D boolean/0-1 array, with ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(binary, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def label_map_regions(
    label_map: np.ndarray,
    category_ids: Iterable[int],
    confidence: np.ndarray | None = None,
) -> list[Region]:
    """One :class:`Region` per category present in ``label_map``, in increasing category order.

    ``category_ids`` are the label values to export (a project's classes except background);
    every other value (background, ``IGNORE_INDEX``, values of no class) yields nothing. With a
    ``confidence`` map (uint8, confidence * 255, same shape) each region gets the mean confidence
    of its pixels as ``score``.
    """
    if label_map.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label_map.shape}")
    if confidence is not None and confidence.shape != label_map.shape:
        raise ValueError(f"confidence shape {confidence.shape} != label map shape {label_map.shape}")
    wanted = set(category_ids)
    present = [int(v) for v in np.unique(label_map)]
    regions = []
    for value in present:
        if value not in wanted:
            continue
        binary = label_map == value
        rle = encode_rle(binary)
        score = None
        if confidence is not None:
            score = round(float(confidence[binary].mean()) / 255.0, 4)
        regions.append(
            Region(
                category_id=value,
                segmentation=rle,
                area=int(binary.sum()),
                bbox=[float(v) for v in mask_utils.toBbox(rle)],
                score=score,
            )
        )
    return regions


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class CocoDatasetWriter:
    """Writes a COCO instances JSON one image at a time; call :meth:`finish` once at the end.

    Annotations go straight to ``fh``; image entries go to ``spool`` (an empty read/write text
    file, e.g. ``tempfile.TemporaryFile("w+")``, owned by the caller) and are copied in by
    :meth:`finish`, so the file is ``{"info", "licenses", "categories", "annotations", "images"}``.
    Annotation ids run 1, 2, ...
    """

    def __init__(
        self, fh: TextIO, spool: TextIO, categories: list[dict[str, Any]], info: dict[str, Any]
    ) -> None:
        self._fh = fh
        self._images = spool
        self._n_images = 0
        self._n_annotations = 0
        fh.write('{"info":' + _dump(info) + ',"licenses":[],"categories":' + _dump(categories))
        fh.write(',"annotations":[')

    @property
    def n_annotations(self) -> int:
        return self._n_annotations

    def add_image(
        self,
        image_id: int,
        file_name: str,
        width: int,
        height: int,
        regions: Iterable[Region],
        model_version: int | None = None,
    ) -> None:
        """Add one image and its regions; ``model_version`` marks model-made labels."""
        entry = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        self._images.write(("\n" if self._n_images == 0 else ",\n") + _dump(entry))
        self._n_images += 1
        for region in regions:
            ann: dict[str, Any] = {
                "id": self._n_annotations + 1,
                "image_id": image_id,
                "category_id": region.category_id,
                "segmentation": region.segmentation,
                "area": region.area,
                "bbox": region.bbox,
                "iscrowd": 0,
            }
            if model_version is not None:
                ann["score"] = region.score
                ann["model_version"] = model_version
            self._fh.write(("\n" if self._n_annotations == 0 else ",\n") + _dump(ann))
            self._n_annotations += 1

    def finish(self) -> None:
        """Close the arrays and the object; the writer must not be used afterwards."""
        self._fh.write('\n],"images":[')
        self._images.seek(0)
        shutil.copyfileobj(self._images, self._fh)
        self._fh.write("\n]}\n")


class CocoResultsWriter:
    """Writes a COCO results JSON list (``COCO.loadRes`` input) one region at a time.

    Human-made regions (no score) get score 1.0.
    """

    def __init__(self, fh: TextIO) -> None:
        self._fh = fh
        self._n = 0
        fh.write("[")

    @property
    def n_results(self) -> int:
        return self._n

    def add_image(self, image_id: int, regions: Iterable[Region]) -> None:
        for region in regions:
            entry = {
                "image_id": image_id,
                "category_id": region.category_id,
                "segmentation": region.segmentation,
                "score": 1.0 if region.score is None else region.score,
            }
            self._fh.write(("\n" if self._n == 0 else ",\n") + _dump(entry))
            self._n += 1

    def finish(self) -> None:
        self._fh.write("\n]\n")
