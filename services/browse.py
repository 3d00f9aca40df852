"""Browsing services for the UI: gallery pages with each image's label state, and "next image".

Torch-free. Each service runs in its own transaction and returns frozen records.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.context import Studio
from services.errors import UserError
from services.labeling import ImageInfo, image_info
from services.lookups import parse_image_filter, resolve_image, resolve_project
from storage import images as image_repo
from storage import labels as label_repo
from storage import projects as project_repo
from storage.images import ImageFilter
from storage.models import Image


@dataclass(frozen=True)
class ImageState:
    """An image and what labels it has."""

    image: ImageInfo
    tags: tuple[str, ...]  # class names of the human tags
    mask_source: str | None  # "human" / "accepted", None without a mask
    score: float | None  # mean confidence of the current pseudo-label, None without one

    @property
    def has_mask(self) -> bool:
        return self.mask_source is not None

    def caption(self) -> str:
        """One short line for a gallery tile."""
        marks = []
        if self.tags:
            marks.append("tags: " + ", ".join(self.tags[:3]) + ("..." if len(self.tags) > 3 else ""))
        if self.mask_source:
            marks.append("mask" if self.mask_source == "human" else "accepted")
        if self.score is not None:
            marks.append(f"conf {self.score:.2f}")
        return " | ".join([self.image.name, *marks])


@dataclass(frozen=True)
class BrowsePage:
    items: tuple[ImageState, ...]
    total: int  # images matching the filter
    page: int  # 0-based, clamped to the pages there are
    pages: int  # at least 1


def _state(session: Session, image: Image, names: dict[int, str], run_id: int | None) -> ImageState:
    tag_ids = label_repo.get_tag_class_ids(session, image.id, "human")
    mask = label_repo.get_mask(session, image.id)
    pseudo = label_repo.get_pseudo_label(session, image.id, run_id) if run_id is not None else None
    return ImageState(
        image=image_info(image),
        tags=tuple(sorted(names[t] for t in tag_ids if t in names)),
        mask_source=mask.source if mask is not None else None,
        score=pseudo.score if pseudo is not None else None,
    )


def browse_page(
    studio: Studio,
    project: int | str,
    image_filter: ImageFilter | str = ImageFilter.ALL,
    *,
    page: int = 0,
    page_size: int = 48,
) -> BrowsePage:
    """Page ``page`` of the project's images matching the filter, with their label state."""
    image_filter = parse_image_filter(image_filter)
    if page_size < 1:
        raise UserError("page size must be at least 1")
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        total = image_repo.count_images(session, row.id, image_filter)
        pages = max(1, -(-total // page_size))
        page = min(max(0, page), pages - 1)
        images = image_repo.list_images(
            session, row.id, image_filter, offset=page * page_size, limit=page_size
        )
        names = {c.id: c.name for c in project_repo.list_classes(session, row.id)}
        run_id = label_repo.current_run_id(session, row.id)
        items = tuple(_state(session, image, names, run_id) for image in images)
        return BrowsePage(items=items, total=total, page=page, pages=pages)


def image_state(studio: Studio, image_id: int) -> ImageState:
    """One image with its label state."""
    with studio.Session.begin() as session:
        image = resolve_image(session, image_id)
        names = {c.id: c.name for c in project_repo.list_classes(session, image.project_id)}
        return _state(session, image, names, label_repo.current_run_id(session, image.project_id))


def next_image(
    studio: Studio,
    project: int | str,
    image_filter: ImageFilter | str = ImageFilter.UNTAGGED,
    *,
    after: int | None = None,
) -> ImageInfo | None:
    """The first image matching the filter that comes after image ``after`` (by name, wrapping
    around; ``after`` itself only when it is the only match), or None when none matches."""
    image_filter = parse_image_filter(image_filter)
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        current = image_repo.get_image(session, after) if after is not None else None
        images = image_repo.list_images(session, row.id, image_filter)
        if not images:
            return None
        if current is None:
            return image_info(images[0])
        key = (current.name, current.id)
        later = [i for i in images if (i.name, i.id) > key]
        others = [i for i in images if i.id != current.id]
        chosen = later[0] if later else (others[0] if others else images[0])
        return image_info(chosen)
