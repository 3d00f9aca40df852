"""Small synthetic images and label PNGs for storage and import tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def image_bytes(
    width: int, height: int, seed: int = 0, fmt: str = "JPEG", orientation: int | None = None
) -> bytes:
    """An image of random colour blocks (distinct per ``seed``), optionally with an EXIF orientation."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
    pixels = np.pad(pixels, ((0, height - pixels.shape[0]), (0, width - pixels.shape[1]), (0, 0)))
    buf = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        kwargs["exif"] = exif
    Image.fromarray(pixels).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def label_png(label_map: np.ndarray) -> bytes:
    """A grayscale PNG of a label map."""
    buf = io.BytesIO()
    Image.fromarray(label_map.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but that holds almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(
        b"IEND", b""
    )


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
