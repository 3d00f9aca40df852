"""SLRNet: single-stage segmentation with a cross-view self-supervised low-rank module.

Pan et al., "Learning Self-Supervised Low-Rank Network for Single-Stage Weakly and
Semi-Supervised Semantic Segmentation", IJCV 2022; built on 1-Stage (Araslanov & Roth, CVPR 2020).

Public API (stable; see the module docstrings of `modes` and `losses` for the objective)::

    model = build_model(cfg)                  # cfg: slrnet.config.ModelConfig
    out = model(images)                       # images (B, 3, H, W) ImageNet-normalised
    out["seg_logits"]   (B, K, H/4, W/4)      # softmax over K -> class probabilities
    out["cls_logits"]   (B, K)                # nGWP image scores, column 0 = background if any
    out["aux_logits"]   (B, K, H/4, W/4)      # auxiliary head (dictionary initialisation)
    outs = model.forward_train(images)        # two views, see `SLRNet.forward_train`
    outs = model(images, two_views=True)      # the same through __call__ (needed under DDP, whose
                                              # gradient hooks are armed by forward only)
    model.param_groups()                      # [{"name": "backbone", "lr_mult": 1.0, ...},
                                              #  {"name": "new", "lr_mult": 10.0, ...}]

Additions to the agreed contract (all backward compatible): the "aux_logits" output, the
`two_views` flag of `forward`, the extra keys of `forward_train`, `ModelConfig.background`
("auto": a constant background logit when image tags train the classifier, wsss and
ssss_tags as in the official code; a learnt background channel for ssss, masks only),
`ModelConfig.feature_channels` and the other tuning fields, and `compute_losses(...,
weights=None)` meaning `LossWeights()`. The background kind changes the head's shape: a
checkpoint only loads into a model of the same background kind (wsss / ssss_tags vs ssss under
"auto").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slrnet.backbones import Backbone, build_backbone, build_level_backbone
from slrnet.config import ModelConfig
from slrnet.heads import AuxHead, Decoder, SegmentationHead, class_scores
from slrnet.light_head import LightHead, LightSLRNet
from slrnet.low_rank import LowRankReconstruction, init_dictionary


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _flip_where(x: Tensor, flip: Tensor) -> Tensor:
    """Horizontally flip the images of the batch x (B, ...) where flip (B,) is True."""
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


class SLRNet(nn.Module):
    """Backbone -> decoder -> cross-view low-rank module -> segmentation head.

    Args:
        backbone: feature extractor (`slrnet.backbones`).
        num_classes: K, background included when there is one.
        constant_background: class 0 of the main head is the constant logit 1 (image-tag
            supervision) instead of a learnt channel.
        channels: decoder / low-rank width (256).
        view_scale: size of the second training view relative to the crop (0.5).
        view_flip: flip the second view horizontally with probability 0.5 per image.
        low_rank_iters: T (1).
        low_rank_temperature: τ of the code softmax (1.0).
        gate_rate: stochastic gate rate (0.3).
        separable_head: depthwise-separable 3x3 convs in the decoder and heads (the CPU-sized
            model; the paper's head uses full 3x3 convs).
    """

    def __init__(self, backbone: Backbone, num_classes: int, constant_background: bool,
                 channels: int = 256, view_scale: float = 0.5, view_flip: bool = False,
                 low_rank_iters: int = 1, low_rank_temperature: float = 1.0, gate_rate: float = 0.3,
                 separable_head: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.view_scale = view_scale
        self.view_flip = view_flip
        self.backbone = backbone
        self.decoder = Decoder(backbone.low_channels, backbone.deep_channels, backbone.output_stride,
                               channels, separable_head)
        self.aux_head = AuxHead(num_classes, constant_background, channels, separable_head)
        self.low_rank = LowRankReconstruction(channels, low_rank_iters, low_rank_temperature)
        self.seg_head = SegmentationHead(backbone.low_channels, num_classes, constant_background,
                                         channels, gate_rate, separable_head)
        self._init_new_layers()

    def _init_new_layers(self) -> None:
        """Kaiming-normal convs and unit-scale norms in the layers that are not pretrained (1-Stage)."""
        for name, module in self.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def param_groups(self) -> list[dict]:
        """Trainable parameters split into the pretrained backbone (lr ×1) and new layers (lr ×10)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in self.backbone.parameters()}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": backbone, "lr_mult": 1.0, "name": "backbone"},
                {"params": new, "lr_mult": 10.0, "name": "new"}]

    def _features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> (low (B, C_low, H/4, W/4), decoder features (B, C, H/4, W/4))."""
        low, deep = self.backbone(images)
        return low, self.decoder(low, deep)

    def forward(self, images: Tensor, two_views: bool = False) -> dict[str, Tensor]:
        """Inference on one view: the low-rank module codes this view alone.

        images (B, 3, H, W) -> {"seg_logits": (B, K, h, w), "cls_logits": (B, K),
        "aux_logits": (B, K, h, w)} with (h, w) the stride-4 size.
        With `two_views=True` this is `forward_train(images)`.
        """
        if two_views:
            return self.forward_train(images)
        low, feats = self._features(images)
        aux = self.aux_head(feats)
        b, c, h, w = feats.shape
        dict_init = init_dictionary(feats, aux.detach()).detach()
        refined = self.low_rank(feats.flatten(2).transpose(1, 2), dict_init).features
        logits = self.seg_head(low, refined.transpose(1, 2).reshape(b, c, h, w))
        return {"seg_logits": logits, "cls_logits": class_scores(logits), "aux_logits": aux}

    def make_second_view(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The paper's second view: the crop downscaled by `view_scale`, optionally flipped.

        Returns the view (B, 3, ⌊s·H⌋, ⌊s·W⌋) and the per-image flip flags (B,) bool.
        """
        h, w = images.shape[-2:]
        view = _resize(images, (max(int(h * self.view_scale), 1), max(int(w * self.view_scale), 1)))
        flip = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        if self.view_flip:
            flip = torch.rand(images.shape[0], device=images.device) < 0.5
            view = _flip_where(view, flip)
        return view, flip

    def forward_train(self, images: Tensor) -> dict[str, Tensor]:
        """Both views through the network, coded jointly by the low-rank module.

        images (B, 3, H, W) -> dict; (h, w) is the stride-4 size of the first view and every map of
        the second view is mapped back onto that grid (resized, un-flipped):

        - "seg_logits", "seg_logits_view2": (B, K, h, w) main-head logits;
        - "probs", "probs_view2": (B, K, h, w) their softmax (view 2: resized after the softmax);
        - "aux_logits": (B, K, h, w) auxiliary head, first view;
        - "cls_logits", "cls_logits_view2", "cls_logits_aux": (B, K) nGWP scores, each computed on
          its own view before any resizing;
        - "codes", "codes_view2": (B, K, h, w) low-rank codes;
        - "flip": (B,) bool, which second views were flipped.
        """
        view2, flip = self.make_second_view(images)
        low1, feats1 = self._features(images)
        low2, feats2 = self._features(view2)
        aux = self.aux_head(feats1)
        # Dictionary initialised from the first view only and not trained through (official).
        dict_init = init_dictionary(feats1, aux.detach()).detach()

        b, c, h1, w1 = feats1.shape
        h2, w2 = feats2.shape[-2:]
        tokens = torch.cat([feats1.flatten(2), feats2.flatten(2)], dim=2).transpose(1, 2)   # (B, N1+N2, C)
        lr = self.low_rank(tokens, dict_init)
        refined1, refined2 = lr.features.transpose(1, 2).split([h1 * w1, h2 * w2], dim=2)
        codes1, codes2 = lr.codes.split([h1 * w1, h2 * w2], dim=2)

        logits1 = self.seg_head(low1, refined1.reshape(b, c, h1, w1))
        logits2 = self.seg_head(low2, refined2.reshape(b, c, h2, w2))

        def back(x: Tensor) -> Tensor:
            return _resize(_flip_where(x, flip), (h1, w1))

        return {
            "seg_logits": logits1,
            "seg_logits_view2": back(logits2),
            "probs": logits1.softmax(dim=1),
            "probs_view2": back(logits2.softmax(dim=1)),
            "aux_logits": aux,
            "cls_logits": class_scores(logits1),
            "cls_logits_view2": class_scores(logits2),
            "cls_logits_aux": class_scores(aux),
            "codes": codes1.reshape(b, -1, h1, w1),
            "codes_view2": back(codes2.reshape(b, -1, h2, w2)),
            "flip": flip,
        }


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build SLRNet from a `ModelConfig` (loads backbone weights when `cfg.pretrained`): the
    paper's model, or with ``cfg.head == "light"`` the light head on stored features
    (`slrnet.light_head.LightSLRNet`)."""
    if cfg.head == "light":
        levels = build_level_backbone(cfg.backbone, cfg.pretrained, cfg.backbone_weights)
        head = LightHead(levels.level_channels, cfg.num_classes, cfg.constant_background,
                         channels=cfg.feature_channels, low_rank_iters=cfg.low_rank_iters,
                         low_rank_temperature=cfg.low_rank_temperature, dropout=cfg.head_dropout)
        return LightSLRNet(levels, head)
    backbone = build_backbone(cfg.backbone, cfg.output_stride, cfg.pretrained, cfg.backbone_weights)
    if cfg.freeze_backbone:
        backbone.requires_grad_(False)
    elif cfg.freeze_low:
        backbone.freeze_low()
    return SLRNet(
        backbone,
        num_classes=cfg.num_classes,
        constant_background=cfg.constant_background,
        channels=cfg.feature_channels,
        view_scale=cfg.view_scale,
        view_flip=cfg.view_flip,
        low_rank_iters=cfg.low_rank_iters,
        low_rank_temperature=cfg.low_rank_temperature,
        gate_rate=cfg.gate_rate,
        separable_head=cfg.separable_head,
    )
