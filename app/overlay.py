"""Drawing label maps: colour lookup, blending over the photo, resizing, and the class legend."""

from __future__ import annotations

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


