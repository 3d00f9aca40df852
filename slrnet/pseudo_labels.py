"""Pseudo-labels from (refined) class probabilities (1-Stage `pseudo_gtmask`, as used by SLRNet).

A pixel gets class c when its probability exceeds a per-image, per-class cut-off

    t_c = max(f_c · max_pixels p_c, cutoff_low),   f_c = cutoff_top (foreground), background_factor

and no other class also exceeds its own cut-off; pixels claimed by no class or by several are
ignored (255). Classes marked absent are zeroed first, so they can never be assigned.
Official values: image tags (cutoff_top, cutoff_low, background_factor) = (0.6, 0.2, 0.7); the
mask-only variant uses (0.8, 0.6, 0.9).
"""

from __future__ import annotations

import torch
from torch import Tensor

from slrnet.config import IGNORE_INDEX


@torch.no_grad()
def make_pseudo_labels(probs: Tensor, present: Tensor, cutoff_top: float = 0.6, cutoff_low: float = 0.2,
                       background_factor: float = 0.7, has_background: bool = True) -> Tensor:
    """Threshold class probabilities into hard labels.

    Args:
        probs: (B, K, H, W) class probabilities (e.g. PAMR-refined softmax).
        present: (B, K) bool, classes allowed in each image (background column included when
            `has_background`; pass all True when nothing is known).
        cutoff_top: fraction of a foreground class's maximum that a pixel must exceed.
        cutoff_low: absolute floor of every cut-off, which drops classes whose maximum is low.
        background_factor: the fraction used for class 0 when `has_background`.
        has_background: class 0 is background.

    Returns:
        (B, H, W) int64 labels in [0, K) or IGNORE_INDEX.
    """
    if probs.dim() != 4 or present.shape != probs.shape[:2]:
        raise ValueError(f"expected probs (B, K, H, W) and present (B, K); got {tuple(probs.shape)} "
                         f"and {tuple(present.shape)}")
    probs = probs * present[:, :, None, None].to(probs.dtype)
    factors = torch.full((probs.shape[1],), cutoff_top, dtype=probs.dtype, device=probs.device)
    if has_background:
        factors[0] = background_factor
    peak = probs.flatten(2).amax(dim=-1)                                     # (B, K)
    cutoff = (peak * factors).clamp_min(cutoff_low)
    selected = (probs > cutoff[:, :, None, None]) & present[:, :, None, None]
    labels = selected.to(torch.uint8).argmax(dim=1)
    labels[selected.sum(dim=1) != 1] = IGNORE_INDEX
    return labels
