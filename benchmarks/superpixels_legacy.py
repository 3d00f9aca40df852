"""The painter's superpixels before the region hierarchy (app/superpixels.py), kept as the
baseline of benchmarks/paint_actions.py: a small SLIC (k-means on Lab colour + position, each
pixel compared only with the centres of the 3x3 grid cells around it), in numpy.

Computed on a copy of the picture at most ``WORK_SIDE`` wide, then scaled (nearest) to the size
asked for, so one image costs a fraction of a second on a CPU.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from app.overlay import fit_size, resize_nearest

WORK_SIDE = 384
DEFAULT_SEGMENTS = 600
COMPACTNESS = 12.0  # weight of position against colour (Lab units per grid step)
ITERATIONS = 6


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) of an ``(..., 3) uint8`` sRGB array, float32."""
    c = rgb.astype(np.float32) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], np.float32
    )
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack(
        [116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1
    ).astype(np.float32)


def slic(
    rgb: np.ndarray,
    segments: int = DEFAULT_SEGMENTS,
    compactness: float = COMPACTNESS,
    iterations: int = ITERATIONS,
) -> np.ndarray:
    """``(H, W) int32`` superpixel ids 0..K-1 of an ``(H, W, 3) uint8`` picture (about
    ``segments`` of them, compact and following colour edges)."""
    h, w = rgb.shape[:2]
    step = max(2.0, float(np.sqrt(h * w / max(1, segments))))
    gh, gw = max(1, int(np.ceil(h / step))), max(1, int(np.ceil(w / step)))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    features = np.concatenate([rgb_to_lab(rgb), ys[..., None], xs[..., None]], -1).reshape(-1, 5)
    cell_y = np.minimum((ys / step).astype(np.int64), gh - 1).ravel()
    cell_x = np.minimum((xs / step).astype(np.int64), gw - 1).ravel()
    # start: each grid cell's mean (so every centre lies inside the picture)
    cells = cell_y * gw + cell_x
    counts = np.bincount(cells, minlength=gh * gw).astype(np.float32)
    centres = np.stack(
        [np.bincount(cells, features[:, k], minlength=gh * gw) for k in range(5)], -1
    ) / np.maximum(counts, 1)[:, None]
    weight = np.array([1, 1, 1, (compactness / step) ** 2, (compactness / step) ** 2], np.float32)
    assigned = cells
    for _ in range(iterations):
        best = np.full(len(features), np.inf, np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ny, nx = cell_y + dy, cell_x + dx
                valid = (ny >= 0) & (ny < gh) & (nx >= 0) & (nx < gw)
                candidate = np.where(valid, ny * gw + nx, 0)
                diff = features - centres[candidate]
                dist = (diff * diff) @ weight
                dist[~valid | (counts[candidate] == 0)] = np.inf
                better = dist < best
                best[better], assigned = dist[better], np.where(better, candidate, assigned)
        counts = np.bincount(assigned, minlength=gh * gw).astype(np.float32)
        sums = np.stack([np.bincount(assigned, features[:, k], minlength=gh * gw) for k in range(5)], -1)
        moved = counts > 0
        centres[moved] = sums[moved] / counts[moved, None]
    _, ids = np.unique(assigned, return_inverse=True)
    return ids.reshape(h, w).astype(np.int32)


def legacy_slic(rgb: np.ndarray, size: tuple[int, int], segments: int = DEFAULT_SEGMENTS) -> np.ndarray:
    """Superpixel ids of ``rgb`` at ``size`` (h, w), computed at most ``WORK_SIDE`` wide."""
    work = fit_size(rgb.shape[:2], WORK_SIDE)
    small = rgb if work == rgb.shape[:2] else np.asarray(
        PILImage.fromarray(rgb).resize((work[1], work[0]), PILImage.Resampling.BILINEAR)
    )
    return resize_nearest(slic(small, segments), size)
