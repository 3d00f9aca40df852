"""Image files on disk: the content-addressed store, pixel loading and thumbnails.

Images are stored byte-for-byte under ``<data_dir>/images/<sha[:2]>/<sha>.<ext>`` where ``sha`` is
the SHA-256 of the bytes. A file may be shared by rows of several projects and by imports still
running, so it is only ever deleted through :meth:`ImageStore.remove_unused`: a writer that finds a
file already there "touches" it (moves its mtime forward), and a deleter first renames the file
aside, then keeps it if it was touched since or a row still points to it. Everybody loads pixels
through :func:`read_rgb`, which applies the EXIF
orientation, so widths/heights, masks and pseudo-labels all refer to the upright image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from storage.feature_store import FeatureStore

logger = logging.getLogger(__name__)

# PIL format -> file extension in the store.
IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
THUMB_SIZE = 256
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90 degrees: width and height swap


class ImageFileError(ValueError):
    """The bytes are not a usable image; the message says why (without the file name)."""


@dataclass(frozen=True)
class ImageMeta:
    """What :func:`inspect_image` learned: the upright size, the store's extension, the frames."""

    width: int
    height: int
    ext: str
    frames: int = 1  # more than one: only frame 0 is used (and stored, for TIFF)


HEADER_BYTES = 1 << 18  # enough of most files to read their size (else the file itself is read)


def _bomb_message(max_pixels: int) -> str:
    limit = min(max_pixels, 2 * (PILImage.MAX_IMAGE_PIXELS or max_pixels))
    return f"image is over the pixel limit of {limit}"


def header_size(head: bytes | IO[bytes], *, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` from the first bytes of an image file, or from the open file itself
    (Pillow then reads and seeks only what the header needs, e.g. a JPEG's large metadata or a
    TIFF whose directory follows its pixels; nothing is decoded), at most ``max_pixels``. Raises
    :class:`ImageFileError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with PILImage.open(io.BytesIO(head) if isinstance(head, bytes) else head) as im:
                width, height = im.size
    except PILImage.DecompressionBombError as exc:
        raise ImageFileError(_bomb_message(max_pixels)) from exc
    except Exception as exc:  # PIL raises many types for broken headers
        raise ImageFileError("not an image file") from exc
    if width * height > max_pixels:
        raise ImageFileError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    return width, height


def max_file_bytes(width: int, height: int) -> int:
    """More bytes than any supported file of a ``width`` x ``height`` image needs (16-bit RGBA
    uncompressed, plus metadata): a longer file carries something else."""
    return width * height * 8 + (4 << 20)


def _jpeg_end(data: bytes) -> int | None:
    """Offset just past the JPEG's EOI marker (segments are skipped by length, entropy-coded data
    scanned for the next real marker), or None when the structure is not understood."""
    n, p = len(data), 2
    while p + 2 <= n:
        if data[p] != 0xFF:
            return None
        marker = data[p + 1]
        if marker == 0xFF:  # fill byte
            p += 1
            continue
        if marker == 0xD9:
            return p + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            p += 2
            continue
        if p + 4 > n:
            return None
        p += 2 + int.from_bytes(data[p + 2:p + 4], "big")
        if marker != 0xDA:
            continue
        while True:  # entropy-coded data: up to a marker that is not stuffing or a restart
            q = data.find(b"\xff", p)
            if q < 0 or q + 1 >= n:
                return None
            follower = data[q + 1]
            if follower == 0x00 or 0xD0 <= follower <= 0xD7:
                p = q + 2
            elif follower == 0xFF:
                p = q + 1
            else:
                p = q
                break
    return None


def _png_end(data: bytes) -> int | None:
    p, n = 8, len(data)
    while p + 12 <= n:
        length = int.from_bytes(data[p:p + 4], "big")
        kind = data[p + 4:p + 8]
        p += 12 + length
        if kind == b"IEND":
            return p if p <= n else None
    return None


def _webp_end(data: bytes) -> int | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    end = 8 + int.from_bytes(data[4:8], "little")
    end += end % 2
    return end if end <= len(data) else None


def _reencoded(data: bytes, fmt: str) -> bytes:
    """Frame 0, upright, written again losslessly in ``fmt`` (BMP, TIFF with deflate)."""
    with PILImage.open(io.BytesIO(data)) as im:
        upright = ImageOps.exif_transpose(im)
        buf = io.BytesIO()
        if fmt == "TIFF":
            upright.save(buf, format="TIFF", compression="tiff_adobe_deflate")
        else:
            upright.save(buf, format=fmt)
    return buf.getvalue()


def storable_bytes(data: bytes, meta: ImageMeta) -> bytes:
    """The bytes of a validated image to keep: nothing after the image's end. JPEG is cut after
    EOI, PNG after IEND, WebP after its RIFF size (lossless cuts, clean files stay as they are);
    TIFF (frame 0) and a BMP with bytes past its declared size are written again, losslessly."""
    end: int | None = None
    match meta.ext:
        case "jpg":
            end = _jpeg_end(data)
        case "png":
            end = _png_end(data)
        case "webp":
            end = _webp_end(data)
        case "bmp":
            declared = int.from_bytes(data[2:6], "little")
            if declared == len(data):
                return data
            return _reencoded(data, "BMP")
        case "tif":
            return _reencoded(data, "TIFF")
    if end is None or end >= len(data):
        return data
    logger.debug("dropping %d bytes after the image's end", len(data) - end)
    return data[:end]


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def inspect_image(data: bytes, *, max_pixels: int) -> ImageMeta:
    """Validate image bytes: a supported format, at most ``max_pixels``, and fully decodable.

    The pixel limit is checked from the header, before anything is decoded (decompression bombs).
    Raises :class:`ImageFileError`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            im = PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as exc:  # Pillow's own guard, a hard ceiling
        raise ImageFileError(_bomb_message(max_pixels)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError("not an image file") from exc
    with im:
        ext = IMAGE_FORMATS.get(im.format or "")
        if ext is None:
            raise ImageFileError(f"unsupported image format {im.format}")
        width, height = im.size
        if width * height > max_pixels:
            raise ImageFileError(
                f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
            )
        try:
            im.load()
        except Exception as exc:  # PIL raises many types for broken data
            raise ImageFileError(f"corrupt or truncated image ({exc})") from exc
        if im.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        frames = int(getattr(im, "n_frames", 1) or 1)
    return ImageMeta(width=width, height=height, ext=ext, frames=frames)


def read_rgb(path: str | Path) -> np.ndarray:
    """The upright (EXIF orientation applied) RGB pixels of an image file: ``(H, W, 3) uint8``."""
    with PILImage.open(path) as im:
        return _rgb_array(ImageOps.exif_transpose(im))


def read_rgb_reduced(path: str | Path, min_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`read_rgb` of a JPEG decoded at a reduced scale (1/2 .. 1/8, its longer side still at
    least ``min_side``), with the full upright ``(H, W)``: a 48 MP photo needs ~1/64 of the memory.
    Other formats decode at full size."""
    with PILImage.open(path) as im:
        width, height = im.size
        if im.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        if im.format == "JPEG" and max(im.size) > 2 * min_side:
            scale = min_side / max(im.size)
            im.draft("RGB", (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))))
        return _rgb_array(ImageOps.exif_transpose(im)), (height, width)


