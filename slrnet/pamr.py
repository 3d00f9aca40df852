"""Pixel-adaptive mask refinement (PAMR, 1-Stage, Araslanov & Roth CVPR 2020, Sec. 3.2).

Masks are propagated along image-dependent affinities between each pixel and its 8 neighbours at
several dilations:

    α_ij = softmax_j( −mean_c |I_ic − I_jc| / (0.1 · σ_ic) )         (σ: local std of the image)
    m_i ← Σ_j α_ij · m_j                                            (repeated `num_iter` times)

The image normalisation does not matter: per-channel affine maps cancel between the difference
and the standard deviation, so an ImageNet-normalised image gives the affinities of the raw one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_OFFSETS_8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _neighbours(x: Tensor, dilations: tuple[int, ...], with_centre: bool) -> Tensor:
    """(B, C, H, W) -> (B, C, P, H, W): values of the 8 (or 9 with the centre) neighbours at each
    dilation, border pixels replicated."""
    h, w = x.shape[-2:]
    offsets = ((0, 0), *_OFFSETS_8) if with_centre else _OFFSETS_8
    out = []
    for d in dilations:
        padded = F.pad(x, [d, d, d, d], mode="replicate")
        out.extend(padded[:, :, d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w] for dy, dx in offsets)
    return torch.stack(out, dim=2)


class PAMR(nn.Module):
    """PAMR(num_iter=10, dilations=(1, 2, 4, 8, 12, 24)).

    forward(image (B, 3, H, W), masks (B, K, h, w)) -> refined masks (B, K, H, W). Masks are first
    resized to the image (bilinear); resize the image to the mask size before the call to refine
    at the mask's resolution (what the training loss does, at stride 4). No parameters.
    """

    def __init__(self, num_iter: int = 10, dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)) -> None:
        super().__init__()
        if num_iter < 0 or not dilations:
            raise ValueError("PAMR needs num_iter >= 0 and at least one dilation")
        self.num_iter = num_iter
        self.dilations = tuple(int(d) for d in dilations)

    def affinity(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1, P, H, W) propagation weights, summing to 1 over the P neighbours.

        σ is the standard deviation over the 9-pixel neighbourhoods of every dilation together
        (unbiased, as ``torch.std``), accumulated shift by shift instead of stacking all of them.
        """
        h, w = image.shape[-2:]
        total = torch.zeros_like(image)
        squares = torch.zeros_like(image)
        diffs = []
        count = 0
        for d in self.dilations:
            padded = F.pad(image, [d, d, d, d], mode="replicate")
            for dy, dx in ((0, 0), *_OFFSETS_8):
                shifted = padded[:, :, d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w]
                total += shifted
                squares += shifted * shifted
                count += 1
                if (dy, dx) != (0, 0):
                    diffs.append((shifted - image).abs())
        variance = ((squares - total * total / count) / (count - 1)).clamp_min(0)
        std = variance.sqrt().unsqueeze(2)
        diff = torch.stack(diffs, dim=2)
        logits = -(diff / (1e-8 + 0.1 * std)).mean(dim=1, keepdim=True)
        return logits.softmax(dim=2)

    def forward(self, image: Tensor, masks: Tensor) -> Tensor:
        if masks.shape[-2:] != image.shape[-2:]:
            masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
        aff = self.affinity(image.to(masks.dtype))                       # (B, 1, P, H, W)
        h, w = masks.shape[-2:]
        offsets = [(d, dy, dx) for d in self.dilations for dy, dx in _OFFSETS_8]
        for _ in range(self.num_iter):
            # Σ_j α_ij m_j, one neighbour at a time (no (B, K, P, H, W) stack per iteration).
            pads = {d: F.pad(masks, [d, d, d, d], mode="replicate") for d in self.dilations}
            out = torch.zeros_like(masks)
            for p, (d, dy, dx) in enumerate(offsets):
                out += pads[d][:, :, d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w] * aff[:, :, p]
            masks = out
        return masks
