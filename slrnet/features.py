"""Multi-level features of a frozen backbone, computed once per image and view (the feature store's
unit; storage and filling live in storage.feature_store / services.features). The spec
(`FeatureSpec`, torch-free) lives in slrnet.feature_spec and is re-exported here.

API (stable; the feature store builds on it)::

    spec = FeatureSpec.for_backbone("efficientnet_lite0")   # weights id, 320 px, 4 views by default
    spec.key        # "efficientnet_lite0-57934424/s320/s1+s1f+s0.5+s0.5f": a filesystem-safe path part
    extractor = FeatureExtractor(spec, device="cpu")
    arrays = extractor.extract(image)      # image (H, W, 3) uint8 RGB -> {name: float16 array}
    arrays["s1/l1"]      (C1, h, w)          stride 4 of view "s1"  (Lite0: C = 24, 40, 112, 320
    arrays["s1/l2"]      (C2, h/2, w/2)      stride 8                for l1..l4)
    arrays["s1/l3"]      (C3, h/4, w/4)      stride 16
    arrays["s1/l4"]      (C4, h/8, w/8)      stride 32
    arrays["s1/image"]   (3, h, w)           the view's pixels in [0, 1] on the stride-4 grid (the
                                             guide PAMR refines pseudo-labels with)
    extractor.extract_batch([image, ...])  # the same for several images (a list of dicts)

Views: "s<scale>" is the image resized so its longer side is ``round(scale * image_size)`` (each
side a multiple of 32 at scale 1, of 32·scale below: the stride-4 grid of "s0.5" is half that of
"s1"); a trailing "f" mirrors it horizontally before the backbone. SLRNet's two training views
come from these: the first from "s1" / "s1f", the second, half size, from "s0.5" / "s0.5f".

Spatial sizes ceil-divide by the stride ("same" padding). Values are float16 (half the disk; the
head computes in float32). The same spec and image give the same arrays (eval mode, no randomness).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from slrnet.backbones import build_level_backbone
from slrnet.data import image_to_tensor, normalize
from slrnet.feature_spec import (  # noqa: F401  (the spec is part of this module's API)
    DEFAULT_BACKBONE,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_VIEWS,
    IMAGE,
    LEVELS,
    FeatureSpec,
    parse_view,
    view_size,
    weights_id,
)


class FeatureExtractor:
    """The frozen backbone of ``spec`` on ``device``, eval mode; thread-compatible after construction.

    ValueError when the spec's weights are not the ones the backbone loads.
    """

    def __init__(self, spec: FeatureSpec, device: torch.device | str = "cpu") -> None:
        if weights_id(spec.backbone) != spec.weights:
            raise ValueError(f"{spec.backbone} loads weights {weights_id(spec.backbone)}, not {spec.weights}")
        self.spec = spec
        self.device = torch.device(device)
        self.net = build_level_backbone(spec.backbone).to(self.device)
        self.level_channels = tuple(self.net.level_channels)
        self._views = [(view, *parse_view(view)) for view in spec.views]

    @torch.no_grad()
    def extract(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """(H, W, 3) uint8 RGB -> {"<view>/<level>": (C, h, w) float16, "<view>/image": (3, h, w)}."""
        pixels = image_to_tensor(image).to(self.device)[None].float()
        height, width = pixels.shape[-2:]
        out: dict[str, np.ndarray] = {}
        by_scale: dict[float, list[tuple[str, bool]]] = {}
        for view, scale, flip in self._views:
            by_scale.setdefault(scale, []).append((view, flip))
        for scale, views in by_scale.items():
            size = view_size(height, width, self.spec.image_size, scale)
            resized = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False,
                                    antialias=True).clamp(0, 255)
            batch = torch.cat([resized.flip(-1) if flip else resized for _, flip in views])
            levels = self.net.levels(normalize(batch))
            grid = levels[0].shape[-2:]
            guide = F.interpolate(batch / 255.0, size=grid, mode="bilinear", align_corners=False,
                                  antialias=True)
            for i, (view, _) in enumerate(views):
                for name, level in zip(LEVELS, levels, strict=True):
                    out[f"{view}/{name}"] = level[i].to(torch.float16).cpu().numpy()
                out[f"{view}/{IMAGE}"] = guide[i].to(torch.float16).cpu().numpy()
        return {name: out[name] for name in self.spec.names()}

    def extract_batch(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """`extract` of each image (sizes differ, so images go one by one; a view's flips share a
        forward pass)."""
        return [self.extract(image) for image in images]


def stored_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Bytes of one image's arrays (what the store keeps, before any container overhead)."""
    return int(sum(a.nbytes for a in arrays.values()))