def _rgb_array(upright: PILImage.Image) -> np.ndarray:
    if upright.mode.startswith("I;16"):  # 16-bit grayscale: keep the range, not the low byte
        gray = (np.asarray(upright, dtype=np.uint32) // 257).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(upright.convert("RGB"), dtype=np.uint8)


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` whole or not at all: a temporary file in the same folder,
    then ``os.replace`` (readers see the old file, the new one, or none)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Stored(NamedTuple):
    """What :meth:`ImageStore.put` did: the content's path, whether this call wrote the file,
    and the file's mtime right after (a later, different mtime means someone else touched it)."""

    sha256: str
    relpath: str
    created: bool
    mtime_ns: int


ASIDE_PREFIX = ".del-"  # files being deleted: renamed aside first
TMP_PREFIX = ".tmp-"


class ImageStore:
    """The content-addressed image files under a data dir, and what is derived from them: the
    thumbnail cache and, when given, the feature store (both go with the file)."""

    def __init__(self, data_dir: str | Path, features: FeatureStore | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.thumbs_dir = self.data_dir / "thumbs"
        self.features = features

    @staticmethod
    def relpath_for(sha256: str, ext: str) -> str:
        """The store path (relative to the data dir, POSIX) of content ``sha256`` with ``ext``."""
        return f"images/{sha256[:2]}/{sha256}.{ext}"

    def abspath(self, relpath: str) -> Path:
        """Absolute path of a store path as held in ``Image.path``."""
        return self.data_dir / relpath

    def put(self, data: bytes, ext: str) -> Stored:
        """Store ``data`` (or touch the file if the content is there already)."""
        sha = sha256_bytes(data)
        relpath = self.relpath_for(sha, ext)
        target = self.abspath(relpath)
        while True:  # a concurrent clean-up may set the file aside at any moment: then again
            mtime = self.touch(relpath)
            if mtime is not None:
                return Stored(sha, relpath, False, mtime)
            write_atomic(target, data)
            try:
                mtime = target.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            logger.debug("stored %s", relpath)
            return Stored(sha, relpath, True, mtime)

    def touch(self, relpath: str) -> int | None:
        """Mark a stored file as in use now: its mtime moves forward (always to a new value).
        Returns that mtime, or None when the file is not there."""
        target = self.abspath(relpath)
        try:
            st = target.stat()
            mtime = max(time.time_ns(), st.st_mtime_ns + 1)
            os.utime(target, ns=(st.st_atime_ns, mtime))
        except FileNotFoundError:
            return None
        return mtime

    def stored_files(self) -> list[tuple[str, int]]:
        """``(relpath, mtime_ns)`` of every stored image file (not temporary or aside files)."""
        out = []
        for path in self.images_dir.glob("*/*"):
            if path.name.startswith((ASIDE_PREFIX, TMP_PREFIX)) or not path.is_file():
                continue
            try:
                out.append((path.relative_to(self.data_dir).as_posix(), path.stat().st_mtime_ns))
            except FileNotFoundError:
                continue
        return out

    def leftover_temporaries(self, older_than_ns: int) -> int:
        """Delete temporary and aside files older than ``older_than_ns`` (left by a killed process)."""
        removed = 0
        for path in self.images_dir.glob("*/.*"):
            if not path.name.startswith((ASIDE_PREFIX, TMP_PREFIX)):
                continue
            try:
                if path.stat().st_mtime_ns < older_than_ns:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def remove_unused(
        self, relpaths: Iterable[str], still_used: Callable[[dict[str, int]], set[str]]
    ) -> list[str]:
        """Delete stored files (and their thumbnails and features) unless they are still used;
        returns the deleted. This is the one place image content leaves the data dir.

        Each file is first renamed aside, so that a concurrent :meth:`put` of the same content
        writes a fresh copy instead of relying on this one; then ``still_used({relpath: mtime_ns})``
        names the files to put back (say, those a row points to or that were touched since).
        """
        aside: dict[str, tuple[Path, int]] = {}
        for relpath in dict.fromkeys(relpaths):
            target = self.abspath(relpath)
            moved = target.with_name(f"{ASIDE_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}")
            try:
                os.rename(target, moved)
                aside[relpath] = (moved, moved.stat().st_mtime_ns)
            except FileNotFoundError:
                continue
        keep = still_used({r: m for r, (_, m) in aside.items()}) if aside else set()
        removed = []
        for relpath, (moved, _) in aside.items():
            if relpath in keep:
                with contextlib.suppress(FileExistsError):  # a concurrent put wrote the bytes again
                    os.link(moved, self.abspath(relpath))
                moved.unlink()
                continue
            moved.unlink()
            self._remove_derived(relpath)
            removed.append(relpath)
        return removed

    def _remove_derived(self, relpath: str) -> None:
        sha = Path(relpath).stem
        for thumb in self.thumbs_dir.glob(f"{sha[:2]}/{sha}_*.jpg"):
            thumb.unlink(missing_ok=True)
        if self.features is not None:
            self.features.remove_content(sha)

    def read_rgb(self, relpath: str) -> np.ndarray:
        """:func:`read_rgb` of a store path."""
        return read_rgb(self.abspath(relpath))

    def read_rgb_reduced(self, relpath: str, min_side: int) -> tuple[np.ndarray, tuple[int, int]]:
        """:func:`read_rgb_reduced` of a store path."""
        return read_rgb_reduced(self.abspath(relpath), min_side)

    def thumbnail(self, relpath: str, size: int = THUMB_SIZE) -> Path:
        """Path of a JPEG thumbnail (longest side ``size``, upright) of a stored image, cached on disk."""
        sha = Path(relpath).stem
        target = self.thumbs_dir / sha[:2] / f"{sha}_{size}.jpg"
        if target.is_file():
            return target
        thumb = PILImage.fromarray(self.read_rgb(relpath))
        thumb.thumbnail((size, size))
        buf = io.BytesIO()
        thumb.save(buf, format="JPEG", quality=85)
        write_atomic(target, buf.getvalue())
        return target
