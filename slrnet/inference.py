"""Inference: a trained SLRNet as a function from a numpy image to a label map.

``Predictor.read(image)`` resizes the image so its longer side is ``size`` px and averages the
softmax of the segmentation head and the classifier's sigmoid scores over the configured scales
(and their mirror images): a :class:`Reading` at the model's resolution. ``Predictor.predict``
then keeps only the classes the image is known or judged to contain (the checkpoint's calibrated
:class:`~slrnet.presence.PresenceRule` when it has one, else the 0.5 rule), optionally refines with
PAMR, and upsamples to the image's own resolution in bands (`slrnet.tiles`): a label map (255 where
the top probability is below ``uncertain_below``) and the per-pixel confidence. Memory is the
output maps plus a model-resolution working set, whatever the photo's size and class count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slrnet.config import IGNORE_INDEX, MODE_FACTS, InferenceConfig, ModelConfig
from slrnet.data import image_to_tensor, normalize
from slrnet.feature_spec import LEVELS
from slrnet.pamr import PAMR
from slrnet.presence import PresenceRule, evidence
from slrnet.tiles import top_class_in_bands
from slrnet.train import config_from_dict, input_size, load_checkpoint, model_from_checkpoint

SIZE_MULTIPLE = 16


# Before the model's own resize, a photo more than this many times the predicted size is first
# box-averaged by a whole factor in bands of rows (never a float copy of the full photo).
REDUCE_ABOVE = 4
_REDUCE_BAND_ROWS = 256


@dataclass(frozen=True)
class Reading:
    """What the model says about an image before any class filter, at the model's resolution."""

    probs: torch.Tensor  # (1, K, h, w) softmax averaged over scales and flips, sums to 1 over K
    tag_scores: torch.Tensor  # (K,) the classifier's sigmoid scores, averaged likewise
    guide: torch.Tensor  # (1, 3, h, w) the normalised image at that size (PAMR's guide)

    def evidence(self) -> np.ndarray:
        """(K, F) presence evidence (`slrnet.presence.evidence`)."""
        return evidence(self.probs[0], self.tag_scores)


@dataclass(frozen=True)
class Prediction:
    probs: np.ndarray  # (K, h, w) float32 at the model's resolution, sums to 1 over K
    labels: np.ndarray  # (H, W) uint8 at the image's resolution, IGNORE_INDEX where uncertain
    confidence: np.ndarray  # (H, W) uint8, the top probability x 255 (rounded)
    tag_scores: np.ndarray  # (K,) float32, the classifier's sigmoid scores
    classes: np.ndarray  # (K,) bool, the classes kept by the class filter
    present: np.ndarray  # (K,) bool, the classes the model judges present (whatever tags are known)
    presence_scores: np.ndarray  # (K,) float32: calibrated presence, or the sigmoid scores without a rule


