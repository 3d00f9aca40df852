"""Supervision modes: which loss terms each one uses, and the objective `compute_losses`.

| mode      | tagged images | masked images   | every image                                      |
|-----------|---------------|-----------------|--------------------------------------------------|
| wsss      | cls           | (mask ignored)  | mask & code consistency; pseudo-label CE*         |
| ssss      | (tags filter) | masked-pixel CE | consistency; pseudo-label CE* if it has no mask   |
| ssss_tags | cls           | masked-pixel CE | consistency; pseudo-label CE* if it has no mask   |

cls, masked-pixel CE and pseudo-label CE each sum the two views and 0.4 x the auxiliary head.

(*) after warm-up, i.e. when `compute_losses(..., use_pseudo_labels=True)`.

Pseudo-labels: the two views' masks are averaged, restricted to the image's tagged classes (all
classes when the image has no tags) and renormalised over them, PAMR-refined at stride 4,
upsampled to the crop (or kept at stride 4) and thresholded (`make_pseudo_labels`). The mask-only
mode uses the official semi-supervised constants (cut-offs 0.8 / 0.6, background factor 0.9,
background probability cubed before PAMR).

Departures from the official training code, on purpose:

- anomaly detection: the official training script leaves `torch.autograd.set_detect_anomaly(True)`
  on, which slows every step several-fold; nothing here enables it.
- warm-up: the official loop adds the pseudo-label term when `epoch > pretrain_epochs` with
  0-based epochs, i.e. one epoch later than configured. `pseudo_labels_active` starts exactly after
  `warmup_epochs` epochs.
- labelled set: the official semi-supervised dataset marks "the last 1464 files of the list" as
  fully labelled, which is not the intended labelled split for every list. Here an image is
  labelled exactly when the caller says so (`batch["has_mask"]`, `batch["has_tags"]`).
- a masked image's cls loss is not replaced by a second copy of its segmentation loss (official
  `cls_loss[indicators] = seg_loss[indicators]`). That copy is not neutral: it doubles the weight
  of the painted pixels. Here "mask_ce" is a mean over the masked images with weight 2
  (`LossWeights.mask_ce`), which gives the labelled loss the official weight (~2) whatever share
  of the batch is masked; averaging over the whole batch (the earlier code) gave it ~0.5 against
  consistency terms of 4 + 4 and left SLRNet below the same network trained on the masks alone.
- pseudo-labels are made per image over its allowed classes, renormalised (see
  `pseudo_label_targets`); optionally (`feature_resolution`, the CPU default) the pixel losses
  are computed on the stride-4 grid instead of the crop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from slrnet import losses as L
from slrnet.config import IGNORE_INDEX, MODE_FACTS, LossWeights, ModelConfig
from slrnet.pamr import PAMR
from slrnet.pseudo_labels import make_pseudo_labels


def pseudo_labels_active(epoch: int, warmup_epochs: int) -> bool:
    """Whether the pseudo-label term is on in (0-based) `epoch`: after `warmup_epochs` full epochs."""
    return epoch >= warmup_epochs


def _present_classes(cfg: ModelConfig, batch: dict[str, Tensor]) -> Tensor:
    """(B, K) bool: the tagged classes of tagged images, every class for the others."""
    tags = batch["tags"] > 0.5
    has_tags = batch["has_tags"].to(torch.bool)
    present = torch.where(has_tags[:, None], tags, torch.ones_like(tags))
    if cfg.has_background:
        present[:, 0] = True
    return present


@torch.no_grad()
def pseudo_label_targets(cfg: ModelConfig, outs: dict[str, Tensor], image: Tensor, present: Tensor,
                         size: tuple[int, int] | None = None) -> Tensor:
    """PAMR-refined pseudo-labels of a training batch: (B, H, W) int64, 255 = ignored.

    Each image is refined over its own allowed classes (tags + background; every class for an
    untagged image), renormalised to sum to 1 over them first: with many classes the raw softmax
    mass of the few allowed ones is far below the cut-off floor, and nothing would be labelled
    (official COCO rule: normalise before thresholding). ``size``: the label grid, (H, W) of the
    crop by default; the stride-4 feature grid when the losses are computed there.
    """
    spec = MODE_FACTS[cfg.mode]
    probs = (outs["probs"] + outs["probs_view2"]) / 2.0
    if cfg.has_background and spec.background_power != 1.0:
        probs = torch.cat([probs[:, :1].pow(spec.background_power), probs[:, 1:]], dim=1)
    grid = probs.shape[-2:]
    size = tuple(size or image.shape[-2:])
    small = F.interpolate(image.to(probs.dtype), size=grid, mode="bilinear", align_corners=True)
    # PAMR treats channels independently, so refining only each image's allowed classes gives the
    # same labels at a fraction of the cost (an MSRC image has 2-3 of its 21 classes). The images
    # go through PAMR together, their allowed classes packed into the first channels (the others
    # zero, which PAMR keeps at zero): one pass instead of one per image.
    counts = present.sum(dim=1)
    width = max(1, int(counts.max()))
    order = torch.sort((~present).to(torch.int8), dim=1, stable=True).indices[:, :width]   # allowed first
    valid = torch.arange(width, device=probs.device)[None] < counts[:, None]                # (B, width)
    allowed = torch.gather(probs, 1, order[:, :, None, None].expand(-1, -1, *grid)) * valid[:, :, None, None]
    allowed = allowed / allowed.sum(dim=1, keepdim=True).clamp_min(1e-6)
    refined = PAMR(cfg.pamr_iters, cfg.pamr_dilations)(small, allowed)
    if refined.shape[-2:] != size:
        refined = F.interpolate(refined, size=size, mode="bilinear", align_corners=True)
    # every image keeps background first among its allowed classes when the model has one
    local = make_pseudo_labels(refined, valid, spec.cutoff_top, spec.cutoff_low, spec.background_factor,
                               cfg.has_background)
    labels = torch.gather(order, 1, local.clamp_max(width - 1).flatten(1)).view_as(local)
    return torch.where(local == IGNORE_INDEX, local, labels)


def compute_losses(cfg: ModelConfig, outs: dict[str, Tensor], batch: dict[str, Tensor],
                   use_pseudo_labels: bool, weights: LossWeights | None = None,
                   feature_resolution: bool = False) -> dict[str, Tensor]:
    """The training objective of `cfg.mode` for one batch.

    Args:
        cfg: the model's configuration (mode, background, PAMR settings).
        outs: `SLRNet.forward_train(batch["image"])`.
        batch: "image" (B, 3, H, W) normalised; "tags" (B, K) multi-hot (background column 1 when
            `cfg.has_background`); "has_tags" (B,) bool; "mask" (B, H, W) int64, 255 = unknown;
            "has_mask" (B,) bool.
        use_pseudo_labels: add the pseudo-label CE (after warm-up, `pseudo_labels_active`).
        weights: loss coefficients (default `LossWeights()`).
        feature_resolution: compute the pixel losses on the stride-4 logit grid (masks
            subsampled, pseudo-labels made there) instead of upsampling the logits to the crop:
            16x fewer pixels through softmax, CE and their backward (the CPU default; the
            official code works at crop resolution).

    Returns:
        Scalar tensors: the mode's terms by name ("cls", "mask_ce", "mask_consistency",
        "code_consistency", "pseudo"; "pseudo" is 0 while `use_pseudo_labels` is False) and
        "total", their weighted sum; with pseudo-labels also "pseudo_labelled", the fraction of
        unmasked pixels that received one (a diagnostic, not in the total). "mask_ce" is the mean
        over the masked images of the batch (official: the labelled loss is a mean over labelled
        images); the other terms sum
        per-image losses over the images they apply to and divide by the batch size.
    """
    w = weights or LossWeights()
    spec = MODE_FACTS[cfg.mode]
    image = batch["image"]
    b = image.shape[0]
    fg = slice(1, None) if cfg.has_background else slice(None)
    present = _present_classes(cfg, batch)
    has_tags = batch["has_tags"].to(torch.bool)
    has_mask = batch["has_mask"].to(torch.bool) if spec.uses_masks else torch.zeros_like(has_tags)

    def batch_mean(per_image: Tensor, applies: Tensor | None = None) -> Tensor:
        if applies is not None:
            per_image = per_image * applies.to(per_image.dtype)
        return per_image.sum() / b

    grid = outs["seg_logits"].shape[-2:]
    mask = batch["mask"]
    if feature_resolution and mask.shape[-2:] != grid:
        mask = F.interpolate(mask[:, None].float(), size=grid, mode="nearest")[:, 0].long()

    def two_views_and_aux(loss_fn: Callable[[Tensor, Tensor], Tensor], target: Tensor) -> Tensor:
        return (loss_fn(outs["seg_logits"], target) + loss_fn(outs["seg_logits_view2"], target)
                + w.aux * loss_fn(outs["aux_logits"], target))

    terms: dict[str, Tensor] = {}
    if spec.uses_tags:
        tags = batch["tags"][:, fg]
        per_image = (L.classification_loss(outs["cls_logits"][:, fg], tags)
                     + L.classification_loss(outs["cls_logits_view2"][:, fg], tags)
                     + w.aux * L.classification_loss(outs["cls_logits_aux"][:, fg], tags))
        terms["cls"] = batch_mean(per_image, has_tags)
    if spec.uses_masks:
        per_image = two_views_and_aux(L.masked_ce, mask) * has_mask.to(image.dtype)
        terms["mask_ce"] = per_image.sum() / has_mask.sum().clamp_min(1)
    terms["mask_consistency"] = batch_mean(
        L.mask_consistency(outs["probs"][:, fg], outs["probs_view2"][:, fg], present[:, fg]))
    terms["code_consistency"] = batch_mean(L.code_consistency(outs["codes"], outs["codes_view2"]))
    if use_pseudo_labels:
        target = pseudo_label_targets(cfg, outs, image, present, size=grid if feature_resolution else None)
        terms["pseudo"] = batch_mean(two_views_and_aux(L.balanced_ce, target), ~has_mask)
        unmasked = ~has_mask
        labelled = (target != IGNORE_INDEX)[unmasked].float()
        pseudo_labelled = labelled.mean() if labelled.numel() else target.new_zeros((), dtype=torch.float32)
    else:
        terms["pseudo"] = outs["seg_logits"].new_zeros(())

    coeff = {"cls": w.cls, "mask_ce": w.mask_ce, "mask_consistency": w.mask_consistency,
             "code_consistency": w.code_consistency, "pseudo": w.pseudo}
    terms["total"] = sum((coeff[name] * value for name, value in terms.items()),
                         start=outs["seg_logits"].new_zeros(()))
    if use_pseudo_labels:  # a diagnostic, not a loss: the share of unmasked pixels with a pseudo-label
        terms["pseudo_labelled"] = pseudo_labelled.detach()
    return terms
