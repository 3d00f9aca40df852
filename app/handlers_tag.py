"""Tag screen: which classes an image shows, as checkboxes; "save & next untagged"."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from services import browse, labeling
from services.context import Studio
from services.errors import UserError

logger = logging.getLogger(__name__)

NO_IMAGES = "No images yet: import some on the **Import** tab."
VIEW_SIZE = 1024  # the tag view shows a cached JPEG of at most this side, not the full image


def tag_choices(studio: Studio, project: str) -> list[tuple[str, int]]:
    """(class name, class id) of the classes one can tag: all but background."""
    info = labeling.get_project(studio, project)
    return [(c.name, c.id) for c in info.classes if not c.is_background]


@shows_user_errors
def load_tag_view(
    studio: Studio, project: str | None, image_id: int | None
) -> tuple[int | None, str | None, str, Any]:
    """(image id, picture path, title, checkbox update) for tagging ``image_id``; with no image
    chosen, the first untagged image of the project."""
    if not project:
        return None, None, "Choose a project first.", gr.update(choices=[], value=[])
    if image_id is None:
        first = browse.next_image(studio, project, "untagged")
        if first is None:
            first = browse.next_image(studio, project, "all")
        image_id = first.id if first is not None else None
    if image_id is None:
        return None, None, NO_IMAGES, gr.update(choices=[], value=[])
    state = browse.image_state(studio, image_id)
    picture = str(studio.images.thumbnail(state.image.path, size=VIEW_SIZE))
    tags = labeling.get_image_tags(studio, image_id)
    title = f"**{state.image.name}** · " + (
        f"tagged: {', '.join(state.tags)}" if state.tags else "not tagged yet"
    )
    return image_id, picture, title, gr.update(choices=tag_choices(studio, project), value=tags)


def _save(studio: Studio, image_id: int | None, class_ids: Sequence[int] | None) -> list[int]:
    if image_id is None:
        raise UserError("no image to tag")
    return labeling.set_image_tags(studio, image_id, [int(c) for c in class_ids or []])


@shows_user_errors
def save_tags(studio: Studio, image_id: int | None, class_ids: Sequence[int] | None) -> str:
    """Store the checked classes as the image's tags (none checked: the image is untagged)."""
    saved = _save(studio, image_id, class_ids)
    return f"Saved {len(saved)} tag(s)." if saved else "Saved: no tags (the image counts as untagged)."


@shows_user_errors
def save_and_next(
    studio: Studio, project: str | None, image_id: int | None, class_ids: Sequence[int] | None
) -> tuple[int | None, str | None, str, Any, str]:
    """Save the tags, then show the next untagged image."""
    saved = _save(studio, image_id, class_ids)
    status = f"Saved {len(saved)} tag(s)."
    return (*next_untagged(studio, project, image_id), status)


@shows_user_errors
def next_untagged(
    studio: Studio, project: str | None, image_id: int | None
) -> tuple[int | None, str | None, str, Any]:
    """The tag view of the next untagged image after the current one (by name, wrapping)."""
    if not project:
        raise UserError("choose a project first")
    following = browse.next_image(studio, project, "untagged", after=image_id)
    if following is None:
        gr.Info("Every image is tagged.")
        return load_tag_view(studio, project, image_id)
    return load_tag_view(studio, project, following.id)