def reduce_image(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H // factor, W // factor, 3) uint8, the mean of each factor x factor
    block, computed in bands of rows."""
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    out = np.empty((height // factor, width // factor, 3), dtype=np.uint8)
    for top in range(0, height // factor, _REDUCE_BAND_ROWS):
        rows = out[top:top + _REDUCE_BAND_ROWS]
        block = image[top * factor:(top + len(rows)) * factor, :width]
        sums = block.reshape(len(rows), factor, width // factor, factor, 3).sum((1, 3), dtype=np.uint32)
        rows[:] = (sums + factor * factor // 2) // (factor * factor)
    return out


class Predictor:
    """Wraps a model in eval mode; thread-compatible (no state changes after construction).

    ``presence``: the calibrated class-presence rule of the checkpoint (None: the classifier's
    sigmoid above ``config.tag_threshold``; ``config.calibrated_presence=False`` ignores it).
    """

    def __init__(self, model: nn.Module, model_config: ModelConfig, class_names: Sequence[str], *,
                 config: InferenceConfig | None = None, device: torch.device | str = "cpu",
                 default_size: int | None = None, presence: PresenceRule | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.model_config = model_config
        self.class_names = list(class_names)
        self.config = config or InferenceConfig()
        self.size = self.config.size or default_size
        self.background_power = self.config.background_power
        self.presence = presence if self.config.calibrated_presence else None
        self.pamr = PAMR(model_config.pamr_iters, model_config.pamr_dilations).to(self.device)

    @classmethod
    def from_checkpoint(cls, path: Path | str, config: InferenceConfig | None = None,
                        device: torch.device | str = "cpu") -> Predictor:
        state = load_checkpoint(Path(path))
        model_config = config_from_dict(ModelConfig, state["model_config"])
        presence = PresenceRule.from_dict(state["presence"]) if state.get("presence") else None
        return cls(model_from_checkpoint(state), model_config, state["class_names"], config=config,
                   device=device, default_size=input_size(model_config, state["train_config"]),
                   presence=presence)

    @property
    def num_classes(self) -> int:
        return self.model_config.num_classes

    def present(self, reading: Reading) -> tuple[np.ndarray, np.ndarray]:
        """The classes the model judges present, (K,) bool, and their presence scores (K,)."""
        scores = reading.tag_scores.cpu().numpy().astype(np.float32)
        if self.presence is not None:
            features = reading.evidence()
            keep, scores = self.presence.decide(features), self.presence.scores(features).astype(np.float32)
        else:
            keep = scores > self.config.tag_threshold
        if self.model_config.has_background:
            keep[0] = True
        return keep, scores

    def _filter(self, present: np.ndarray, known_tags: np.ndarray | None) -> torch.Tensor:
        mode = self.config.class_filter
        if mode == "auto":
            if known_tags is not None:
                mode = "known"
            elif MODE_FACTS[self.model_config.mode].uses_tags:
                mode = "predicted"
            else:
                mode = "none"
        keep = torch.ones(self.num_classes, dtype=torch.bool, device=self.device)
        if mode == "known" and known_tags is not None:
            keep = torch.as_tensor(np.asarray(known_tags) > 0, device=self.device)
        elif mode == "predicted":
            keep = torch.as_tensor(present, device=self.device)
        if self.model_config.has_background:
            keep[0] = True
        if not keep.any():  # nothing predicted: better the unfiltered map than none
            keep[:] = True
        return keep

    def _base_image(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, h, w) normalised, the longer side resized to ``size``."""
        height, width = image.shape[:2]
        if self.size and max(height, width) > REDUCE_ABOVE * self.size:
            image = reduce_image(image, max(height, width) // (2 * self.size))
        pixels = image_to_tensor(image).to(self.device)
        if not self.size:
            return normalize(pixels[None])
        factor = self.size / max(height, width)
        base = (max(1, round(height * factor)), max(1, round(width * factor)))
        return normalize(F.interpolate(pixels[None].float(), size=base, mode="bilinear",
                                       align_corners=False, antialias=True).clamp(0, 255))

    def _stored_views(self, stored: Mapping[str, np.ndarray] | None) -> list[str] | None:
        """The views of a feature-store entry that stand for this predictor's own reading at scale
        1 (a light head reading at its feature size, scale 1 only: "s1", then "s1f" when it
        mirrors, as the image path batches them), or None (the levels are computed from the image)."""
        if stored is None or self.model_config.head != "light" or tuple(self.config.scales) != (1.0,) \
                or self.size != self.model_config.feature_image_size:
            return None
        views = ["s1", "s1f"] if self.config.flip else ["s1"]
        if any(f"{view}/{LEVELS[0]}" not in stored for view in views):
            return None
        return views

    @torch.no_grad()
    def read(self, image: np.ndarray, stored: Mapping[str, np.ndarray] | None = None) -> Reading:
        """``image`` (H, W, 3) uint8 RGB -> the model's :class:`Reading` (no class filter).

        ``stored``: the image's feature-store entry (`slrnet.features.FeatureExtractor.extract`) of
        the light head's spec: its "s1" / "s1f" levels replace the backbone's forward pass (the
        image still gives the output grid and PAMR's guide)."""
        base_image = self._base_image(image)
        base = base_image.shape[-2:]
        probs = torch.zeros(1, self.num_classes, *base, device=self.device)
        tag_scores = torch.zeros(self.num_classes, device=self.device)
        views = self._stored_views(stored)
        scales = (1.0,) if views is not None else self.config.scales
        for scale in scales:
            if views is not None:  # the view and its mirror, batched as the image path does
                depth = len(self.model.head.features.project)
                out = self.model.forward_levels([
                    torch.stack([torch.from_numpy(np.asarray(stored[f"{view}/{name}"])) for view in views])
                    .to(self.device) for name in LEVELS[:depth]
                ])
            else:
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
        return Reading(probs / len(scales), tag_scores / len(scales), base_image)

    @torch.no_grad()
    def predict(self, image: np.ndarray, known_tags: np.ndarray | None = None, *,
                output_size: tuple[int, int] | None = None,
                stored: Mapping[str, np.ndarray] | None = None) -> Prediction:
        """``image`` (H, W, 3) uint8 RGB; ``known_tags`` (K,) 0/1 for an image with human tags.
        ``output_size``: the (H, W) of the label map when ``image`` is a reduced copy of the photo
        (default: the image's own). ``stored``: its feature-store entry (see :meth:`read`)."""
        reading = self.read(image, stored)
        present, presence_scores = self.present(reading)
        keep = self._filter(present, known_tags)
        probs, labels, confidence = self.label(reading, keep, output_size or image.shape[:2])
        return Prediction(
            probs=probs.cpu().numpy().astype(np.float32),
            labels=labels,
            confidence=confidence,
            tag_scores=reading.tag_scores.cpu().numpy().astype(np.float32),
            classes=keep.cpu().numpy(),
            present=present,
            presence_scores=presence_scores,
        )

    @torch.no_grad()
    def label(self, reading: Reading, keep: torch.Tensor | np.ndarray,
              size: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """The reading over the classes ``keep`` (K,) bool: probabilities (K, h, w) at the model's
        resolution, and the label map and confidence at ``size`` (see :class:`Prediction`)."""
        keep = torch.as_tensor(keep, dtype=torch.bool, device=self.device)
        probs = self._filtered(reading, keep)[0]
        labels, confidence = top_class_in_bands(probs, size, keep=keep)
        labels[confidence < round(self.config.uncertain_below * 255)] = IGNORE_INDEX
        return probs, labels, confidence

    def _filtered(self, reading: Reading, keep: torch.Tensor) -> torch.Tensor:
        """(1, K, h, w): the reading over the kept classes, background power, PAMR and the
        peak-relative reading applied; 0 for the other classes."""
        base_image, base = reading.guide, tuple(reading.guide.shape[-2:])
        # Renormalise over the kept classes first: with many classes the kept ones hold a small
        # share of the softmax mass, and a power applied before that would crush background.
        probs = reading.probs * keep.view(1, -1, 1, 1)
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
        return probs
