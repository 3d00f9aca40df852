"""The paint editor's pixels: what to show in gr.ImageEditor and how painted colours become a mask.

The editor's background is the image (downscaled to at most ``EDIT_MAX_SIDE``) with the starting
label map (a mask or a pseudo-label) blended over it; the user paints on one layer with fixed brush
colours, one per class plus one for "unknown". On save, every painted pixel is mapped to the class
whose colour it has, BY VALUE (nearest palette colour, never by layer order), the painted map is
upscaled nearest-neighbour to the image's full resolution and written over the starting label map.
The eraser removes paint, so an erased pixel keeps its starting label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.overlay import blend, color_lut, fit_size, resize_nearest, resize_rgb
from storage.label_maps import hex_to_rgb, rgb_to_hex
from storage.models import IGNORE_INDEX

logger = logging.getLogger(__name__)

EDIT_MAX_SIDE = 1024
ALPHA_PAINTED = 128  # layer pixels at least this opaque count as painted
# The editor paints brush colours exactly (opaque, no anti-aliasing), so a small tolerance is
# enough; brush colours must be at least twice as far apart so that no pixel is ambiguous.
MAX_COLOR_DISTANCE = 6.0  # farther than this from every brush colour: not a brush stroke
MIN_BRUSH_DISTANCE = 16.0  # brush colours closer than this cannot be told apart reliably
UNKNOWN_NAME = "unknown (ignore)"
# Candidates for the "unknown" brush: the first far enough from every class colour is used.
UNKNOWN_CANDIDATES = ("#e0e0c0", "#ffffff", "#ff00ff", "#00ffff", "#808080")
START_OVERLAY_OPACITY = 0.45


@dataclass(frozen=True)
class BrushColor:
    value: int  # label value it paints (IGNORE_INDEX for "unknown")
    name: str
    color: str  # "#rrggbb"


@dataclass(frozen=True)
class PaintPalette:
    """The brush colours of a project: one per class, then "unknown"."""

    brushes: tuple[BrushColor, ...]

    @classmethod
    def from_classes(cls, classes: Sequence[tuple[int, str, str]]) -> PaintPalette:
        """``classes`` as ``(index, name, "#rrggbb")``; raises ValueError for colours too alike."""
        brushes = [BrushColor(index, name, color.lower()) for index, name, color in classes]
        for i, a in enumerate(brushes):
            for b in brushes[i + 1 :]:
                if color_distance(a.color, b.color) < MIN_BRUSH_DISTANCE:
                    raise ValueError(
                        f"classes {a.name!r} and {b.name!r} have colours too alike to paint with "
                        f"({a.color}, {b.color}); give one of them another colour"
                    )
        unknown = next(
            (
                c
                for c in UNKNOWN_CANDIDATES
                if all(color_distance(c, b.color) >= MIN_BRUSH_DISTANCE for b in brushes)
            ),
            None,
        )
        if unknown is None:
            raise ValueError("no colour is left for the 'unknown' brush; change some class colours")
        return cls((*brushes, BrushColor(IGNORE_INDEX, UNKNOWN_NAME, unknown)))

    @property
    def colors(self) -> list[str]:
        return [b.color for b in self.brushes]

    def lut(self) -> np.ndarray:
        """Label value -> RGB, for drawing label maps in these colours (unknown is not drawn)."""
        return color_lut({b.value: b.color for b in self.brushes if b.value != IGNORE_INDEX})


def color_distance(a: str, b: str) -> float:
    """Euclidean RGB distance of two ``#rrggbb`` colours."""
    return float(np.linalg.norm(np.subtract(hex_to_rgb(a), hex_to_rgb(b))))


@dataclass(frozen=True)
class EditorImage:
    """What the editor shows, and the size it shows it at."""

    background: np.ndarray  # (h, w, 3) uint8
    full_size: tuple[int, int]  # (H, W) of the image
    edit_size: tuple[int, int]  # (h, w) in the editor

    @property
    def scale(self) -> float:
        return self.edit_size[0] / self.full_size[0]


