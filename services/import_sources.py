"""Where imported images come from: the files of a folder or the entries of a .zip archive.

Zip entries are read in memory, never extracted; an entry whose path would leave the archive's
folder (absolute, ``..``, a drive letter) or that is a symbolic link is refused. Against zip
amplification, the archive's directory must declare at most :data:`MAX_ARCHIVE_BYTES` in all and
at most :data:`MAX_RATIO` times the archive's size (small archives aside), and while reading, no
entry may yield more than it declares (the directory can lie).
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from services.errors import UserError
from storage.files import IMAGE_SUFFIXES

_SKIPPED_DIRS = frozenset({"__MACOSX"})
MAX_ARCHIVE_BYTES = 16 << 30  # uncompressed, all entries together
MAX_RATIO = 100  # uncompressed / compressed, for the archive and for each entry
SMALL_BYTES = 64 << 20  # below this much uncompressed, any ratio is harmless


@dataclass(frozen=True)
class ImageSource:
    """One image file to import."""

    name: str  # the file name it is imported as (no folders)
    origin: str  # where it came from, for messages
    size: int  # bytes, as the file system or the archive declares
    open: Callable[[], IO[bytes]]

    def read(self, limit: int | None = None) -> bytes:
        """All the bytes; a :class:`UserError` when there are more than :attr:`size` (or ``limit``)."""
        cap = self.size if limit is None else min(self.size, limit)
        with self.open() as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise UserError(f"{self.origin}: holds more bytes than its declared size of {self.size}")
        return data


IMPORT_ROOTS_ENV = "SLRNET_IMPORT_ROOTS"


def parse_import_roots(folders: Sequence[str | Path] = (), env: str | None = None) -> tuple[Path, ...]:
    """The import roots from ``--import-root`` values and the ``os.pathsep``-separated
    ``$SLRNET_IMPORT_ROOTS``: existing folders, resolved (symbolic links followed)."""
    raw = [*folders, *(p for p in (env or "").split(os.pathsep) if p.strip())]
    roots: list[Path] = []
    for value in raw:
        root = Path(value).expanduser().resolve()
        if not root.is_dir():
            raise UserError(f"import root {root} is not a folder")
        if root not in roots:
            roots.append(root)
    return tuple(roots)


def check_server_path(roots: Sequence[Path], value: str, what: str) -> Path:
    """A path typed into the web UI, resolved after symbolic links, if it lies under one of the
    import roots; a :class:`UserError` otherwise that says nothing about what is on the disk."""
    if not roots:
        raise UserError("importing from folders on the server is off (serve --import-root DIR turns it on)")
    path = Path(value.strip()).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UserError(f"the {what} must lie under an import root ({', '.join(map(str, roots))})")
    return resolved


def confine(path: Path, within: Sequence[Path], origin: str) -> Path:
    """``path`` when ``within`` is empty or it resolves (symbolic links followed) under one of
    those folders; else a :class:`UserError`: a link inside an import root must not reach files
    outside it."""
    if within and not any(path.resolve().is_relative_to(root) for root in within):
        raise UserError(f"{origin}: links to a file outside the import roots; not read")
    return path


def _skipped(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p in _SKIPPED_DIRS for p in parts)


def _check_suffix(name: str, origin: str) -> None:
    if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
        supported = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UserError(f"{origin}: not an image file (supported: {supported})")


def _folder_sources(root: Path, shown: str | None = None, within: Sequence[Path] = ()) -> list[ImageSource]:
    """``shown``: what messages call the folder instead of its path (an upload's staging folder);
    ``within``: see :func:`confine`."""
    sources = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if _skipped(rel.parts) or not path.is_file():
            continue
        origin = str(path) if shown is None else f"{shown}{rel.as_posix()}"
        _check_suffix(path.name, origin)
        confine(path, within, origin)
        sources.append(
            ImageSource(name=path.name, origin=origin, size=path.stat().st_size,
                        open=lambda p=path: p.open("rb"))
        )
    return sources


def _safe_member_path(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise UserError(f"{archive.name}: entry {info.filename!r} escapes the archive's folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UserError(f"{archive.name}: entry {info.filename!r} is a symbolic link")
    return PurePosixPath(name)


def _check_amplification(archive: Path, infos: list[zipfile.ZipInfo], shown: str) -> None:
    """Refuse archives whose directory declares too much, or too much per compressed byte."""
    total = sum(i.file_size for i in infos)
    if total > MAX_ARCHIVE_BYTES:
        raise UserError(
            f"{shown}: the archive unpacks to {total} bytes, over the limit of {MAX_ARCHIVE_BYTES}"
        )
    packed = max(1, archive.stat().st_size)
    if total > SMALL_BYTES and total > MAX_RATIO * packed:
        raise UserError(
            f"{shown}: the archive unpacks to {total} bytes, over {MAX_RATIO} times its size (a zip bomb?)"
        )
    for i in infos:
        if i.file_size > SMALL_BYTES and i.file_size > MAX_RATIO * max(1, i.compress_size):
            raise UserError(
                f"{shown}: entry {i.filename!r} unpacks to {i.file_size} bytes, over {MAX_RATIO} "
                "times its compressed size (a zip bomb?)"
            )


def _zip_sources(archive: Path, zf: zipfile.ZipFile, shown: str | None = None) -> list[ImageSource]:
    sources = []
    infos = zf.infolist()
    _check_amplification(archive, infos, shown or str(archive))
    for info in sorted(infos, key=lambda i: i.filename):
        member = _safe_member_path(info, archive)
        if info.is_dir() or _skipped(member.parts):
            continue
        origin = f"{shown or archive}:{info.filename}"
        _check_suffix(member.name, origin)
        sources.append(
            ImageSource(name=member.name, origin=origin, size=info.file_size, open=lambda i=info: zf.open(i))
        )
    return sources


@contextmanager
def open_sources(path: Path, within: Sequence[Path] = ()) -> Iterator[list[ImageSource]]:
    """The image files of a folder or a .zip (readable while the context is open).

    Hidden files and folders (and ``__MACOSX``) are skipped; any other file that is not named like
    an image is a :class:`UserError`, as are unsafe archive entries, an empty source and, with
    ``within``, a file that resolves outside those folders.
    """
    confine(path, within, str(path))
    if path.is_dir():
        sources = _folder_sources(path, within=within)
        if not sources:
            raise UserError(f"no images found in {path}")
        yield sources
        return
    if not path.is_file() or path.suffix.lower() != ".zip":
        raise UserError(f"{path} is neither a folder nor a .zip file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: not a readable zip archive ({exc})") from exc
    with zf:
        sources = _zip_sources(path, zf)
        if not sources:
            raise UserError(f"no images found in {path}")
        yield sources


UPLOAD_IMAGES = "images"  # inside a staged upload: the loose images; the zips lie next to it


@contextmanager
def open_upload_sources(folder: Path) -> Iterator[list[ImageSource]]:
    """The images of one staged upload (its loose images and every zip's), as one import.
    Messages name the uploaded files, never the staging folder."""
    with ExitStack() as stack:
        sources: list[ImageSource] = []
        images = folder / UPLOAD_IMAGES
        if images.is_dir():
            sources += _folder_sources(images, shown="")
        for archive in sorted(folder.glob("*.zip")):
            try:
                zf = stack.enter_context(zipfile.ZipFile(archive))
            except (zipfile.BadZipFile, OSError) as exc:
                raise UserError(f"{archive.name}: not a readable zip archive ({exc})") from exc
            sources += _zip_sources(archive, zf, shown=archive.name)
        if not sources:
            raise UserError("no images in the upload")
        yield sources
