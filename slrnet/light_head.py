"""SLRNet's head sized for a CPU, on the frozen backbone's stored multi-level features.

The objective and the modules of SLRNet are kept: nGWP classification with the focal penalty
(`heads.class_scores`), an auxiliary head initialising the dictionary, the cross-view low-rank
module (`low_rank.LowRankReconstruction`) coding both views with shared atoms, the mask and code
consistency terms, online PAMR pseudo-labels and the mask CE (all in `slrnet.modes`, unchanged:
`LightSLRNet.forward_train` returns the same outputs as `SLRNet.forward_train`).

Departures from the paper's head (the GPU keeps the paper's head, `slrnet.model.SLRNet`):

- inputs: the frozen backbone's outputs at strides 4, 8, 16, 32 (a hypercolumn) instead of a
  fine-tuned backbone's stride-4 and deep features: read from the feature store, so a step runs no
  backbone at all. A linear per-pixel probe on MSRC-21 scores 0.576 with MobileNetV2's hypercolumn
  against 0.367 with its stride-16 features alone (issue 18), and the frozen backbone was already
  the CPU default for tags (benchmarks/RESULTS.md).
- decoder: one 1x1 projection per level, upsampled to the stride-4 grid and summed (= a 1x1 conv
  of the concatenated hypercolumn, computed at each level's own resolution), instead of ASPP + a
  3x3 skip fusion. ASPP's dilated 3x3 convs and the decoder were 40 % of the old CPU step; the
  stride-16/32 levels already carry the context ASPP adds.
- no global cue injection and no stochastic gate: the hypercolumn already holds the shallow
  features GCI injects; the gate mixes two feature maps this head does not have.
- classifiers: 1x1 conv -> BN -> ReLU -> 1x1 conv (main and auxiliary) instead of two / one
  3x3 convs: a 3x3 conv at the stride-4 grid costs 9x a 1x1 one.
- width `channels` (64 by default, paper 256) for the projection and the low-rank module.
- views: the second view is the stored half-scale view ("s0.5"/"s0.5f") of the same crop instead
  of a resize of the first, and both views may be mirrored (the first from "s1" or "s1f"); crops
  are random resized crops on the feature grid (`slrnet.feature_data`).
- losses at the stride-4 grid of the crop, PAMR there too, its guide the stored image of that grid.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slrnet.backbones import Backbone
from slrnet.heads import class_scores
from slrnet.low_rank import LowRankReconstruction, init_dictionary


def _flip_where(x: Tensor, flip: Tensor) -> Tensor:
    """Horizontally flip the images of x (B, ...) where flip (B,) is True."""
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


@functools.lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in): 1-D bilinear resizing (align_corners=False) as a matrix."""
    eye = torch.eye(n_in)[:, None]                                           # (n_in, 1, n_in)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0].T.contiguous()


def resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` as two matrix products:
    the same values, and a backward pass several times faster on a CPU than upsample's."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    rows = _resize_matrix(h, size[0]).to(x)
    cols = _resize_matrix(w, size[1]).to(x)
    return rows @ (x @ cols.T)


class LevelProjection(nn.Module):
    """Hypercolumn -> features: [(B, C_i, h_i, w_i)] (stride-4 level first) -> (B, channels, h_1, w_1).

    Each level is projected by a 1x1 conv at its own resolution, upsampled (bilinear) to the
    first level's grid and summed, then batch-normalised and rectified.
    """

    def __init__(self, level_channels: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, channels, 1, bias=False) for c in level_channels)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, levels: Sequence[Tensor]) -> Tensor:
        grid = tuple(levels[0].shape[-2:])
        x = self.project[0](levels[0])
        for conv, level in zip(self.project[1:], levels[1:], strict=True):
            x = x + resize_bilinear(conv(level), grid)
        return F.relu(self.norm(x))


class PixelClassifier(nn.Module):
    """1x1 conv -> BN -> ReLU -> channel dropout -> 1x1 conv: (B, channels, h, w) -> (B, K', h, w), with
    K' = K - 1 and a prepended constant background logit 1 when ``constant_background`` (1-Stage),
    or with the auxiliary rule background = 1 - max foreground (``aux_background``)."""

    def __init__(self, channels: int, num_classes: int, constant_background: bool,
                 aux_background: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.constant_background = constant_background
        self.aux_background = aux_background
        self.hidden = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        self.out = nn.Conv2d(channels, num_classes - int(constant_background), 1)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.out(self.hidden(x))
        if not self.constant_background:
            return logits
        background = (1.0 - logits.amax(dim=1, keepdim=True)) if self.aux_background \
            else torch.ones_like(logits[:, :1])
        return torch.cat([background, logits], dim=1)


class LightHead(nn.Module):
    """Projection -> auxiliary classifier + cross-view low-rank module -> main classifier.

    Args:
        level_channels: channels of the stored levels (stride 4 first).
        num_classes: K, background included when there is one.
        constant_background: class 0 of the main head is the constant logit 1.
        channels: projection / low-rank width.
        low_rank_iters, low_rank_temperature: T and τ of the low-rank module.
        dropout: before each classifier's last 1x1 conv.
    """

    def __init__(self, level_channels: Sequence[int], num_classes: int, constant_background: bool,
                 channels: int = 64, low_rank_iters: int = 1, low_rank_temperature: float = 1.0,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.features = LevelProjection(level_channels, channels)
        self.aux_head = PixelClassifier(channels, num_classes, constant_background, aux_background=True,
                                        dropout=dropout)
        self.low_rank = LowRankReconstruction(channels, low_rank_iters, low_rank_temperature)
        self.seg_head = PixelClassifier(channels, num_classes, constant_background, dropout=dropout)

    def forward(self, levels: Sequence[Tensor]) -> dict[str, Tensor]:
        """One view: levels -> {"seg_logits", "aux_logits": (B, K, h_1, w_1), "cls_logits": (B, K)}."""
        feats = self.features(levels)
        aux = self.aux_head(feats)
        b, c, h, w = feats.shape
        dict_init = init_dictionary(feats, aux.detach()).detach()
        refined = self.low_rank(feats.flatten(2).transpose(1, 2), dict_init).features
        logits = self.seg_head(refined.transpose(1, 2).reshape(b, c, h, w))
        return {"seg_logits": logits, "cls_logits": class_scores(logits), "aux_logits": aux}

    def forward_two_views(self, levels1: Sequence[Tensor], levels2: Sequence[Tensor],
                          flip: Tensor) -> dict[str, Tensor]:
        """Both views coded jointly; view 2 is mirrored against view 1 where ``flip`` (B,) is True.

        Returns the outputs of `slrnet.model.SLRNet.forward_train` ("seg_logits", "seg_logits_view2",
        "probs", "probs_view2", "aux_logits", "cls_logits", "cls_logits_view2", "cls_logits_aux",
        "codes", "codes_view2", "flip"), every map of view 2 on view 1's grid and orientation.
        """
        feats1, feats2 = self.features(levels1), self.features(levels2)
        aux = self.aux_head(feats1)
        dict_init = init_dictionary(feats1, aux.detach()).detach()   # from view 1, not trained through
        b, c, h1, w1 = feats1.shape
        h2, w2 = feats2.shape[-2:]
        tokens = torch.cat([feats1.flatten(2), feats2.flatten(2)], dim=2).transpose(1, 2)
        lr = self.low_rank(tokens, dict_init)
        refined1, refined2 = lr.features.transpose(1, 2).split([h1 * w1, h2 * w2], dim=2)
        codes1, codes2 = lr.codes.split([h1 * w1, h2 * w2], dim=2)
        logits1 = self.seg_head(refined1.reshape(b, c, h1, w1))
        logits2 = self.seg_head(refined2.reshape(b, c, h2, w2))

        def back(x: Tensor) -> Tensor:  # view 2's cells are centred on 2x2 blocks of view 1's
            return resize_bilinear(_flip_where(x, flip), (h1, w1))

        return {
            "seg_logits": logits1, "seg_logits_view2": back(logits2),
            "probs": logits1.softmax(dim=1), "probs_view2": back(logits2.softmax(dim=1)),
            "aux_logits": aux,
            "cls_logits": class_scores(logits1), "cls_logits_view2": class_scores(logits2),
            "cls_logits_aux": class_scores(aux),
            "codes": codes1.reshape(b, -1, h1, w1), "codes_view2": back(codes2.reshape(b, -1, h2, w2)),
            "flip": flip,
        }


class LightSLRNet(nn.Module):
    """The frozen level backbone + `LightHead`: trains on stored features, predicts from images.

    ``forward(images)`` (ImageNet-normalised, (B, 3, H, W)) computes the levels (no gradients) and
    runs the head: the `slrnet.inference.Predictor` contract of `SLRNet`. ``forward_levels`` runs the
    head on levels already computed (read from the feature store). ``forward_train(batch)`` takes a
    `slrnet.feature_data.FeatureTrainSet` batch. The backbone is part of the state dict (a
    checkpoint predicts on its own) but never trains.
    """

    def __init__(self, backbone: Backbone, head: LightHead) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.head = head
        self.num_classes = head.seg_head.out.out_channels + int(head.seg_head.constant_background)

    def train(self, mode: bool = True) -> LightSLRNet:
        super().train(mode)
        self.backbone.eval()  # frozen: never in training mode
        return self

    def param_groups(self) -> list[dict]:
        """Only the head trains (the `build_optimizer` contract; lr x10 as SLRNet's new layers)."""
        return [{"params": [p for p in self.head.parameters() if p.requires_grad], "lr_mult": 10.0,
                 "name": "new"}]

    def forward_levels(self, levels: Sequence[Tensor]) -> dict[str, Tensor]:
        return self.head([level.float() for level in levels])

    def forward(self, images: Tensor, two_views: bool = False) -> dict[str, Tensor]:
        if two_views:
            raise ValueError("LightSLRNet trains on feature batches: call forward_train(batch)")
        with torch.no_grad():
            levels = self.backbone.levels(images)
        return self.forward_levels(levels)

    def forward_train(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch "v1/l1".."v1/l4", "v2/l1".."v2/l4" (B, C_i, h_i, w_i), "flip" (B,) bool."""
        depth = len(self.head.features.project)
        levels1 = [batch[f"v1/l{i}"].float() for i in range(1, depth + 1)]
        levels2 = [batch[f"v2/l{i}"].float() for i in range(1, depth + 1)]
        return self.head.forward_two_views(levels1, levels2, batch["flip"].to(torch.bool))
