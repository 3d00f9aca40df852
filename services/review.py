"""Review services for the UI: the current model's pseudo-labels, accepting them, and which
image to label next (the model's least confident first). Torch-free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from services.browse import step_through
from services.context import Studio
from services.errors import UserError
from services.labeling import ImageInfo, ProjectInfo, image_info, project_info
from services.lookups import image_in_project, resolve_image, resolve_project
from slrnet.config import CONFIDENT_FROM, IGNORE_INDEX
from storage import images as image_repo
from storage import labels as label_repo
from storage import runs as run_repo
from storage.errors import StaleVersion
from storage.images import ImageFilter
from storage.models import Image

logger = logging.getLogger(__name__)


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


def _pseudo_view(session: Session, image: Image) -> PseudoLabelView | None:
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


@dataclass(frozen=True)
class ProjectOverview:
    counts: dict[str, int]  # images per ImageFilter value
    model: ModelInfo | None


def project_overview(studio: Studio, project: str) -> ProjectOverview:
    """The project's image counts per filter and its current model, in one transaction."""
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        run = run_repo.latest_published_run(session, row.id)
        model = None if run is None else ModelInfo(
            run.id, run.version, run.mode, run.backbone, dict(run.metrics or {})
        )
        return ProjectOverview(image_repo.image_counts(session, row.id), model)


def pseudo_label(studio: Studio, image_id: int) -> PseudoLabelView | None:
    """The image's pseudo-label from its project's current model, or None."""
    with studio.Session.begin() as session:
        return _pseudo_view(session, resolve_image(session, image_id))


REVIEW_MOVES = ("stay", "suggest", "next", "previous")


@dataclass(frozen=True)
class ReviewView:
    """What the Review screen shows of one image, read in one transaction."""

    image: ImageInfo
    project: ProjectInfo
    pseudo: PseudoLabelView | None
    mask_source: str | None


def review_view(
    studio: Studio, project: str, image_id: int | None = None, *, move: str = "stay"
) -> ReviewView | None:
    """``image_id`` (``move="stay"``; with none, the suggested image), the next suggestion after
    it (see :func:`suggest_next_to_label`), or the next / previous image with a pseudo-label by
    name. None when there is nothing to show."""
    if move not in REVIEW_MOVES:
        raise UserError(f"move must be one of {REVIEW_MOVES}, got {move!r}")
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        current = image_in_project(session, row.id, image_id)
        chosen = current
        if move == "suggest" or current is None:
            chosen = _suggest(session, row.id, current.id if current is not None else None) or current
        elif move in ("next", "previous"):
            images = image_repo.list_images(session, row.id, ImageFilter.HAS_PSEUDO_LABEL)
            chosen = step_through(images, current, 1 if move == "next" else -1) or current
        if chosen is None:
            return None
        mask = label_repo.get_mask(session, chosen.id)
        return ReviewView(
            image=image_info(chosen),
            project=project_info(session, row),
            pseudo=_pseudo_view(session, chosen),
            mask_source=mask.source if mask is not None else None,
        )


class PaintedMaskKept(UserError):
    """Accepting would replace a mask the user painted; nothing was changed (ask, then pass
    ``overwrite=True``)."""


PAINTED_MASK_KEPT = (
    "{name} has a painted mask; accepting the pseudo-label would replace it. "
    "Confirm to replace the painted mask, or correct it in the editor instead"
)


def accept_pseudo_label(studio: Studio, image_id: int, *, overwrite: bool = False,
                        confident_only: bool = False) -> bool:
    """Make the current pseudo-label the image's mask as it is (source "accepted"); its uncertain
    pixels stay unknown, and with ``confident_only`` every pixel below ``CONFIDENT_FROM`` too (a
    partial mask, which the mask modes train on as such). Returns whether the mask is partial.

    A mask the user painted (source "human") is replaced only with ``overwrite``; without it the
    call raises :class:`PaintedMaskKept` and changes nothing."""
    with studio.Session.begin() as session:
        image = resolve_image(session, image_id)
        row = label_repo.current_pseudo_label(session, image.project_id, image.id)
        if row is None:
            raise UserError(f"image {image.name!r} has no pseudo-label yet; train a model first")
        labels, confidence = label_repo.pseudo_label_arrays(row)
        if confident_only:  # (confidence is stored in 1/255 steps)
            labels = np.where(confidence >= CONFIDENT_FROM - 0.5 / 255, labels, IGNORE_INDEX).astype(np.uint8)
        if (labels == IGNORE_INDEX).all():
            what = "has no confident pixel" if confident_only else "is uncertain everywhere"
            raise UserError(f"the pseudo-label of {image.name!r} {what}; paint it instead")
        current = label_repo.get_mask(session, image.id)
        if current is not None and current.source == "human" and not overwrite:
            raise PaintedMaskKept(PAINTED_MASK_KEPT.format(name=repr(image.name)))
        name = image.name
        try:  # replaces exactly the mask checked above
            mask = label_repo.put_mask(session, image.id, labels, source="accepted",
                                       expected=label_repo.mask_version(current))
        except StaleVersion as exc:
            raise UserError(f"the mask of {name!r} changed meanwhile; look at it again") from exc
        logger.info("accepted the %spseudo-label of image %d (run %d) as its mask",
                    "confident pixels of the " if confident_only else "", image.id, row.run_id)
        return mask.is_partial


def _suggest(session: Session, project_id: int, after: int | None) -> Image | None:
    ranked = image_repo.list_images(
        session, project_id, ImageFilter.LOW_CONFIDENCE, low_confidence_below=float("inf")
    )
    masked = {i.id for i in image_repo.list_images(session, project_id, ImageFilter.HAS_MASK)}
    position = next((k for k, image in enumerate(ranked) if image.id == after), -1)
    order = ranked[position + 1 :] + ranked[: position + 1]
    return next((image for image in order if image.id not in masked), None)


def suggest_next_to_label(studio: Studio, project: str, *, after: int | None = None) -> ImageInfo | None:
    """The image without a mask whose current pseudo-label has the lowest score (the model is
    least sure of it); with ``after``, the next one in that order after image ``after`` (wrapping
    around), so pressing "suggest next" walks through all of them instead of flipping between
    the two least confident. None when every image with a pseudo-label has a mask."""
    with studio.Session.begin() as session:
        chosen = _suggest(session, resolve_project(session, project).id, after)
        return None if chosen is None else image_info(chosen)
