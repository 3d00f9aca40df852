"""Turning what the user names (a project id or name, an image id, a filter name) into rows or a
:class:`UserError` that says what is missing. The one place services and the job machinery look
these up; the caller owns the session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.errors import UserError
from storage import images as image_repo
from storage import projects as project_repo
from storage.images import ImageFilter

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from storage.models import Image, Project


def resolve_project(session: Session, project: int | str) -> Project:
    """The project with this id or name; UserError when there is none."""
    row = (
        project_repo.get_project(session, project)
        if isinstance(project, int)
        else project_repo.get_project_by_name(session, project)
    )
    if row is None:
        raise UserError(f"no project named {project!r}")
    return row


def resolve_image(session: Session, image_id: int) -> Image:
    """The image with this id; UserError when there is none."""
    image = image_repo.get_image(session, image_id)
    if image is None:
        raise UserError(f"no image with id {image_id}")
    return image


def image_in_project(session: Session, project_id: int, image_id: int | None) -> Image | None:
    """The image when ``image_id`` names one of the project's images; None when it is None or
    belongs to another project (a stale page); UserError when no image has that id."""
    if image_id is None:
        return None
    image = resolve_image(session, image_id)
    return image if image.project_id == project_id else None


def parse_image_filter(image_filter: ImageFilter | str) -> ImageFilter:
    """The :class:`ImageFilter` named ``image_filter``; UserError listing the valid names otherwise."""
    try:
        return ImageFilter(image_filter)
    except ValueError:
        raise UserError(
            f"unknown image filter {image_filter!r}; use one of {[f.value for f in ImageFilter]}"
        ) from None
