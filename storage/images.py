"""Repository functions for image rows: add, find, and list/count with the gallery filters.

The caller owns the session (no commits). "Tagged" means the image has a human tag; the
pseudo-label filters look at the project's current (latest published) run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, Select, exists, func, null, select
from sqlalchemy.orm import Session

from storage.labels import current_run_id
from storage.models import Image, ImageTag, Mask, PseudoLabel

DEFAULT_LOW_CONFIDENCE = 0.5


class ImageFilter(StrEnum):
    """Which images of a project to list."""

    ALL = "all"
    UNTAGGED = "untagged"  # no human tag, and never saved with none (Image.tags_checked_at unset)
    TAGGED = "tagged"  # at least one human tag
    HAS_MASK = "has_mask"
    NO_MASK = "no_mask"
    HAS_PSEUDO_LABEL = "has_pseudo_label"  # from the current run
    LOW_CONFIDENCE = "low_confidence"  # current pseudo-label score below the threshold


def add_image(
    session: Session, project_id: int, *, name: str, sha256: str, path: str, width: int, height: int
) -> Image:
    """Add an image row (the file is already in the store at ``path``)."""
    image = Image(project_id=project_id, name=name, sha256=sha256, path=path, width=width, height=height)
    session.add(image)
    session.flush()
    return image


def get_image(session: Session, image_id: int) -> Image | None:
    """The image with this id, or None."""
    return session.get(Image, image_id)


def find_image_by_sha(session: Session, project_id: int, sha256: str) -> Image | None:
    """The project's image with this content hash, or None."""
    return session.scalars(
        select(Image).where(Image.project_id == project_id, Image.sha256 == sha256)
    ).one_or_none()


def find_image_by_name(session: Session, project_id: int, name: str) -> Image | None:
    """The project's image imported under this file name, or None."""
    return session.scalars(
        select(Image).where(Image.project_id == project_id, Image.name == name)
    ).one_or_none()


def referenced_paths(session: Session, paths: Iterable[str] | None = None) -> set[str]:
    """The store paths some image row (of any project) points to; only among ``paths`` if given."""
    query = select(Image.path).distinct()
    if paths is not None:
        wanted = sorted(set(paths))
        if not wanted:
            return set()
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # keep the IN list short
            found.update(session.scalars(query.where(Image.path.in_(wanted[start:start + 500]))))
        return found
    return set(session.scalars(query))


def image_contents(session: Session, project_id: int) -> list[tuple[int, str, str]]:
    """``(image id, content hash, store path)`` of every image of a project, by name (one
    statement, no ORM rows)."""
    stmt = (select(Image.id, Image.sha256, Image.path)
            .where(Image.project_id == project_id).order_by(Image.name, Image.id))
    return [(int(i), str(sha), str(path)) for i, sha, path in session.execute(stmt)]


def all_images(session: Session, project_id: int) -> list[Image]:
    """Every image of a project, by name."""
    return list(session.scalars(select(Image).where(Image.project_id == project_id).order_by(Image.name)))


def _filtered(
    session: Session, query: Select, project_id: int, image_filter: ImageFilter, threshold: float
) -> Select | None:
    """``query`` restricted to the filter; None when the filter cannot match anything."""
    query = query.where(Image.project_id == project_id)
    human_tag = exists().where(ImageTag.image_id == Image.id, ImageTag.source == "human")
    has_mask = exists().where(Mask.image_id == Image.id)
    condition: ColumnElement[bool] | None = None
    match ImageFilter(image_filter):
        case ImageFilter.ALL:
            pass
        case ImageFilter.UNTAGGED:
            condition = ~human_tag & Image.tags_checked_at.is_(None)
        case ImageFilter.TAGGED:
            condition = human_tag
        case ImageFilter.HAS_MASK:
            condition = has_mask
        case ImageFilter.NO_MASK:
            condition = ~has_mask
        case ImageFilter.HAS_PSEUDO_LABEL | ImageFilter.LOW_CONFIDENCE:
            run_id = current_run_id(session, project_id)
            if run_id is None:
                return None
            condition = exists().where(PseudoLabel.image_id == Image.id, PseudoLabel.run_id == run_id)
            if image_filter == ImageFilter.LOW_CONFIDENCE:
                query = query.join(
                    PseudoLabel, (PseudoLabel.image_id == Image.id) & (PseudoLabel.run_id == run_id)
                ).where(PseudoLabel.score < threshold)
                condition = None
    return query if condition is None else query.where(condition)


