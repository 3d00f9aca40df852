"""Review services for the UI: the current model's pseudo-labels, accepting them, and which
image to label next (the model's least confident first). Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from services.context import Studio
from services.errors import UserError
from services.labeling import ImageInfo, image_info
from services.lookups import resolve_image, resolve_project
from storage import images as image_repo
from storage import labels as label_repo
from storage import runs as run_repo
from storage.images import ImageFilter
from storage.models import IGNORE_INDEX

logger = logging.getLogger(__name__)

SUGGEST_BATCH = 100


@dataclass(frozen=True)
class PseudoLabelView:
    run_id: int
    version: int | None
    labels: np.ndarray  # (H, W) uint8, IGNORE_INDEX = uncertain
    confidence: np.ndarray  # (H, W) float32, 0..1
    score: float  # mean confidence


@dataclass(frozen=True)
class ModelInfo:
    """The project's current model version (latest published run)."""

    run_id: int
    version: int | None
    mode: str
    backbone: str
    metrics: dict


def current_model(studio: Studio, project: str) -> ModelInfo | None:
    """The project's current model, or None before the first published training run."""
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        run = run_repo.latest_published_run(session, row.id)
        if run is None:
            return None
        return ModelInfo(run.id, run.version, run.mode, run.backbone, dict(run.metrics or {}))


def pseudo_label(studio: Studio, image_id: int) -> PseudoLabelView | None:
    """The image's pseudo-label from its project's current model, or None."""
    with studio.Session.begin() as session:
        image = resolve_image(session, image_id)
        row = label_repo.current_pseudo_label(session, image.project_id, image.id)
        if row is None:
            return None
        run = run_repo.get_run(session, row.run_id)
        labels, confidence = label_repo.pseudo_label_arrays(row)
        return PseudoLabelView(
            run_id=row.run_id,
            version=run.version if run is not None else None,
            labels=labels,
            confidence=confidence,
            score=float(row.score),
        )


def accept_pseudo_label(studio: Studio, image_id: int) -> bool:
    """Make the current pseudo-label the image's mask as it is (source "accepted"); its uncertain
    pixels stay unknown. Returns whether the mask is partial."""
    with studio.Session.begin() as session:
        image = resolve_image(session, image_id)
        row = label_repo.current_pseudo_label(session, image.project_id, image.id)
        if row is None:
            raise UserError(f"image {image.name!r} has no pseudo-label yet; train a model first")
        labels, _ = label_repo.pseudo_label_arrays(row)
        if (labels == IGNORE_INDEX).all():
            raise UserError(f"the pseudo-label of {image.name!r} is uncertain everywhere; paint it instead")
        mask = label_repo.put_mask(session, image.id, labels, source="accepted")
        logger.info("accepted the pseudo-label of image %d (run %d) as its mask", image.id, row.run_id)
        return mask.is_partial


def suggest_next_to_label(studio: Studio, project: str, *, skip: Collection[int] = ()) -> ImageInfo | None:
    """The image without a mask whose current pseudo-label has the lowest score (the model is
    least sure of it), leaving out ``skip``; None when there is no such image."""
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        offset = 0
        while True:
            batch = image_repo.list_images(
                session,
                row.id,
                ImageFilter.LOW_CONFIDENCE,
                offset=offset,
                limit=SUGGEST_BATCH,
                low_confidence_below=float("inf"),
            )
            for image in batch:
                if image.id not in skip and label_repo.get_mask(session, image.id) is None:
                    return image_info(image)
            if len(batch) < SUGGEST_BATCH:
                return None
            offset += SUGGEST_BATCH
