"""Paint screen: gr.ImageEditor with one fixed brush colour per class; saving a full-size mask."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import numpy as np

from app.errors import shows_user_errors
from app.handlers_projects import class_palette
from app.overlay import palette_html
from app.paint import apply_paint, editor_image
from services import browse, labeling, review
from services.context import Studio
from services.errors import UserError
from storage.label_maps import decode_label_png, encode_label_png

logger = logging.getLogger(__name__)

START_MASK = "my mask"
START_PSEUDO = "model's pseudo-label"
START_EMPTY = "nothing (unknown)"
START_CHOICES = (START_MASK, START_PSEUDO, START_EMPTY)


def brush_for(colors: list[str], default: str) -> gr.Brush:
    """The editor's brush: only the palette's colours, no free colour picker."""
    return gr.Brush(colors=colors, default_color=default, color_mode="fixed")


def _start_labels(studio: Studio, image_id: int, start: str) -> np.ndarray | None:
    """The label map painting starts from: the mask, the pseudo-label, or None (all unknown)."""
    if start == START_MASK:
        return labeling.get_mask(studio, image_id)
    if start == START_PSEUDO:
        pseudo = review.pseudo_label(studio, image_id)
        if pseudo is None:
            raise UserError("this image has no pseudo-label yet; train a model first")
        return pseudo.labels
    return None


@shows_user_errors
def load_editor(
    studio: Studio, project: str | None, image_id: int | None, start: str | None
) -> tuple[Any, str, str, dict | None]:
    """(editor update, brush legend HTML, title, paint session) to paint ``image_id``.

    The editor shows the image at most ``EDIT_MAX_SIDE`` wide with the starting labels blended
    in; the session keeps those labels (PNG bytes), so each save applies the painting to the same
    start at full size.
    """
    if not project:
        return gr.update(value=None), "", "Choose a project first.", None
    if image_id is None:
        first = browse.next_image(studio, project, "no_mask")
        image_id = first.id if first is not None else None
    if image_id is None:
        return gr.update(value=None), "", "No images yet: import some on the **Import** tab.", None
    info = labeling.get_project(studio, project)
    palette = class_palette(info)
    image = labeling.get_image(studio, image_id)
    start = start or START_MASK
    labels = _start_labels(studio, image_id, start)
    if start == START_MASK and labels is None:
        start = START_EMPTY
    view = editor_image(studio.images.read_rgb(image.path), labels, palette)
    session = {
        "image_id": image_id,
        "start": start,
        "start_png": None if labels is None else encode_label_png(labels),
        "full_size": list(view.full_size),
    }
    first_class = next((c.color for c in info.classes if not c.is_background), palette.colors[0])
    editor = gr.update(
        value={"background": view.background, "layers": [], "composite": None},
        brush=brush_for(palette.colors, first_class),
    )
    scale_note = (
        f" · shown at {view.edit_size[1]}×{view.edit_size[0]}, saved at full size"
        if view.edit_size != view.full_size
        else ""
    )
    title = f"**{image.name}** ({image.width}×{image.height}) · starting from {start}{scale_note}"
    legend = palette_html([(b.name, b.color) for b in palette.brushes])
    return editor, legend, title, session


def open_editor(
    studio: Studio, project: str | None, image_id: int | None, start: str | None, session: dict | None
) -> tuple:
    """Entering the Paint tab: keep the open painting when it is of the chosen image (so unsaved
    strokes survive a look at another tab), else :func:`load_editor`."""
    if session is not None and (image_id is None or session["image_id"] == image_id):
        return gr.skip(), gr.skip(), gr.skip(), session
    return load_editor(studio, project, image_id, start)


@shows_user_errors
def save_painting(
    studio: Studio,
    project: str | None,
    session: dict | None,
    editor_value: dict | None,
    rest_is_background: bool,
) -> str:
    """Map the painted colours to classes, apply them at full size over the starting labels and
    store the result as the image's mask."""
    if not project or not session:
        raise UserError("open an image in the editor first")
    image_id = int(session["image_id"])
    info = labeling.get_project(studio, project)
    palette = class_palette(info)
    labels = None if session["start_png"] is None else decode_label_png(session["start_png"])
    layers = [layer for layer in (editor_value or {}).get("layers") or [] if layer is not None]
    background = next((c.index for c in info.classes if c.is_background), None)
    if rest_is_background and background is None:
        raise UserError("this project has no background class")
    mask = apply_paint(
        labels,
        layers,
        palette,
        tuple(session["full_size"]),
        unpainted_background=background if rest_is_background else None,
    )
    partial = labeling.save_mask(studio, image_id, mask)
    known = int((mask != 255).sum())
    logger.info("saved mask of image %d (%d labelled pixels)", image_id, known)
    return f"Saved the mask: {known / mask.size:.1%} of the pixels labelled" + (
        " (the rest unknown)." if partial else "."
    )


@shows_user_errors
def next_without_mask(studio: Studio, project: str | None, image_id: int | None) -> int | None:
    """The next image (by name, wrapping) that has no mask yet."""
    if not project:
        raise UserError("choose a project first")
    following = browse.next_image(studio, project, "no_mask", after=image_id)
    if following is None:
        raise UserError("every image has a mask")
    return following.id
