"""Drawing label maps: colour lookup, blending over the photo, resizing, and the class legend."""

from __future__ import annotations

import colorsys
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from slrnet.config import IGNORE_INDEX
from storage.label_maps import hex_to_rgb

DISPLAY_MAX_SIDE = 1024


def color_lut(colors: Mapping[int, str]) -> np.ndarray:
    """A ``(256, 4) uint8`` lookup: label value -> RGB and 255 alpha; values without a colour get alpha 0."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for value, color in colors.items():
        if 0 <= value < IGNORE_INDEX:
            lut[value] = (*hex_to_rgb(color), 255)
    return lut


def fit_size(size: tuple[int, int], max_side: int, *, upscale: bool = False) -> tuple[int, int]:
    """``(h, w)`` scaled down so that the longer side is at most ``max_side``; with ``upscale``,
    a smaller one is scaled up to it (a 320 px photo fills the view)."""
    h, w = size
    scale = max_side / max(h, w) if upscale else min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A photo resized to ``(h, w)`` (smooth filter); the same array when the size matches."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    return np.asarray(PILImage.fromarray(rgb).resize((size[1], size[0]), PILImage.Resampling.LANCZOS))


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes (labels, masks): values are never mixed."""
    h, w = array.shape[:2]
    if (h, w) == tuple(size):
        return array
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(np.intp)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(np.intp)
    return array[rows[:, None], cols[None, :]]


def blend(rgb: np.ndarray, labels: np.ndarray, lut: np.ndarray, opacity: float) -> np.ndarray:
    """``rgb`` with each labelled pixel mixed with its class colour at ``opacity`` (0..1)."""
    colors = lut[labels]
    alpha = colors[..., 3:4].astype(np.float32) / 255.0 * float(np.clip(opacity, 0.0, 1.0))
    mixed = rgb.astype(np.float32) * (1.0 - alpha) + colors[..., :3].astype(np.float32) * alpha
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def overlay(
    rgb: np.ndarray, labels: np.ndarray, lut: np.ndarray, opacity: float, max_side: int = DISPLAY_MAX_SIDE
) -> np.ndarray:
    """A display-sized picture of ``labels`` over ``rgb`` (both full resolution)."""
    size = fit_size(rgb.shape[:2], max_side)
    return blend(resize_rgb(rgb, size), resize_nearest(labels, size), lut, opacity)


@dataclass(frozen=True)
class ClassShare:
    index: int
    name: str
    color: str
    fraction: float  # of the image's pixels
    confidence: float | None  # mean over the class's pixels, 0..1


def class_shares(
    labels: np.ndarray,
    classes: Sequence[tuple[int, str, str]],
    confidence: np.ndarray | None = None,
) -> list[ClassShare]:
    """The classes present in ``labels`` (largest first) with their share and mean confidence.

    Unknown pixels appear as a last row named "uncertain / unknown" when there are any.
    """
    total = labels.size
    counts = np.bincount(labels.ravel(), minlength=256)
    conf_sums = (
        np.bincount(labels.ravel(), weights=confidence.ravel().astype(np.float64), minlength=256)
        if confidence is not None
        else None
    )
    shares = []
    for index, name, color in classes:
        if counts[index]:
            mean = None if conf_sums is None else float(conf_sums[index] / counts[index])
            shares.append(ClassShare(index, name, color, counts[index] / total, mean))
    shares.sort(key=lambda s: -s.fraction)
    if counts[IGNORE_INDEX]:
        mean = None if conf_sums is None else float(conf_sums[IGNORE_INDEX] / counts[IGNORE_INDEX])
        shares.append(ClassShare(IGNORE_INDEX, "uncertain / unknown", "", counts[IGNORE_INDEX] / total, mean))
    return shares


def legend_html(shares: Sequence[ClassShare]) -> str:
    """A small HTML table: colour swatch, class, share of pixels, mean confidence."""
    if not shares:
        return "<p>No labels.</p>"
    rows = []
    for s in shares:
        swatch = (
            f'<span class="swatch" style="background:{s.color}"></span>'
            if s.color
            else '<span class="swatch swatch-unknown"></span>'
        )
        conf = "" if s.confidence is None else f"{s.confidence:.0%}"
        rows.append(
            f"<tr><td>{swatch}</td><td>{html.escape(s.name)}</td>"
            f"<td>{s.fraction:.1%}</td><td>{conf}</td></tr>"
        )
    return (
        '<table class="legend"><thead><tr><th></th><th>class</th><th>pixels</th><th>confidence</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def palette_html(entries: Sequence[tuple[str, str]]) -> str:
    """Swatches with names, ``entries`` as ``(name, "#rrggbb")``: the brush colours of the editor."""
    items = "".join(
        f'<span class="chip"><span class="swatch" style="background:{color}"></span>'
        f"{html.escape(name)}</span>"
        for name, color in entries
    )
    return f'<div class="palette">{items}</div>'


# Default class colours for projects made in the app (the storage default is the dark PASCAL VOC
# scheme, kept for VOC compatibility). Common "stuff" names get the colour people expect; every
# other class gets, in order, the candidate colour farthest (CIE Lab) from all colours already
# taken, background black and the white of a bright photo included.
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
