"""Review screen: the model's pseudo-label over the image, its legend; accept, correct, suggest next."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import numpy as np

from app.errors import shows_user_errors
from app.handlers_paint import START_PSEUDO
from app.handlers_projects import class_palette
from app.overlay import class_shares, fit_size, legend_html, overlay, resize_rgb
from services import browse, labeling, review
from services.context import Studio
from services.errors import UserError

logger = logging.getLogger(__name__)

DISPLAY_SIDE = 1024


@shows_user_errors
def load_review(
    studio: Studio, project: str | None, image_id: int | None, opacity: float
) -> tuple[int | None, np.ndarray | None, str, str]:
    """(image id, overlay picture, legend HTML, title) for reviewing ``image_id``; with no image
    chosen, the one the model is least sure of."""
    if not project:
        return None, None, "", "Choose a project first."
    if image_id is None:
        suggested = review.suggest_next_to_label(studio, project)
        image_id = suggested.id if suggested is not None else None
    if image_id is None:
        return None, None, "", "Nothing to review yet: press **Train on my labels** first."
    image = labeling.get_image(studio, image_id)
    info = labeling.get_project(studio, project)
    rgb = studio.images.read_rgb(image.path)
    pseudo = review.pseudo_label(studio, image_id)
    if pseudo is None:
        picture = resize_rgb(rgb, fit_size(rgb.shape[:2], DISPLAY_SIDE))
        return image_id, picture, "", f"**{image.name}** has no pseudo-label yet: train a model first."
    palette = class_palette(info)
    picture = overlay(rgb, pseudo.labels, palette.lut(), opacity, DISPLAY_SIDE)
    classes = [(c.index, c.name, c.color) for c in info.classes]
    legend = legend_html(class_shares(pseudo.labels, classes, pseudo.confidence))
    state = browse.image_state(studio, image_id)
    mask_note = {None: "", "human": " · has a painted mask", "accepted": " · accepted"}[state.mask_source]
    title = f"**{image.name}** · model v{pseudo.version} · confidence {pseudo.score:.2f}{mask_note}"
    return image_id, picture, legend, title


@shows_user_errors
def accept(studio: Studio, image_id: int | None) -> str:
    """Store the pseudo-label as the image's mask as it is."""
    if image_id is None:
        raise UserError("choose an image to review first")
    partial = review.accept_pseudo_label(studio, image_id)
    return "Accepted as the image's mask" + (" (uncertain pixels stay unknown)." if partial else ".")


@shows_user_errors
def suggest_next(studio: Studio, project: str | None, image_id: int | None) -> int | None:
    """The unmasked image the model is least sure of (not the current one when others exist)."""
    if not project:
        raise UserError("choose a project first")
    skip = () if image_id is None else (image_id,)
    chosen = review.suggest_next_to_label(studio, project, skip=skip)
    if chosen is None:
        chosen = review.suggest_next_to_label(studio, project)
    if chosen is None:
        raise UserError("no image left to suggest: every image with a pseudo-label has a mask")
    return chosen.id


def correct_in_editor(image_id: int | None) -> tuple[Any, str, int | None]:
    """Open the reviewed image in the Paint tab, starting from its pseudo-label."""
    if image_id is None:
        raise gr.Error("choose an image to review first")
    return gr.Tabs(selected="paint"), START_PSEUDO, image_id
