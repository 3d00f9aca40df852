"""The content-addressed image store's housekeeping: removing stored files that no image row
uses, after a failed import (:func:`discard_created`) or a killed one (:func:`sweep_unreferenced_files`).
Safe while imports run: they touch the files they rely on (see :mod:`storage.files`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from services.context import Studio
from storage import images as image_repo

logger = logging.getLogger(__name__)

ORPHAN_MIN_AGE_S = 3600.0  # an unreferenced stored file younger than this may belong to a running import


def discard_created(studio: Studio, created: dict[str, int]) -> None:
    """Delete the files a failed import wrote, except those another writer uses meanwhile: a row
    points to them (any project, checked after they are set aside) or a concurrent import
    touched them since this one wrote them."""

    def still_used(aside: dict[str, int]) -> set[str]:
        with studio.Session.begin() as session:
            referenced = image_repo.referenced_paths(session, aside)
        return referenced | {r for r, mtime in aside.items() if mtime != created.get(r)}

    removed = studio.images.remove_unused(created, still_used)
    logger.debug("failed import: removed %d of the %d files it stored", len(removed), len(created))


def sweep_unreferenced_files(studio: Studio, *, min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
    """Delete stored image files no row points to and nobody touched for ``min_age_s`` (left by
    an import that was killed), and stale temporary files; returns how many image files went.
    Safe while imports run: they touch the files they rely on (see :mod:`storage.files`)."""
    cutoff = time.time_ns() - int(min_age_s * 1e9)
    studio.images.leftover_temporaries(cutoff)
    files = dict(studio.images.stored_files())
    with studio.Session.begin() as session:
        referenced = image_repo.referenced_paths(session)
    candidates = [r for r, mtime in files.items() if mtime < cutoff and r not in referenced]
    if not candidates:
        return 0

    def still_used(aside: dict[str, int]) -> set[str]:
        with studio.Session.begin() as session:
            now_referenced = image_repo.referenced_paths(session, aside)
        return now_referenced | {r for r, mtime in aside.items() if mtime >= cutoff}

    removed = studio.images.remove_unused(candidates, still_used)
    if removed:
        logger.info("removed %d stored image files no image row points to", len(removed))
    return len(removed)


def sweep_orphan_features(studio: Studio) -> int:
    """Delete stored features of image contents that are no longer in the image store (a fill
    that was computing while its image left); returns how many contents' features went."""
    with_features = studio.features.contents()  # listed before the images: a feature written
    stored = {Path(relpath).stem for relpath, _ in studio.images.stored_files()}  # later has its image
    orphans = with_features - stored
    for sha in orphans:
        studio.features.remove_content(sha)
    if orphans:
        logger.info("removed the stored features of %d images no longer stored", len(orphans))
    return len(orphans)
