"""Image files on disk: the content-addressed store, pixel loading and thumbnails.

Images are stored byte-for-byte under ``<data_dir>/images/<sha[:2]>/<sha>.<ext>`` where ``sha`` is
the SHA-256 of the bytes. Everybody loads pixels through :func:`read_rgb`, which applies the EXIF
orientation, so widths/heights, masks and pseudo-labels all refer to the upright image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

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
    """What :func:`inspect_image` learned: the upright size and the store's extension."""

    width: int
    height: int
    ext: str


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
        limit = min(max_pixels, 2 * (PILImage.MAX_IMAGE_PIXELS or max_pixels))
        raise ImageFileError(f"image is over the pixel limit of {limit}") from exc
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
    return ImageMeta(width=width, height=height, ext=ext)


def read_rgb(path: str | Path) -> np.ndarray:
    """The upright (EXIF orientation applied) RGB pixels of an image file: ``(H, W, 3) uint8``."""
    with PILImage.open(path) as im:
        upright = ImageOps.exif_transpose(im)
        if upright.mode.startswith("I;16"):  # 16-bit grayscale: keep the range, not the low byte
            gray = (np.asarray(upright, dtype=np.uint32) // 257).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        return np.asarray(upright.convert("RGB"), dtype=np.uint8)


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ImageStore:
    """The content-addressed image files under a data dir, and their thumbnail cache."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.thumbs_dir = self.data_dir / "thumbs"

    @staticmethod
    def relpath_for(sha256: str, ext: str) -> str:
        """The store path (relative to the data dir, POSIX) of content ``sha256`` with ``ext``."""
        return f"images/{sha256[:2]}/{sha256}.{ext}"

    def abspath(self, relpath: str) -> Path:
        """Absolute path of a store path as held in ``Image.path``."""
        return self.data_dir / relpath

    def put(self, data: bytes, ext: str) -> tuple[str, str, bool]:
        """Store ``data``; returns ``(sha256, relpath, created)``, ``created`` False if it was there."""
        sha = sha256_bytes(data)
        relpath = self.relpath_for(sha, ext)
        target = self.abspath(relpath)
        if target.is_file():
            return sha, relpath, False
        _write_atomic(target, data)
        logger.debug("stored %s", relpath)
        return sha, relpath, True

    def remove(self, relpath: str) -> None:
        """Delete a stored file and its thumbnails (missing files are fine)."""
        self.abspath(relpath).unlink(missing_ok=True)
        sha = Path(relpath).stem
        for thumb in self.thumbs_dir.glob(f"{sha[:2]}/{sha}_*.jpg"):
            thumb.unlink(missing_ok=True)

    def read_rgb(self, relpath: str) -> np.ndarray:
        """:func:`read_rgb` of a store path."""
        return read_rgb(self.abspath(relpath))

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
        _write_atomic(target, buf.getvalue())
        return target
