"""Label maps as bytes, and class colours.

A label map is an ``(H, W) uint8`` array of class indices, ``IGNORE_INDEX`` (255) for unknown
pixels. It is stored as a single-channel 8-bit PNG, which is lossless.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image as PILImage

from slrnet.config import IGNORE_INDEX

IGNORE_COLOR = "#ffffff"
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def encode_label_png(arr: np.ndarray) -> bytes:
    """PNG bytes (mode ``L``) of a 2-D ``uint8`` label map."""
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"a label map must be a 2-D uint8 array, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(arr), mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_label_png(data: bytes) -> np.ndarray:
    """The ``(H, W) uint8`` label map held in PNG bytes written by :func:`encode_label_png`.

    Indexed (palette) PNGs give their raw indices, not their colours.
    """
    with PILImage.open(io.BytesIO(data)) as im:
        if im.mode not in ("L", "P"):
            raise ValueError(f"a label PNG must be single-channel 8-bit, got mode {im.mode}")
        return np.array(im, dtype=np.uint8)


def default_color(index: int) -> str:
    """A distinct colour for class ``index`` (the PASCAL VOC colour scheme: 0 black, 1 dark red, ...)."""
    r = g = b = 0
    value = index
    for bit in range(7, -1, -1):
        r |= (value & 1) << bit
        g |= ((value >> 1) & 1) << bit
        b |= ((value >> 2) & 1) << bit
        value >>= 3
    return rgb_to_hex((r, g, b))


def default_palette(n: int) -> list[str]:
    """``default_color`` of indices ``0 .. n-1``."""
    return [default_color(i) for i in range(n)]


def is_hex_color(value: str) -> bool:
    """True for ``#rrggbb`` strings."""
    return bool(_HEX.match(value))


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> ``(r, g, b)``."""
    if not is_hex_color(color):
        raise ValueError(f"not a #rrggbb colour: {color!r}")
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def rgb_to_hex(rgb: tuple[int, int, int]) -> str:
    """``(r, g, b)`` -> ``"#rrggbb"``."""
    r, g, b = rgb
    return f"#{r:02x}{g:02x}{b:02x}"


def colorize(label_map: np.ndarray, colors: list[str]) -> np.ndarray:
    """An ``(H, W, 3) uint8`` RGB picture of a label map; ``colors[i]`` is class ``i``'s colour.

    Ignore pixels and indices without a colour are drawn in ``IGNORE_COLOR``.
    """
    lut = np.tile(np.array(hex_to_rgb(IGNORE_COLOR), dtype=np.uint8), (256, 1))
    for i, color in enumerate(colors[:IGNORE_INDEX]):
        lut[i] = hex_to_rgb(color)
    return lut[label_map]
