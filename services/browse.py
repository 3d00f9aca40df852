"""Browsing services for the UI: gallery pages with each image's label state, and "next image".

Torch-free. Each service runs in its own transaction and returns frozen records.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.context import Studio
from services.errors import UserError
from services.labeling import ImageInfo, image_info, set_tags
from services.lookups import image_in_project, parse_image_filter, resolve_image, resolve_project
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
    tags_checked: bool = False  # its tags were saved (perhaps with none): it is not untagged

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


def _states(session: Session, images: Sequence[Image], project_id: int) -> tuple[ImageState, ...]:
    """The label state of each image, in a few statements whatever the number of images."""
    names = {c.id: c.name for c in project_repo.list_classes(session, project_id)}
    run_id = label_repo.current_run_id(session, project_id)
    labels = label_repo.label_summaries(session, [image.id for image in images], run_id)
    states = []
    for image in images:
        tag_ids, mask_source, score = labels[image.id]
        states.append(ImageState(
            image=image_info(image),
            tags=tuple(sorted(names[t] for t in tag_ids if t in names)),
            mask_source=mask_source,
            score=score,
            tags_checked=bool(tag_ids) or image.tags_checked_at is not None,
        ))
    return tuple(states)


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
        return BrowsePage(items=_states(session, images, row.id), total=total, page=page, pages=pages)


def image_state(studio: Studio, image_id: int) -> ImageState:
    """One image with its label state."""
    with studio.Session.begin() as session:
        image = resolve_image(session, image_id)
        return _states(session, [image], image.project_id)[0]


def step_through(
    images: Sequence[Image], current: Image | None, step: int, skip: Collection[int] = ()
) -> Image | None:
    """The image ``step`` (+1 / -1) places from ``current`` in ``images`` (by name, wrapping
    around), leaving out ``skip``; ``current`` itself only when nothing else is left."""
    candidates = [i for i in images if i.id not in skip]
    if not candidates:
        return None
    if current is None:
        return candidates[0] if step > 0 else candidates[-1]
    key = (current.name, current.id)
    if step > 0:
        ahead = [i for i in candidates if (i.name, i.id) > key]
        behind = [i for i in candidates if (i.name, i.id) < key]
    else:
        ahead = [i for i in reversed(candidates) if (i.name, i.id) < key]
        behind = [i for i in reversed(candidates) if (i.name, i.id) > key]
    following = ahead + behind
    return following[0] if following else candidates[0]


def _next(
    session: Session, project_id: int, image_filter: ImageFilter, current: Image | None,
    step: int = 1,
) -> Image | None:
    return step_through(image_repo.list_images(session, project_id, image_filter), current, step)


def next_image(
    studio: Studio,
    project: int | str,
    image_filter: ImageFilter | str = ImageFilter.UNTAGGED,
    *,
    after: int | None = None,
    step: int = 1,
) -> ImageInfo | None:
    """The first image matching the filter that comes after image ``after`` (by name, wrapping
    around; ``after`` itself only when it is the only match; ``step=-1``: the one before), or
    None when none matches."""
    image_filter = parse_image_filter(image_filter)
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        current = image_repo.get_image(session, after) if after is not None else None
        chosen = _next(session, row.id, image_filter, current, step)
        return None if chosen is None else image_info(chosen)


TAG_MOVES = ("stay", "next_untagged", "next", "previous")


@dataclass(frozen=True)
class TagView:
    """What the Tag screen shows: the image (None: the project has none), its human tags and the
    classes one can tag (all but background) as ``(name, class id)``."""

    state: ImageState | None
    tag_ids: tuple[int, ...]
    classes: tuple[tuple[str, int], ...]
    saved: tuple[int, ...] | None  # the tags just saved, None when nothing was saved
    every_image_tagged: bool = False  # "next untagged" found none (the view stays put)
    tags_version: int = 0  # of the shown image's human tags: pass it with their next save


def tag_view(
    studio: Studio,
    project: int | str,
    image_id: int | None = None,
    *,
    save: Sequence[int] | None = None,
    expected_version: int | None = None,
    move: str = "stay",
) -> TagView:
    """One user event of the Tag screen in one transaction: optionally save ``save`` as the human
    tags of ``image_id``, then show ``image_id`` (``move="stay"``; with none, the first untagged
    image, else the first), the next untagged image after it (one saved with no tags is not
    untagged any more), or the next / previous image by name. With ``expected_version`` (the
    ``tags_version`` of the view the tags were chosen in) a save is refused when another save of
    the image's tags came in between."""
    if move not in TAG_MOVES:
        raise UserError(f"move must be one of {TAG_MOVES}, got {move!r}")
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        current = image_in_project(session, row.id, image_id)
        saved = None
        if save is not None:
            if current is None:
                raise UserError("no image to tag")
            saved = tuple(set_tags(session, current, save, expected_version=expected_version))
        chosen, none_left = current, False
        if move == "next_untagged" or current is None:
            chosen = _next(session, row.id, ImageFilter.UNTAGGED, current, 1)
            if chosen is None or (current is not None and chosen.id == current.id and saved is not None):
                none_left = current is not None
                chosen = current or _next(session, row.id, ImageFilter.ALL, None)
        elif move in ("next", "previous"):
            chosen = _next(session, row.id, ImageFilter.ALL, current, 1 if move == "next" else -1)
        classes = project_repo.list_classes(session, row.id)
        taggable = tuple((c.name, c.id) for c in classes if not c.is_background)
        if chosen is None:
            return TagView(None, (), taggable, saved)
        state = _states(session, [chosen], row.id)[0]
        tag_ids = tuple(label_repo.get_tag_class_ids(session, chosen.id, "human"))
        return TagView(state, tag_ids, taggable, saved, none_left,
                       label_repo.tags_version(session, chosen.id))
