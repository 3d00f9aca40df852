"""Scoring a project's current pseudo-labels against gold masks (``launch.py evaluate``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from services.context import Studio
from services.errors import UserError
from services.lookups import resolve_project
from slrnet.metrics import SegmentationMeter
from storage import labels as label_repo
from storage.images import all_images
from storage.label_maps import decode_label_png
from storage.projects import list_classes


@dataclass(frozen=True)
class ScoredImage:
    """A published pseudo-label beside its gold mask, at the gold's size."""

    labels: np.ndarray  # (H, W) uint8, 255 = uncertain
    confidence: np.ndarray  # (H, W) float32 in 0..1
    gold: np.ndarray  # (H, W) uint8, 255 = ignored


def class_names_and_gold(studio: Studio, project: str,
                         gt_masks: str | Path) -> tuple[list[str], Iterator[ScoredImage]]:
    """The project's class names and, lazily, each image with a current pseudo-label and a gold PNG
    in ``gt_masks`` of the same file stem (UserError when there is no published model)."""
    gt_dir = Path(gt_masks)
    if not gt_dir.is_dir():
        raise UserError(f"gold mask folder {gt_dir} does not exist")
    with studio.Session.begin() as session:
        proj = resolve_project(session, project)
        if label_repo.current_run_id(session, proj.id) is None:
            raise UserError(f"project {proj.name!r} has no published model; run train and predict first")
        names = [c.name for c in list_classes(session, proj.id)]
        project_id = proj.id
    return names, _scored(studio, project_id, gt_dir)


def _scored(studio: Studio, project_id: int, gt_dir: Path) -> Iterator[ScoredImage]:
    gold = {p.stem: p for p in gt_dir.iterdir() if p.suffix.lower() == ".png"}
    with studio.Session.begin() as session:
        for image in all_images(session, project_id):
            path = gold.get(Path(image.name).stem)
            row = label_repo.current_pseudo_label(session, project_id, image.id)
            if path is None or row is None:
                continue
            with PILImage.open(path) as im:
                target = np.array(im, dtype=np.uint8)
            pred, confidence = decode_label_png(row.png), decode_label_png(row.confidence_png)
            if pred.shape != target.shape:
                size = target.shape[::-1]
                pred = np.array(PILImage.fromarray(pred).resize(size, PILImage.NEAREST))
                confidence = np.array(PILImage.fromarray(confidence).resize(size, PILImage.NEAREST))
            yield ScoredImage(pred, confidence.astype(np.float32) / 255.0, target)


def evaluate(studio: Studio, project: str = "default", *, gt_masks: str | Path) -> dict[str, Any]:
    """Score the project's current pseudo-labels against gold PNGs in ``gt_masks`` matched by file
    stem (255 in the gold = ignored; an uncertain 255 in a pseudo-label counts as wrong)."""
    names, scored = class_names_and_gold(studio, project, gt_masks)
    meter = SegmentationMeter(len(names))
    for item in scored:
        meter.update(item.labels, item.gold)
    if meter.images == 0:
        raise UserError(f"no gold mask in {gt_masks} matches an image of project {project!r} by name")
    scores = meter.scores()
    per_class = dict(zip(names, scores["per_class_iou"], strict=True))
    return {"miou": scores["miou"], "per_class_iou": per_class, "pixel_accuracy": scores["pixel_accuracy"],
            "images": scores["images"]}
