"""Which supervision mode "Train on my labels" will use, and why, without importing torch.

The UI shows this before the user presses the button, and the training service
(``services.training``, which imports torch) makes its decision with the same ``plan_for_counts``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, func, select

from services.context import Studio
from services.errors import UserError
from services.lookups import resolve_project
from slrnet.config import MODES
from storage.models import Image, ImageTag, Mask


@dataclass(frozen=True)
class LabelCounts:
    tagged: int  # images with a human tag
    masked: int  # images with a mask
    unlabelled: int  # images with neither


@dataclass(frozen=True)
class TrainPlan:
    mode: str
    reason: str
    counts: LabelCounts


def label_counts(studio: Studio, project: str) -> LabelCounts:
    """How many of the project's images have tags, masks, or neither."""
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        tagged = exists().where(ImageTag.image_id == Image.id, ImageTag.source == "human")
        masked = exists().where(Mask.image_id == Image.id)
        mine = Image.project_id == row.id

        def count(*conditions: object) -> int:
            return session.execute(select(func.count(Image.id)).where(mine, *conditions)).scalar_one()

        return LabelCounts(tagged=count(tagged), masked=count(masked), unlabelled=count(~tagged, ~masked))


def plan_for_counts(counts: LabelCounts, requested: str = "auto") -> TrainPlan:
    """The mode for these counts (``requested`` when not "auto" and the labels allow it)."""
    tagged, masked, unlabelled = counts.tagged, counts.masked, counts.unlabelled
    if requested not in ("auto", *MODES):
        raise UserError(f"unknown mode {requested!r}; choose auto, {', '.join(MODES)}")
    if tagged == 0 and masked == 0:
        raise UserError("the project has no labels yet: tag some images or paint some masks first")
    if requested == "auto":
        if masked and tagged:
            return TrainPlan(
                "ssss_tags",
                f"{masked} image(s) with masks and {tagged} with tags: "
                f"masks and tags together, {unlabelled} unlabelled image(s) used too",
                counts,
            )
        if masked:
            return TrainPlan(
                "ssss",
                f"{masked} image(s) with masks and no tags: semi-supervised, "
                f"{unlabelled} unlabelled image(s) used too",
                counts,
            )
        return TrainPlan(
            "wsss", f"{tagged} image(s) with tags and no masks: weakly supervised from tags", counts
        )
    if requested == "wsss" and not tagged:
        raise UserError("mode wsss needs images with tags, and this project has none")
    if requested == "ssss" and not masked:
        raise UserError("mode ssss needs images with masks, and this project has none")
    if requested == "ssss_tags" and not (masked and tagged):
        raise UserError("mode ssss_tags needs images with masks and images with tags")
    return TrainPlan(
        requested,
        f"mode {requested} chosen by hand ({tagged} tagged, {masked} masked, {unlabelled} unlabelled images)",
        counts,
    )


def plan_training(studio: Studio, project: str, requested: str = "auto") -> TrainPlan:
    """The mode "Train on my labels" will use for the project's labels now, with the reason."""
    return plan_for_counts(label_counts(studio, project), requested)
