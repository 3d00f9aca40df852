"""Regions for the painter's region tool: a hierarchy of segmentations of the picture, fine to
coarse (scikit-image's Felzenszwalb-Huttenlocher graph segmentation at several scales, sized to the
picture: each level has about :data:`LEVEL_REGIONS` regions whatever the picture's size). The
painter shows the region under the cursor, ``[`` / ``]`` move between levels, a click fills it.

Computed on a copy of the picture at most ``WORK_SIDE`` wide, then scaled (nearest) to the size
asked for.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from skimage.segmentation import felzenszwalb

from app.overlay import fit_size, resize_nearest

WORK_SIDE = 512
LEVEL_REGIONS = (1200, 400, 150, 50, 15)  # about this many regions per level, fine to coarse
DEFAULT_LEVEL = 3  # the level the tool starts at
SIGMA = 0.8  # pre-smoothing of the segmentation, in pixels


def region_levels(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(len(LEVEL_REGIONS), h, w) int32`` region ids of ``rgb`` at ``size`` (h, w), one
    segmentation per level, each id 0..K-1."""
    work = fit_size(rgb.shape[:2], WORK_SIDE)
    small = rgb if work == rgb.shape[:2] else np.asarray(
        PILImage.fromarray(rgb).resize((work[1], work[0]), PILImage.Resampling.BILINEAR)
    )
    pixels = work[0] * work[1]
    levels = []
    for regions in LEVEL_REGIONS:
        min_size = max(4, pixels // (regions * 3))
        ids = felzenszwalb(small, scale=pixels / regions / 64, sigma=SIGMA, min_size=min_size)
        levels.append(resize_nearest(ids.astype(np.int32), size))
    return np.stack(levels)


def encode_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as an RGB picture (red = low byte, green = high byte) that a PNG carries losslessly."""
    if ids.max(initial=0) >= 1 << 16:
        raise ValueError("at most 65536 regions")
    out = np.zeros((*ids.shape, 3), np.uint8)
    out[..., 0] = ids & 0xFF
    out[..., 1] = ids >> 8
    return out
