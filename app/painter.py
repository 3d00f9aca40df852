"""The painter's pixels: what the canvas editor (app/static/painter.js) gets and how its painting
becomes a mask.

The editor works at the image's size downscaled to at most ``EDIT_MAX_SIDE``: it gets the picture,
the starting label map (a mask or a pseudo-label) and superpixel ids at that size, all as PNG / JPEG
data URLs in one JSON document. It sends back one RGBA PNG of the same size: red = the painted
label value, green = 255 where the user painted (the eraser un-paints, so an erased pixel keeps its
starting label). On save the painted map is upscaled nearest-neighbour to the image's full
resolution and written over the starting label map, so class boundaries stay hard.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from app.overlay import color_lut, fit_size, resize_nearest
from app.superpixels import DEFAULT_LEVEL, encode_ids
from slrnet.config import IGNORE_INDEX
from storage.label_maps import hex_to_rgb

logger = logging.getLogger(__name__)

EDIT_MAX_SIDE = 1024
UNKNOWN_NAME = "unknown (ignore)"
# Candidates for the "unknown" brush swatch: the first far enough from every class colour is used.
UNKNOWN_CANDIDATES = ("#e0e0c0", "#ffffff", "#ff00ff", "#00ffff", "#808080")
MIN_SWATCH_DISTANCE = 16.0
HOTKEYS = "123456789"  # the first nine brushes get these keys (shown on their buttons)
UNKNOWN_KEY = "u"
JPEG_QUALITY = 90


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
        """``classes`` as ``(index, name, "#rrggbb")``, then the "unknown" brush. Painting is by
        value, so alike colours are allowed (the editor shows names and keys too)."""
        brushes = [BrushColor(index, name, color.lower()) for index, name, color in classes]
        unknown = next(
            (
                c
                for c in UNKNOWN_CANDIDATES
                if all(color_distance(c, b.color) >= MIN_SWATCH_DISTANCE for b in brushes)
            ),
            UNKNOWN_CANDIDATES[0],
        )
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


def edit_size(full_size: tuple[int, int], max_side: int = EDIT_MAX_SIDE) -> tuple[int, int]:
    """``(h, w)`` the editor works at for an image of ``full_size``."""
    return fit_size(full_size, max_side)


def data_url(array: np.ndarray, fmt: str = "PNG") -> str:
    """A ``data:`` URL of an image array (PNG lossless; JPEG for photos)."""
    buf = io.BytesIO()
    image = PILImage.fromarray(np.ascontiguousarray(array))
    if fmt == "JPEG":
        image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buf, format="PNG", compress_level=1)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _key(position: int, brush: BrushColor) -> str:
    if brush.value == IGNORE_INDEX:
        return UNKNOWN_KEY
    return HOTKEYS[position] if position < len(HOTKEYS) else ""


def brush_entries(palette: PaintPalette) -> list[dict]:
    """The editor's palette: value, name, colour and hotkey of each brush (unknown last)."""
    return [
        {"value": b.value, "name": b.name, "color": b.color, "key": _key(k, b)}
        for k, b in enumerate(palette.brushes)
    ]


def opening_token(image_id: int, version: str, start: str, start_png: bytes | None,
                  edit_size: tuple[int, int]) -> str:
    """What a painting is of: the image, its mask version, what it started from (kind and
    labels) and the edit size. Two openings of the same thing get the same token, so a page whose
    image was opened twice at once (a tab switch and a button both loading it) saves whichever
    copy the editor shows; any other difference refuses the save."""
    digest = hashlib.sha256(f"{image_id}|{version}|{start}|{edit_size[0]}x{edit_size[1]}|".encode())
    digest.update(start_png or b"")
    return digest.hexdigest()[:32]


def editor_document(
    *,
    token: str,
    image_id: int,
    version: str,
    name: str,
    rgb: np.ndarray,
    start: np.ndarray | None,
    region_ids: np.ndarray,
    palette: PaintPalette,
    background: int | None,
) -> dict:
    """The JSON document that opens an image in the editor. ``rgb``, ``start`` and the region
    levels ``region_ids`` (``(levels, h, w)``, fine to coarse) must already be at the edit size."""
    h, w = rgb.shape[:2]
    if (start is not None and start.shape != (h, w)) or region_ids.shape[1:] != (h, w):
        raise ValueError("the picture, its labels and its regions must have one size")
    return {
        "token": token,
        "image_id": image_id,
        "version": version,
        "name": name,
        "width": w,
        "height": h,
        "image": data_url(rgb, "JPEG"),
        "labels": None if start is None else data_url(start.astype(np.uint8)),
        "regions": [data_url(encode_ids(ids)) for ids in region_ids],
        "region_level": min(DEFAULT_LEVEL, len(region_ids) - 1),
        "classes": brush_entries(palette),
        "background": background,
    }


def decode_painting(url_or_png: str | bytes, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, painted)`` of the editor's RGBA PNG (a data URL or bytes) of ``size`` (h, w)."""
    if isinstance(url_or_png, str):
        head, _, body = url_or_png.partition(",")
        if not head.startswith("data:image/png;base64"):
            raise ValueError("the painting is not a PNG data URL")
        url_or_png = base64.b64decode(body, validate=True)
    with PILImage.open(io.BytesIO(url_or_png)) as image:
        if image.format != "PNG":
            raise ValueError("the painting is not a PNG")
        pixels = np.asarray(image.convert("RGBA"))
    if pixels.shape[:2] != tuple(size):
        raise ValueError(f"the painting is {pixels.shape[1]}x{pixels.shape[0]}, expected {size[1]}x{size[0]}")
    painted = pixels[..., 1] >= 128
    return np.where(painted, pixels[..., 0], IGNORE_INDEX).astype(np.uint8), painted


def apply_paint(
    start: np.ndarray | None,
    labels: np.ndarray,
    painted: np.ndarray,
    full_size: tuple[int, int],
    *,
    unpainted_background: int | None = None,
) -> np.ndarray:
    """The full-resolution label map after writing the ``painted`` pixels of ``labels`` (edit
    size) over ``start`` (None: all unknown).

    With ``unpainted_background`` set, pixels still unknown afterwards get that class (the user said
    "the rest is background").
    """
    result = (
        np.full(full_size, IGNORE_INDEX, dtype=np.uint8) if start is None else start.astype(np.uint8).copy()
    )
    if result.shape != full_size:
        raise ValueError(f"starting label map is {result.shape}, image is {full_size}")
    if painted.any():
        big_labels, big_painted = resize_nearest(labels, full_size), resize_nearest(painted, full_size)
        result[big_painted] = big_labels[big_painted]
    if unpainted_background is not None:
        result[result == IGNORE_INDEX] = unpainted_background
    return result
