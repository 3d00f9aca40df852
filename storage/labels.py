"""Repository functions for labels: image tags, human masks and pseudo-labels.

The caller owns the session (no commits) and validates class ids and label values. Label maps go in
and out as ``(H, W) uint8`` arrays (``IGNORE_INDEX`` = unknown) and are stored as PNG bytes.

Human labels are written compare-and-set: an image's human tags carry ``Image.tags_version`` and its
mask ``(Mask.id, Mask.version)``; a write that names the version it read is one conditional
statement (``UPDATE ... WHERE version = :expected``), so of two writers that read the same version
exactly one succeeds and the other gets :class:`storage.errors.StaleVersion`, on SQLite and on
PostgreSQL alike (where the row lock also serializes two unconditional tag saves: no union).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from slrnet.config import IGNORE_INDEX
from storage.errors import StaleVersion
from storage.label_maps import decode_label_png, encode_label_png
from storage.models import Image, ImageTag, Mask, PseudoLabel, TrainingRun, utcnow

MaskVersion = tuple[int, int]  # (mask id, version): which mask and which save of it
NO_MASK: MaskVersion = (0, 0)  # "the image has no mask" as an expected version


def get_tag_class_ids(session: Session, image_id: int, source: str = "human") -> list[int]:
    """Class ids of an image's tags from ``source`` ("human" or "model")."""
    return list(
        session.scalars(
            select(ImageTag.class_id)
            .where(ImageTag.image_id == image_id, ImageTag.source == source)
            .order_by(ImageTag.class_id)
        )
    )


def add_tags(session: Session, image_id: int, class_ids: Iterable[int], source: str = "human") -> int:
    """Add the tags the image does not have yet from ``source``; returns how many were added."""
    have = set(get_tag_class_ids(session, image_id, source))
    new = sorted(set(class_ids) - have)
    if new and source == "human":  # an editor opened before sees its version change
        session.execute(update(Image).where(Image.id == image_id)
                        .values(tags_version=Image.tags_version + 1)
                        .execution_options(synchronize_session="fetch"))
    session.add_all(ImageTag(image_id=image_id, class_id=c, source=source) for c in new)
    session.flush()
    return len(new)


def tags_version(session: Session, image_id: int) -> int:
    """The version of the image's human tags (0 before the first save)."""
    return int(session.scalar(select(Image.tags_version).where(Image.id == image_id)) or 0)


def set_tags(
    session: Session,
    image_id: int,
    class_ids: Iterable[int],
    source: str = "human",
    *,
    scores: dict[int, float] | None = None,
    run_id: int | None = None,
    expected_version: int | None = None,
) -> int:
    """Replace an image's tags from ``source`` with ``class_ids`` (model tags: with scores and run).

    Human tags first raise ``Image.tags_version`` by one, conditionally on it still being
    ``expected_version`` when given (else :class:`StaleVersion`, nothing written); that row lock
    also serializes concurrent saves. Returns the new version (model tags: the unchanged one).
    """
    if source == "human":
        bump = update(Image).where(Image.id == image_id)
        if expected_version is not None:
            bump = bump.where(Image.tags_version == expected_version)
        result = session.execute(bump.values(tags_version=Image.tags_version + 1)
                                 .execution_options(synchronize_session="fetch"))
        if result.rowcount != 1:
            raise StaleVersion(f"the tags of image {image_id} changed since version {expected_version}")
    session.execute(delete(ImageTag).where(ImageTag.image_id == image_id, ImageTag.source == source))
    scores = scores or {}
    session.add_all(
        ImageTag(image_id=image_id, class_id=c, source=source, score=scores.get(c), run_id=run_id)
        for c in sorted(set(class_ids))
    )
    session.flush()
    return tags_version(session, image_id)


def image_ids_with_mask(session: Session, project_id: int) -> set[int]:
    """Ids of the project's images that have a mask."""
    return set(session.scalars(select(Mask.image_id).join(Image).where(Image.project_id == project_id)))


def get_mask(session: Session, image_id: int) -> Mask | None:
    """The image's mask row, or None."""
    return session.scalars(select(Mask).where(Mask.image_id == image_id)).one_or_none()


def get_mask_array(session: Session, image_id: int) -> np.ndarray | None:
    """The image's mask as an ``(H, W) uint8`` array, or None."""
    mask = get_mask(session, image_id)
    return None if mask is None else decode_label_png(mask.png)


def mask_version(mask: Mask | None) -> MaskVersion:
    """The version of a mask row (``NO_MASK`` for None)."""
    return NO_MASK if mask is None else (mask.id, mask.version)


