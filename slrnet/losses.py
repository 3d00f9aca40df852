"""Each SLRNet loss term, once. Which terms a supervision mode uses, and how they are weighted,
is decided in `slrnet.modes`.

Every function returns a per-image loss (B,), so the caller can select the images a term applies
to (tagged, masked, unlabelled) without silently changing the normalisation.

Departures from the official code, on purpose:

- `balanced_ce` does not zero an image's loss when its pseudo-label lacks one of the tagged
  classes (official `batch_weight`): after random cropping that is routine, and the official rule
  then discards every pixel of the image. We keep the loss on the pixels that remain; the tags of
  a crop are the caller's business.
- `code_consistency` compares "max-masked" codes (each code vector keeps its largest entry and
  zeros the rest). The official helper is called `max_onehot` but is not one-hot: it keeps the
  maximum *value*. We keep that behaviour deliberately, under an honest name (`keep_max`): a true
  one-hot has zero gradient everywhere, so the term would not train anything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from slrnet.config import IGNORE_INDEX


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def classification_loss(scores: Tensor, tags: Tensor) -> Tensor:
    """Multilabel soft-margin loss per image: scores (B, C), tags (B, C) in {0, 1} -> (B,)."""
    return F.multilabel_soft_margin_loss(scores, tags.to(scores.dtype), reduction="none")


def mask_consistency(probs1: Tensor, probs2: Tensor, present: Tensor) -> Tensor:
    """L1 between the class masks of the two views, restricted to present classes (SLRNet Eq. reg).

    probs1, probs2: (B, C, h, w) on the same grid; present: (B, C) {0, 1}. Returns (B,): the mean
    over all C·h·w entries (absent classes count as zeros, as in the official code, which the
    default weight 4 was tuned for).
    """
    diff = (probs1 - probs2).abs() * present[:, :, None, None].to(probs1.dtype)
    return diff.flatten(1).mean(dim=1)


def keep_max(codes: Tensor) -> Tensor:
    """(B, K, h, w) -> same shape: every position keeps its largest code (value, not 1), others 0."""
    return codes * (codes == codes.amax(dim=1, keepdim=True)).to(codes.dtype)


def code_consistency(codes1: Tensor, codes2: Tensor) -> Tensor:
    """L1 between the max-masked low-rank codes of the two views: (B, K, h, w) x 2 -> (B,)."""
    return (keep_max(codes1) - keep_max(codes2)).abs().flatten(1).mean(dim=1)


def balanced_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Class-balanced cross-entropy on hard (pseudo-)labels (1-Stage `balanced_mask_loss_ce`).

    A pixel of class c is weighted (n − n_c)/(1 + n), with n_c the pixels of class c and n the
    labelled pixels of its image, so every class weighs about the same; a pseudo-label with a
    single class gives no loss. The result is the mean over all H·W pixels.

    Args:
        logits: (B, K, h, w), resized (bilinear) to the target.
        target: (B, H, W) int64 in [0, K) or IGNORE_INDEX.

    Returns:
        (B,) loss per image.
    """
    k = logits.shape[1]
    logits = _resize(logits, target.shape[-2:])
    valid = target != IGNORE_INDEX
    counts = F.one_hot(target.clamp_max(k - 1) * valid, k).mul(valid[..., None]).flatten(1, 2).sum(1)
    total = counts.sum(dim=1, keepdim=True)
    class_weight = (total - counts).to(logits.dtype) / (1.0 + total.to(logits.dtype))   # (B, K)
    pixel_weight = torch.gather(class_weight, 1, (target.clamp_max(k - 1) * valid).flatten(1))
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none").flatten(1)
    return (ce * pixel_weight * valid.flatten(1)).mean(dim=1)


def masked_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy on the labelled pixels of each image (IGNORE_INDEX = unknown).

    logits (B, K, h, w) resized to target (B, H, W). Returns (B,): the mean over the image's
    labelled pixels (0 for an image with none).
    """
    logits = _resize(logits, target.shape[-2:])
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none").flatten(1)
    labelled = (target != IGNORE_INDEX).flatten(1).sum(dim=1)
    return ce.sum(dim=1) / labelled.clamp_min(1)
