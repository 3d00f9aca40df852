"""Decoder and heads (1-Stage, Araslanov & Roth CVPR 2020, as reused by SLRNet).

- `ASPP` + `Decoder`: deep features -> 256-channel stride-4 map (DeepLabV3+ style skip).
- `SegmentationHead`: global cue injection (GCI) of the deep map into the shallow backbone
  features, a stochastic gate mixing deep and shallow, then convs to class logits, with a constant
  background logit (tags) or a learnt one (masks).
- `AuxHead`: the small head whose class softmax initialises the low-rank dictionary; its
  background is 1 − max foreground logit in the constant-background setting.
- `class_scores`: normalised global weighted pooling (nGWP) + focal mask penalty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelAffine(nn.Module):
    """Learnt per-channel scale and shift: (B, C, H, W) -> (B, C, H, W).

    The official ASPP keeps its BatchNorm layers in eval mode with their initial statistics
    (mean 0, variance 1) while training their affine parameters, which is exactly this layer;
    writing it out also avoids batch statistics of the 1x1 image-pooling branch, undefined for a
    batch of one.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _conv_norm_relu(in_ch: int, out_ch: int, kernel: int, dilation: int = 1,
                    norm: type[nn.Module] = nn.BatchNorm2d, separable: bool = False) -> nn.Sequential:
    """conv -> norm -> ReLU. ``separable`` (k > 1 only) replaces the k x k conv by a depthwise k x k
    conv followed by a 1 x 1 conv (DeepLabV3+'s lighter decoder): about k² times fewer multiply-adds
    at equal width, which is what makes the stride-4 head affordable on a CPU."""
    pad = dilation * (kernel // 2)
    if separable and kernel > 1:
        return nn.Sequential(
            nn.Conv2d(in_ch, in_ch, kernel, padding=pad, dilation=dilation, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False), norm(out_ch), nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation, bias=False),
                         norm(out_ch), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: (B, in_ch, h, w) -> (B, out_ch, h, w).

    Branches: 1x1, three dilated 3x3 (1/12/24/36 at output stride 8, halved at 16) and image
    pooling, concatenated and fused by a 1x1 conv, then dropout 0.5.
    """

    def __init__(self, in_ch: int, out_ch: int, output_stride: int, separable: bool = False) -> None:
        super().__init__()
        rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        self.branches = nn.ModuleList(
            [_conv_norm_relu(in_ch, out_ch, 1, norm=ChannelAffine)]
            + [_conv_norm_relu(in_ch, out_ch, 3, dilation=r, norm=ChannelAffine, separable=separable)
               for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                  _conv_norm_relu(in_ch, out_ch, 1, norm=ChannelAffine))
        self.fuse = _conv_norm_relu(5 * out_ch, out_ch, 1, norm=ChannelAffine)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand_as(outs[0]))
        return self.dropout(self.fuse(torch.cat(outs, dim=1)))


class Decoder(nn.Module):
    """ASPP on the deep features plus a skip from the stride-4 features.

    (low (B, low_ch, H/4, W/4), deep (B, deep_ch, H/os, W/os)) -> (B, channels, H/4, W/4).
    ``separable``: depthwise-separable 3x3 convs (see `_conv_norm_relu`).
    """

    def __init__(self, low_ch: int, deep_ch: int, output_stride: int, channels: int = 256,
                 separable: bool = False) -> None:
        super().__init__()
        self.aspp = ASPP(deep_ch, channels, output_stride, separable)
        self.skip = _conv_norm_relu(low_ch, 48, 1)
        self.fuse = _conv_norm_relu(channels + 48, channels, 3, separable=separable)

    def forward(self, low: Tensor, deep: Tensor) -> Tensor:
        x = F.interpolate(self.aspp(deep), size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([x, self.skip(low)], dim=1))


class GlobalCueInjection(nn.Module):
    """GCI (1-Stage, Sec. 3.3): modulate shallow features with global attributes of the deep map.

    A 1x1 conv of the deep map, max-pooled over space, gives a per-channel scale γ and shift β
    (adaptive instance normalisation); the shallow features are normalised (BN without affine),
    modulated as x·(1 + γ) + β, and passed through a 1x1 conv.

    (low (B, low_ch, h, w), deep (B, channels, h, w)) -> (B, channels, h, w).
    """

    def __init__(self, low_ch: int, channels: int = 256) -> None:
        super().__init__()
        self.attributes = _conv_norm_relu(channels, 2 * channels, 1)
        self.skip = nn.Sequential(nn.Conv2d(low_ch, channels, 1, bias=False),
                                  nn.BatchNorm2d(channels, affine=False))
        self.out = _conv_norm_relu(channels, channels, 1)

    def forward(self, low: Tensor, deep: Tensor) -> Tensor:
        attrs = self.attributes(deep).flatten(2).amax(dim=-1)            # (B, 2C)
        gamma, beta = attrs.chunk(2, dim=1)
        x = self.skip(low)
        x = F.relu(x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None])
        return self.out(x)


class StochasticGate(nn.Module):
    """Stochastic gate (1-Stage, Sec. 3.3): mixes deep and shallow features.

    Training: each element takes the shallow value with probability `rate`, otherwise the deep
    value rescaled as (deep − rate·shallow)/(1 − rate), so its expectation is the deep feature.
    Inference: the deterministic mix (1 − rate)·deep + rate·shallow, as in 1-Stage.
    (deep (B, C, h, w), shallow (B, C, h, w)) -> (B, C, h, w).
    """

    def __init__(self, rate: float = 0.3) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, deep: Tensor, shallow: Tensor) -> Tensor:
        if not self.training:
            return (1.0 - self.rate) * deep + self.rate * shallow
        keep_deep = torch.rand_like(deep) >= self.rate
        deep = (deep - self.rate * shallow) / (1.0 - self.rate)
        return torch.where(keep_deep, deep, shallow)


def _add_constant_background(fg_logits: Tensor) -> Tensor:
    """Prepend the constant background logit 1 (1-Stage): (B, K-1, h, w) -> (B, K, h, w)."""
    return torch.cat([torch.ones_like(fg_logits[:, :1]), fg_logits], dim=1)


class SegmentationHead(nn.Module):
    """Main head: GCI + stochastic gate + two 3x3 convs + 1x1 classifier.

    Args:
        low_ch: channels of the backbone's stride-4 features.
        num_classes: K (background included when there is one).
        constant_background: class 0 is the fixed logit 1 instead of a learnt channel.
        channels: decoder width.
        gate_rate: stochastic gate rate.
        separable: depthwise-separable 3x3 convs (see `_conv_norm_relu`).

    forward(low (B, low_ch, h, w), feats (B, channels, h, w)) -> logits (B, K, h, w).
    """

    def __init__(self, low_ch: int, num_classes: int, constant_background: bool,
                 channels: int = 256, gate_rate: float = 0.3, separable: bool = False) -> None:
        super().__init__()
        self.constant_background = constant_background
        self.gci = GlobalCueInjection(low_ch, channels)
        self.gate = StochasticGate(gate_rate)
        self.classifier = nn.Sequential(
            _conv_norm_relu(channels, channels, 3, separable=separable), nn.Dropout(0.5),
            _conv_norm_relu(channels, channels, 3, separable=separable), nn.Dropout(0.1),
            nn.Conv2d(channels, num_classes - int(constant_background), 1),
        )

    def forward(self, low: Tensor, feats: Tensor) -> Tensor:
        x = self.gate(feats, self.gci(low, feats))
        logits = self.classifier(x)
        return _add_constant_background(logits) if self.constant_background else logits


class AuxHead(nn.Module):
    """Auxiliary head initialising the low-rank dictionary: (B, channels, h, w) -> (B, K, h, w).

    With a constant background in the main head, the auxiliary background logit is
    1 − max_c(foreground logit_c) (official SLRNet), otherwise every channel is learnt.
    """

    def __init__(self, num_classes: int, constant_background: bool, channels: int = 256,
                 separable: bool = False) -> None:
        super().__init__()
        self.constant_background = constant_background
        self.classifier = nn.Sequential(
            _conv_norm_relu(channels, channels, 3, separable=separable), nn.Dropout(0.5),
            nn.Conv2d(channels, num_classes - int(constant_background), 1),
        )

    def forward(self, feats: Tensor) -> Tensor:
        logits = self.classifier(feats)
        if not self.constant_background:
            return logits
        background = 1.0 - logits.amax(dim=1, keepdim=True)
        return torch.cat([background, logits], dim=1)


def class_scores(logits: Tensor, focal_power: float = 3.0, focal_offset: float = 0.01) -> Tensor:
    """Image-level class scores by nGWP with the focal mask penalty (1-Stage, Eqs. 2-4).

    y_c = Σ_i m_ic·s_ic / (1 + Σ_i m_ic) + (1 − m̄_c)^p · log(λ + m̄_c),
    with s the logits, m = softmax_K(s) the masks, m̄_c their spatial mean, p = 3, λ = 0.01.

    Args:
        logits: (B, K, h, w) segmentation logits.

    Returns:
        (B, K) scores for every channel (background included; losses use the foreground).
    """
    probs = logits.softmax(dim=1).flatten(2)
    s = logits.flatten(2)
    pooled = (s * probs).sum(-1) / (1.0 + probs.sum(-1))
    mean = probs.mean(-1)
    return pooled + (1.0 - mean).pow(focal_power) * torch.log(focal_offset + mean)