def put_mask(
    session: Session,
    image_id: int,
    label_map: np.ndarray,
    *,
    source: str = "human",
    expected: MaskVersion | None = None,
) -> Mask:
    """Create or replace the image's mask; ``is_partial`` is set when any pixel is ``IGNORE_INDEX``."""
    is_partial = bool((label_map == IGNORE_INDEX).any())
    return put_mask_png(session, image_id, encode_label_png(label_map), is_partial=is_partial,
                        source=source, expected=expected)


def put_mask_png(
    session: Session,
    image_id: int,
    png: bytes,
    *,
    is_partial: bool,
    source: str = "human",
    expected: MaskVersion | None = None,
) -> Mask:
    """Create or replace the image's mask from PNG bytes already encoded with ``encode_label_png``.

    With ``expected`` (``NO_MASK``: there is none) the write happens only while the stored mask
    still is that version, else :class:`StaleVersion`; without, it replaces whatever is stored. A
    second creation racing a first also raises :class:`StaleVersion` (the transaction is then
    unusable: let it roll back).
    """
    if expected != NO_MASK:
        replace = update(Mask).where(Mask.image_id == image_id)
        if expected is not None:
            replace = replace.where(Mask.id == expected[0], Mask.version == expected[1])
        result = session.execute(
            replace.values(png=png, is_partial=is_partial, source=source, version=Mask.version + 1,
                           updated_at=utcnow()).execution_options(synchronize_session=False))
        if result.rowcount == 1:
            return session.scalars(select(Mask).where(Mask.image_id == image_id)
                                   .execution_options(populate_existing=True)).one()
        if expected is not None:
            raise StaleVersion(f"the mask of image {image_id} changed since version {expected}")
    elif get_mask(session, image_id) is not None:
        raise StaleVersion(f"image {image_id} got a mask meanwhile")
    mask = Mask(image_id=image_id, png=png, is_partial=is_partial, source=source, version=1)
    session.add(mask)
    try:
        session.flush()
    except IntegrityError as exc:  # another writer created it first
        raise StaleVersion(f"the mask of image {image_id} was created meanwhile") from exc
    return mask


def delete_mask(session: Session, image_id: int, *, expected: MaskVersion | None = None) -> bool:
    """Delete the image's mask; True when there was one. With ``expected`` only while the stored
    mask is that version (``NO_MASK``: none stored), else :class:`StaleVersion`."""
    if expected == NO_MASK:
        if get_mask(session, image_id) is not None:
            raise StaleVersion(f"image {image_id} got a mask meanwhile")
        return False
    remove = delete(Mask).where(Mask.image_id == image_id)
    if expected is not None:
        remove = remove.where(Mask.id == expected[0], Mask.version == expected[1])
    result = session.execute(remove.execution_options(synchronize_session=False))
    if expected is not None and result.rowcount != 1:
        raise StaleVersion(f"the mask of image {image_id} changed since version {expected}")
    return bool(result.rowcount)


def label_maps_use(session: Session, project_id: int, indices: Iterable[int]) -> bool:
    """Whether a mask or pseudo-label of the project has a pixel of one of these class indices
    (one label map in memory at a time)."""
    wanted = np.zeros(256, dtype=bool)
    wanted[list(indices)] = True
    if not wanted.any():
        return False
    in_project = select(Image.id).where(Image.project_id == project_id)
    for table in (Mask, PseudoLabel):
        for row_id in session.scalars(select(table.id).where(table.image_id.in_(in_project))).all():
            png = session.scalar(select(table.png).where(table.id == row_id))
            if wanted[decode_label_png(png)].any():
                return True
    return False


def remap_label_maps(session: Session, project_id: int, lut: np.ndarray) -> tuple[int, int]:
    """Rewrite the project's masks and pseudo-labels (of every run) through ``lut``: a pixel of
    value ``v`` becomes ``lut[v]`` (256 ``uint8`` entries). A mask left with no labelled pixel is
    deleted; a changed mask gets a new version, compare-and-set (:class:`StaleVersion` when it was
    saved meanwhile). One label map in memory at a time. Returns ``(masks, pseudo-labels)``
    changed."""
    in_project = select(Image.id).where(Image.project_id == project_id)
    masks = pseudo = 0
    for mask_id in session.scalars(select(Mask.id).where(Mask.image_id.in_(in_project))).all():
        mask = session.get(Mask, mask_id)
        assert mask is not None
        old = decode_label_png(mask.png)
        new = lut[old]
        if not np.array_equal(old, new):
            if (new == IGNORE_INDEX).all():
                delete_mask(session, mask.image_id, expected=mask_version(mask))
            else:
                put_mask(session, mask.image_id, new, source=mask.source, expected=mask_version(mask))
            masks += 1
        if mask in session:
            session.expunge(mask)  # its PNG bytes go with it
    for row_id in session.scalars(select(PseudoLabel.id).where(PseudoLabel.image_id.in_(in_project))).all():
        row = session.get(PseudoLabel, row_id)
        assert row is not None
        old = decode_label_png(row.png)
        new = lut[old]
        if not np.array_equal(old, new):
            row.png = encode_label_png(new)
            session.flush()
            pseudo += 1
        session.expunge(row)
    return masks, pseudo