def editor_image(
    rgb: np.ndarray, start: np.ndarray | None, palette: PaintPalette, max_side: int = EDIT_MAX_SIDE
) -> EditorImage:
    """The editor background: ``rgb`` downscaled to ``max_side``, ``start`` labels blended over it."""
    full = rgb.shape[:2]
    edit = fit_size(full, max_side)
    small = resize_rgb(rgb, edit)
    if start is not None:
        small = blend(small, resize_nearest(start, edit), palette.lut(), START_OVERLAY_OPACITY)
    return EditorImage(background=small, full_size=(full[0], full[1]), edit_size=edit)


def painted_labels(layers: Sequence[np.ndarray], palette: PaintPalette) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, painted)`` of the editor's layers, top layer last: labels uint8 by brush colour.

    A pixel is painted where a layer is at least ``ALPHA_PAINTED`` opaque and its colour is within
    ``MAX_COLOR_DISTANCE`` of a brush colour (other colours, e.g. from a pasted picture, are skipped).
    """
    if not layers:
        raise ValueError("the editor sent no layer")
    shape = layers[0].shape[:2]
    labels = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    painted = np.zeros(shape, dtype=bool)
    brush_rgb = np.array([hex_to_rgb(b.color) for b in palette.brushes], dtype=np.float32)
    values = np.array([b.value for b in palette.brushes], dtype=np.uint8)
    for layer in layers:
        layer = np.asarray(layer)
        if layer.shape[:2] != shape:
            layer = resize_nearest(layer, shape)
        if layer.ndim != 3 or layer.shape[2] != 4:
            raise ValueError(f"an editor layer must be RGBA, got shape {layer.shape}")
        opaque = layer[..., 3] >= ALPHA_PAINTED
        if not opaque.any():
            continue
        rgb = layer[opaque][:, :3].astype(np.float32)
        best = np.full(len(rgb), np.inf, dtype=np.float32)
        nearest = np.zeros(len(rgb), dtype=np.intp)
        for k, brush in enumerate(brush_rgb):  # one brush at a time: memory stays O(pixels)
            dist = np.sqrt(((rgb - brush) ** 2).sum(axis=1))
            better = dist < best
            best[better], nearest[better] = dist[better], k
        close = best <= MAX_COLOR_DISTANCE
        if not close.all():
            stray = {rgb_to_hex(tuple(int(v) for v in c)) for c in rgb[~close][:5]}
            logger.warning("%d painted pixels match no brush colour (e.g. %s)", (~close).sum(), stray)
        ys, xs = np.nonzero(opaque)
        labels[ys[close], xs[close]] = values[nearest[close]]
        painted[ys[close], xs[close]] = True
    return labels, painted


def apply_paint(
    start: np.ndarray | None,
    layers: Sequence[np.ndarray],
    palette: PaintPalette,
    full_size: tuple[int, int],
    *,
    unpainted_background: int | None = None,
) -> np.ndarray:
    """The full-resolution label map after painting ``layers`` over ``start`` (None: all unknown).

    The painted map is upscaled nearest-neighbour, so class boundaries stay hard. With
    ``unpainted_background`` set, pixels still unknown afterwards get that class (the user said
    "the rest is background").
    """
    result = (
        np.full(full_size, IGNORE_INDEX, dtype=np.uint8) if start is None else start.astype(np.uint8).copy()
    )
    if result.shape != full_size:
        raise ValueError(f"starting label map is {result.shape}, image is {full_size}")
    if layers:
        labels, painted = painted_labels(layers, palette)
        labels, painted = resize_nearest(labels, full_size), resize_nearest(painted, full_size)
        result[painted] = labels[painted]
    if unpainted_background is not None:
        result[result == IGNORE_INDEX] = unpainted_background
    return result
