"""Full-resolution label maps from model-resolution probabilities, a band of rows at a time.

A camera photo has tens of millions of pixels; its class probabilities at that size would take
4 bytes x classes x pixels (24 MP x 81 classes: 7.8 GB). :func:`top_class_in_bands` upsamples the
model-resolution probabilities bilinearly (the arithmetic of ``F.interpolate(..., "bilinear",
align_corners=False)``) one band of output rows at a time and keeps only what is published: the
top class and its probability per pixel, so memory is the output maps plus one band.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# Floats held by one band of upsampled probabilities (classes x rows x width): 4M = 16 MB.
BAND_ELEMENTS = 4_000_000


def _source_index(out_size: int, in_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Lower / upper source index and the upper weight of each output position (half-pixel
    centres, clamped at the border: PyTorch's bilinear rule with align_corners=False)."""
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    low = src.floor().long().clamp_max(in_size - 1)
    high = (low + 1).clamp_max(in_size - 1)
    return low, high, (src - low).float()


def top_class_in_bands(probs: Tensor, size: tuple[int, int], *, keep: Tensor | None = None,
                       band_elements: int = BAND_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` (K, h, w) -> labels (H, W) uint8 (the argmax class) and confidence (H, W) uint8
    (its probability x 255, rounded) at ``size`` = (H, W), bilinearly upsampled band by band.

    ``keep`` (K,) bool limits the argmax to those classes (the others' rows are skipped).
    """
    height, width = size
    classes = torch.arange(probs.shape[0], device=probs.device)
    if keep is not None:
        classes = classes[keep.to(probs.device)]
    probs = probs[classes].float()
    k, h, w = probs.shape
    labels = np.empty((height, width), dtype=np.uint8)
    confidence = np.empty((height, width), dtype=np.uint8)
    row_low, row_high, row_weight = _source_index(height, h)
    col_low, col_high, col_weight = _source_index(width, w)
    col_weight = col_weight.to(probs.device)
    band = max(1, band_elements // max(1, k * width))
    for top in range(0, height, band):
        rows = slice(top, min(height, top + band))
        weight = row_weight[rows].to(probs.device).view(1, -1, 1)
        lines = torch.lerp(probs[:, row_low[rows]], probs[:, row_high[rows]], weight)  # (k, b, w)
        full = torch.lerp(lines[..., col_low], lines[..., col_high], col_weight)  # (k, b, W)
        best, index = full.max(0)
        labels[rows] = classes[index].to(torch.uint8).cpu().numpy()
        confidence[rows] = (best * 255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return labels, confidence