def current_run_id(session: Session, project_id: int) -> int | None:
    """The project's current model version: its most recently published run, or None."""
    return session.scalars(
        select(TrainingRun.id)
        .where(TrainingRun.project_id == project_id, TrainingRun.status == "published")
        .order_by(TrainingRun.published_at.desc().nulls_last(), TrainingRun.id.desc())
        .limit(1)
    ).first()


def put_pseudo_label(
    session: Session,
    image_id: int,
    run_id: int,
    label_map: np.ndarray,
    confidence: np.ndarray,
    score: float | None = None,
) -> PseudoLabel:
    """Create or replace a run's pseudo-label of an image.

    ``confidence`` is ``(H, W)`` float in 0..1 or uint8 in 0..255; ``score`` defaults to its mean (0..1).
    """
    if confidence.dtype != np.uint8:
        confidence = np.clip(np.rint(confidence * 255.0), 0, 255).astype(np.uint8)
    if score is None:
        score = float(confidence.mean()) / 255.0
    png, conf_png = encode_label_png(label_map), encode_label_png(confidence)
    row = get_pseudo_label(session, image_id, run_id)
    if row is None:
        row = PseudoLabel(image_id=image_id, run_id=run_id, png=png, confidence_png=conf_png, score=score)
        session.add(row)
    else:
        row.png, row.confidence_png, row.score = png, conf_png, score
    session.flush()
    return row


def get_pseudo_label(session: Session, image_id: int, run_id: int) -> PseudoLabel | None:
    """A run's pseudo-label of an image, or None."""
    return session.scalars(
        select(PseudoLabel).where(PseudoLabel.image_id == image_id, PseudoLabel.run_id == run_id)
    ).one_or_none()


def current_pseudo_label(session: Session, project_id: int, image_id: int) -> PseudoLabel | None:
    """The image's pseudo-label from the project's current (latest published) run, or None."""
    run_id = current_run_id(session, project_id)
    return None if run_id is None else get_pseudo_label(session, image_id, run_id)


def pseudo_label_arrays(row: PseudoLabel) -> tuple[np.ndarray, np.ndarray]:
    """``(labels uint8, confidence float32 in 0..1)`` of a pseudo-label row."""
    confidence = decode_label_png(row.confidence_png).astype(np.float32) / 255.0
    return decode_label_png(row.png), confidence


def pseudo_label_score_summary(session: Session, project_id: int, run_id: int) -> tuple[int, float | None]:
    """``(how many of the project's images have a pseudo-label of the run, their mean score)``;
    the mean is None when there are none. One statement."""
    count, mean = session.execute(
        select(func.count(PseudoLabel.id), func.avg(PseudoLabel.score))
        .join(Image, Image.id == PseudoLabel.image_id)
        .where(Image.project_id == project_id, PseudoLabel.run_id == run_id)
    ).one()
    return int(count), None if mean is None else float(mean)


def label_summaries(session: Session, image_ids: Iterable[int], run_id: int | None
                    ) -> dict[int, tuple[tuple[int, ...], str | None, float | None]]:
    """``{image_id: (human tag class ids, mask source or None, score of run_id's pseudo-label or
    None)}`` for the given images, in three statements whatever their number (no PNG bytes)."""
    ids = list(image_ids)
    tags: dict[int, list[int]] = {i: [] for i in ids}
    masks: dict[int, str] = {}
    scores: dict[int, float] = {}
    if ids:
        for image_id, class_id in session.execute(
                select(ImageTag.image_id, ImageTag.class_id)
                .where(ImageTag.image_id.in_(ids), ImageTag.source == "human").order_by(ImageTag.class_id)):
            tags[image_id].append(class_id)
        masks = dict(session.execute(select(Mask.image_id, Mask.source).where(Mask.image_id.in_(ids))).all())
        if run_id is not None:
            scores = dict(session.execute(select(PseudoLabel.image_id, PseudoLabel.score).where(
                PseudoLabel.image_id.in_(ids), PseudoLabel.run_id == run_id)).all())
    return {i: (tuple(tags[i]), masks.get(i), scores.get(i)) for i in ids}