def list_images(
    session: Session,
    project_id: int,
    image_filter: ImageFilter | str = ImageFilter.ALL,
    *,
    offset: int = 0,
    limit: int | None = None,
    low_confidence_below: float = DEFAULT_LOW_CONFIDENCE,
) -> list[Image]:
    """One page of a project's images matching the filter, by name (low confidence: least confident first)."""
    image_filter = ImageFilter(image_filter)
    query = _filtered(session, select(Image), project_id, image_filter, low_confidence_below)
    if query is None:
        return []
    if image_filter == ImageFilter.LOW_CONFIDENCE:
        query = query.order_by(PseudoLabel.score, Image.name)
    else:
        query = query.order_by(Image.name, Image.id)
    query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def count_images(
    session: Session,
    project_id: int,
    image_filter: ImageFilter | str = ImageFilter.ALL,
    *,
    low_confidence_below: float = DEFAULT_LOW_CONFIDENCE,
) -> int:
    """How many of a project's images match the filter."""
    query = _filtered(
        session, select(func.count(Image.id)), project_id, ImageFilter(image_filter), low_confidence_below
    )
    return 0 if query is None else session.execute(query).scalar_one()


def image_counts(
    session: Session, project_id: int, *, low_confidence_below: float = DEFAULT_LOW_CONFIDENCE
) -> dict[str, int]:
    """``count_images`` for every filter, keyed by the filter's value."""
    return {
        f.value: count_images(session, project_id, f, low_confidence_below=low_confidence_below)
        for f in ImageFilter
    }


@dataclass(frozen=True)
class ImageLabels:
    """An image with what training and predicting need of its labels (plain values, no ORM rows).

    ``tag_class_ids``: class ids of its human tags, ascending. ``mask_png``: its mask's PNG bytes
    when they were asked for and it has a mask, else None; ``has_mask`` says whether it has one.
    """

    image_id: int
    name: str
    path: str
    tag_class_ids: tuple[int, ...]
    has_mask: bool
    mask_png: bytes | None = None
    sha256: str = ""  # of the image's content (its feature-store key)


def iter_images_with_labels(
    session: Session,
    project_id: int,
    *,
    mask_png: bool = False,
    without_pseudo_label_of: int | None = None,
    batch_size: int = 256,
) -> Iterator[ImageLabels]:
    """Every image of the project by name (the order of ``all_images``) with its human tags and mask.

    Two statements per batch of ``batch_size`` images whatever the number of tags or masks: the
    images joined to their masks (a keyset page on the unique name, so memory holds one page of
    mask PNGs), then the human tags of that name range. ``mask_png`` fetches the mask bytes (else
    only whether there is a mask); ``without_pseudo_label_of`` skips images that already have a
    pseudo-label of that run.
    """
    png = Mask.png if mask_png else null()
    stmt = (
        select(Image.id, Image.name, Image.path, Mask.id.is_not(None), png, Image.sha256)
        .outerjoin(Mask, Mask.image_id == Image.id)
        .where(Image.project_id == project_id)
        .order_by(Image.name)
        .limit(batch_size)
    )
    if without_pseudo_label_of is not None:
        stmt = stmt.where(~exists().where(
            PseudoLabel.image_id == Image.id, PseudoLabel.run_id == without_pseudo_label_of))
    tags = (
        select(ImageTag.image_id, ImageTag.class_id)
        .join(Image, Image.id == ImageTag.image_id)
        .where(Image.project_id == project_id, ImageTag.source == "human")
        .order_by(ImageTag.image_id, ImageTag.class_id)
    )
    last_name: str | None = None
    while True:
        page = session.execute(stmt if last_name is None else stmt.where(Image.name > last_name)).all()
        if not page:
            return
        in_range = Image.name <= page[-1][1]
        if last_name is not None:
            in_range = in_range & (Image.name > last_name)
        tag_ids: dict[int, list[int]] = {}
        for image_id, class_id in session.execute(tags.where(in_range)):
            tag_ids.setdefault(image_id, []).append(class_id)
        for image_id, name, path, has_mask, blob, sha256 in page:
            yield ImageLabels(image_id, name, path, tuple(tag_ids.get(image_id, ())), bool(has_mask), blob,
                              sha256)
        if len(page) < batch_size:
            return
        last_name = page[-1][1]


def label_counts(session: Session, project_id: int) -> tuple[int, int, int]:
    """(images with a human tag, images with a mask, images with neither) of a project, in one
    statement."""
    tagged = exists().where(ImageTag.image_id == Image.id, ImageTag.source == "human")
    masked = exists().where(Mask.image_id == Image.id)
    row = session.execute(
        select(func.count(Image.id).filter(tagged), func.count(Image.id).filter(masked),
               func.count(Image.id).filter(~tagged, ~masked)).where(Image.project_id == project_id)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])
