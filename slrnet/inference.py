"""Inference: a trained SLRNet as a function from a numpy image to class probabilities.

``Predictor.predict(image)`` resizes the image so its longer side is ``size`` px, averages the
softmax of the segmentation head over the configured scales (and their mirror images), keeps only
the classes the image is known or predicted to contain, optionally refines with PAMR, and returns
probabilities, a label map (255 where the top probability is below ``uncertain_below``) and the
per-pixel confidence at the image's own resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slrnet.config import IGNORE_INDEX, MODE_FACTS, InferenceConfig, ModelConfig
from slrnet.data import image_to_tensor, normalize
from slrnet.pamr import PAMR
from slrnet.train import config_from_dict, input_size, load_checkpoint, model_from_checkpoint

SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class Prediction:
    probs: np.ndarray  # (K, H, W) float32, sums to 1 over K
    labels: np.ndarray  # (H, W) uint8, IGNORE_INDEX where uncertain
    confidence: np.ndarray  # (H, W) float32 in 0..1, the top probability
    tag_scores: np.ndarray  # (K,) float32, the classifier's sigmoid scores
    classes: np.ndarray  # (K,) bool, the classes kept by the class filter


class Predictor:
    """Wraps a model in eval mode; thread-compatible (no state changes after construction)."""

    def __init__(self, model: nn.Module, model_config: ModelConfig, class_names: Sequence[str], *,
                 config: InferenceConfig | None = None, device: torch.device | str = "cpu",
                 default_size: int | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.model_config = model_config
        self.class_names = list(class_names)
        self.config = config or InferenceConfig()
        self.size = self.config.size or default_size
        self.background_power = self.config.background_power
        self.pamr = PAMR(model_config.pamr_iters, model_config.pamr_dilations).to(self.device)

    @classmethod
    def from_checkpoint(cls, path: Path | str, config: InferenceConfig | None = None,
                        device: torch.device | str = "cpu") -> Predictor:
        state = load_checkpoint(Path(path))
        model_config = config_from_dict(ModelConfig, state["model_config"])
        return cls(model_from_checkpoint(state), model_config, state["class_names"], config=config,
                   device=device, default_size=input_size(model_config, state["train_config"]))

    @property
    def num_classes(self) -> int:
        return self.model_config.num_classes

    def _filter(self, tag_scores: torch.Tensor, known_tags: np.ndarray | None) -> torch.Tensor:
        mode = self.config.class_filter
        if mode == "auto":
            if known_tags is not None:
                mode = "known"
            elif MODE_FACTS[self.model_config.mode].uses_tags:
                mode = "predicted"
            else:
                mode = "none"
        keep = torch.ones(self.num_classes, dtype=torch.bool, device=tag_scores.device)
        if mode == "known" and known_tags is not None:
            keep = torch.as_tensor(np.asarray(known_tags) > 0, device=tag_scores.device)
        elif mode == "predicted":
            keep = tag_scores > self.config.tag_threshold
        if self.model_config.has_background:
            keep[0] = True
        if not keep.any():  # nothing predicted: better the unfiltered map than none
            keep[:] = True
        return keep

    @torch.no_grad()
    def predict(self, image: np.ndarray, known_tags: np.ndarray | None = None) -> Prediction:
        """``image`` (H, W, 3) uint8 RGB; ``known_tags`` (K,) 0/1 for an image with human tags."""
        pixels = image_to_tensor(image).to(self.device)
        height, width = pixels.shape[1:]
        if self.size:
            factor = self.size / max(height, width)
            base = (max(1, round(height * factor)), max(1, round(width * factor)))
        else:
            base = (height, width)
        base_image = normalize(F.interpolate(pixels[None].float(), size=base, mode="bilinear",
                                             align_corners=False, antialias=True).clamp(0, 255))
        probs = torch.zeros(1, self.num_classes, *base, device=self.device)
        tag_scores = torch.zeros(self.num_classes, device=self.device)
        for scale in self.config.scales:
            size = [max(SIZE_MULTIPLE, round(s * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in base]
            x = F.interpolate(base_image, size=size, mode="bilinear", align_corners=False)
            if self.config.flip:
                x = torch.cat([x, x.flip(-1)])
            out = self.model(x)
            p = F.interpolate(out["seg_logits"].float().softmax(1), size=base, mode="bilinear",
                              align_corners=False)
            if self.config.flip:
                p = torch.stack([p[0], p[1].flip(-1)])
            probs += p.mean(0, keepdim=True)
            tag_scores += out["cls_logits"].float().sigmoid().mean(0)
        probs /= len(self.config.scales)
        tag_scores /= len(self.config.scales)

        keep = self._filter(tag_scores, known_tags)
        # Renormalise over the kept classes first: with many classes the kept ones hold a small
        # share of the softmax mass, and a power applied before that would crush background.
        probs = probs * keep.view(1, -1, 1, 1)
        probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-8)
        if self.model_config.has_background and self.background_power != 1.0:
            probs[:, 0] = probs[:, 0] ** self.background_power
            probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-8)
        if self.config.pamr:  # over the kept classes only: PAMR's cost grows with the channels
            kept = keep.nonzero().squeeze(1)
            grid = base
            if self.config.pamr_scale < 1.0:
                grid = (max(1, round(base[0] * self.config.pamr_scale)),
                        max(1, round(base[1] * self.config.pamr_scale)))
            guide = base_image if grid == base else F.interpolate(
                base_image, size=grid, mode="bilinear", align_corners=False, antialias=True)
            refined = self.pamr(guide, F.interpolate(probs[:, kept], size=grid, mode="bilinear",
                                                     align_corners=False))
            if grid != base:
                refined = F.interpolate(refined, size=base, mode="bilinear", align_corners=False)
            probs = torch.zeros_like(probs)
            probs[:, kept] = refined / refined.sum(1, keepdim=True).clamp_min(1e-8)
        if self.config.class_max_norm and not bool(keep.all()):
            # peak-relative, as the training pseudo-labels read their maps (cut-off = a share of
            # each class's peak); only over a known or predicted class list: with every class
            # kept, an absent class's faint map would be raised to 1 as well
            probs = probs / probs.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)
            probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-8)
        if base != (height, width):
            probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
        confidence, labels = probs[0].max(0)
        labels = labels.to(torch.uint8)
        labels[confidence < self.config.uncertain_below] = IGNORE_INDEX
        return Prediction(
            probs=probs[0].cpu().numpy().astype(np.float32),
            labels=labels.cpu().numpy(),
            confidence=confidence.cpu().numpy().astype(np.float32),
            tag_scores=tag_scores.cpu().numpy().astype(np.float32),
            classes=keep.cpu().numpy(),
        )
