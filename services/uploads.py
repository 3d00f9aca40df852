"""Browser uploads staged under ``<data dir>/uploads/<id>/`` until their import job has run:
:func:`stage_upload` copies them there, ``services.importing.import_dataset`` imports such a
folder and deletes it (:func:`consumed`), and stale ones (their job never ran) are swept."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from services.context import Studio
from services.errors import UserError
from services.import_sources import UPLOAD_IMAGES
from storage.files import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"  # under the data dir: uploads staged until their import job has run
STALE_UPLOAD_S = 86400.0  # a staged upload this old belongs to a job that never ran (cancelled, lost)


def _unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext``, ... if an earlier file of the upload has it."""
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{Path(name).stem}-{n}{Path(name).suffix}"
    taken.add(candidate.lower())
    return candidate


def stage_upload(studio: Studio, files: Sequence[Path]) -> Path:
    """Copy uploaded files into a fresh ``<data dir>/uploads/<id>/`` (they must outlive the
    browser's upload cache until the import job has run) and return that folder: images under
    names unique within the upload (a second ``a.jpg`` becomes ``a-2.jpg``), zips as they are.
    Import it with ``import_dataset(..., staged_upload=True)``, which deletes it at the end."""
    if not files:
        raise UserError("choose some images or a .zip to upload first")
    others = [p.name for p in files if p.suffix.lower() not in (*IMAGE_SUFFIXES, ".zip")]
    if others:
        raise UserError(f"not an image or a .zip: {', '.join(others[:5])}")
    discard_stale_uploads(studio)
    target = studio.data_dir / UPLOADS_DIR / uuid.uuid4().hex
    (target / UPLOAD_IMAGES).mkdir(parents=True)
    try:
        image_names: set[str] = set()
        zip_names: set[str] = set()
        for path in files:
            if path.suffix.lower() == ".zip":
                shutil.copyfile(path, target / _unique_name(path.name, zip_names))
            else:
                shutil.copyfile(path, target / UPLOAD_IMAGES / _unique_name(path.name, image_names))
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise UserError(f"could not keep the uploaded files ({exc.strerror or type(exc).__name__})") from exc
    return target


def discard_upload(studio: Studio, staged: Path) -> None:
    """Delete a staged upload whose import will not run (say, queueing it failed)."""
    shutil.rmtree(_staged_folder(studio, staged), ignore_errors=True)


def discard_stale_uploads(studio: Studio, *, older_than_s: float = STALE_UPLOAD_S) -> int:
    """Delete staged uploads older than ``older_than_s`` (their job was cancelled while queued,
    or its process was killed); returns how many."""
    root = studio.data_dir / UPLOADS_DIR
    cutoff = time.time() - older_than_s
    removed = 0
    for folder in root.glob("*") if root.is_dir() else ():
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def _staged_folder(studio: Studio, path: str | Path) -> Path:
    uploads = (studio.data_dir / UPLOADS_DIR).resolve()
    staged = Path(path).resolve()
    if staged.parent != uploads:
        raise UserError("not a staged upload")
    if not staged.is_dir():
        raise UserError("the uploaded files are gone (the upload was cleaned up): upload them again")
    return staged


def is_staged(studio: Studio, path: str | Path) -> bool:
    """Whether ``path`` is a folder directly under ``<data dir>/uploads/``."""
    return Path(path).resolve().parent == (studio.data_dir / UPLOADS_DIR).resolve()


@contextmanager
def consumed(studio: Studio, path: str | Path) -> Iterator[Path]:
    """The staged upload ``path`` (UserError when it is not one or is gone), deleted on exit
    however the block ends."""
    staged = _staged_folder(studio, path)
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)
        logger.debug("removed staged upload %s", staged.name)
