"""Scoring a project's current pseudo-labels against gold masks (``launch.py evaluate``)."""

from __future__ import annotations

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


def evaluate(studio: Studio, project: str = "default", *, gt_masks: str | Path) -> dict[str, Any]:
    """Score the project's current pseudo-labels against gold PNGs in ``gt_masks`` matched by file
    stem (255 in the gold = ignored; an uncertain 255 in a pseudo-label counts as wrong)."""
    gt_dir = Path(gt_masks)
    if not gt_dir.is_dir():
        raise UserError(f"gold mask folder {gt_dir} does not exist")
    gold = {p.stem: p for p in gt_dir.iterdir() if p.suffix.lower() == ".png"}
    with studio.Session.begin() as session:
        proj = resolve_project(session, project)
        if label_repo.current_run_id(session, proj.id) is None:
            raise UserError(f"project {proj.name!r} has no published model; run train and predict first")
        names = [c.name for c in list_classes(session, proj.id)]
        meter = SegmentationMeter(len(names))
        for image in all_images(session, proj.id):
            path = gold.get(Path(image.name).stem)
            row = label_repo.current_pseudo_label(session, proj.id, image.id)
            if path is None or row is None:
                continue
            with PILImage.open(path) as im:
                target = np.array(im, dtype=np.uint8)
            pred = decode_label_png(row.png)
            if pred.shape != target.shape:
                pred = np.array(PILImage.fromarray(pred).resize(target.shape[::-1], PILImage.NEAREST))
            meter.update(pred, target)
    if meter.images == 0:
        raise UserError(f"no gold mask in {gt_dir} matches an image of project {project!r} by name")
    scores = meter.scores()
    per_class = dict(zip(names, scores["per_class_iou"], strict=True))
    return {"miou": scores["miou"], "per_class_iou": per_class, "pixel_accuracy": scores["pixel_accuracy"],
            "images": scores["images"]}
