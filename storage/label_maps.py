"""Label maps as bytes, and class colours.

A label map is an ``(H, W) uint8`` array of class indices, ``IGNORE_INDEX`` (255) for unknown
pixels. It is stored as a single-channel 8-bit PNG, which is lossless.
"""

from __future__ import annotations

import colorsys
import io
import re
from collections.abc import Sequence

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


# Default class colours, the one rule every way of making or changing classes uses (app, CLI,
# imports): common "stuff" names get the colour people expect; every other class gets, in order,
# the candidate colour farthest (CIE Lab) from all colours already taken, background black and the
# white of a bright photo included.
MEANINGFUL_COLORS = {
    "sky": "#6ec1f5", "cloud": "#c9d9e8", "clouds": "#c9d9e8",
    "grass": "#57b52d", "field": "#a7c440", "lawn": "#57b52d",
    "tree": "#1e6b2c", "trees": "#1e6b2c", "vegetation": "#2f8f3c", "plant": "#3aa655", "bush": "#4d7d2a",
    "water": "#1f5fd1", "sea": "#1f5fd1", "river": "#2b7de0", "lake": "#2b7de0", "ocean": "#1a4fb0",
    "road": "#7d7d7d", "street": "#7d7d7d", "sidewalk": "#b9a68e", "pavement": "#b9a68e",
    "building": "#b4533a", "house": "#b4533a", "wall": "#c9a17c", "fence": "#8a6a3b", "bridge": "#8f7f6b",
    "mountain": "#8b7560", "rock": "#6c6760", "sand": "#e6cc8a", "beach": "#e6cc8a", "snow": "#e9f1f8",
    "ground": "#9a7a52", "dirt": "#9a7a52", "earth": "#9a7a52", "floor": "#a6876a", "ceiling": "#ddd8c8",
}
BACKGROUND_COLOR = "#000000"
_CANDIDATE_HUES = 48


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``(..., 3)`` in 0..255 -> CIE Lab (D65)."""
    c = rgb / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(v):02x}" for v in rgb)


def _candidates() -> list[str]:
    """Saturated, muted, dark and pale colours around the hue circle (no greys)."""
    out = []
    for k in range(_CANDIDATE_HUES):
        for saturation, value in ((0.9, 0.95), (0.65, 0.75), (0.9, 0.6), (0.45, 0.95)):
            out.append(_hex(np.array(colorsys.hsv_to_rgb(k / _CANDIDATE_HUES, saturation, value)) * 255))
    return out


def meaningful_color(name: str) -> str | None:
    """The expected colour of a common stuff class (``"Sky"``, ``"grass"``, ``"trees"``), else None."""
    key = name.strip().lower()
    return MEANINGFUL_COLORS.get(key) or MEANINGFUL_COLORS.get(key.removesuffix("s"))


def class_colors(names: Sequence[str], given: Sequence[str | None], background: int | None) -> list[str]:
    """Colours for classes ``names``: the ``given`` ones kept, ``background`` (an index, or None)
    black, stuff names their usual colour, the others far from every colour taken."""
    out: list[str | None] = list(given)
    for k, name in enumerate(names):
        if out[k] is None:
            out[k] = BACKGROUND_COLOR if k == background else meaningful_color(name)
    candidates = _candidates()
    cand_lab = _lab(np.array([hex_to_rgb(c) for c in candidates], float))
    taken = _lab(np.array([hex_to_rgb(c) for c in [*filter(None, out), BACKGROUND_COLOR, "#ffffff"]], float))
    nearest = np.linalg.norm(cand_lab[:, None] - taken[None], axis=2).min(axis=1)
    for k in range(len(out)):
        if out[k] is None:
            pick = int(np.argmax(nearest))
            out[k] = candidates[pick]
            nearest = np.minimum(nearest, np.linalg.norm(cand_lab - cand_lab[pick], axis=1))
    return [c for c in out if c is not None]


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
