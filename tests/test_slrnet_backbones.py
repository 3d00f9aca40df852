"""Backbone registry: offline construction, ImageNet weights, checkpoint key layout, frozen BN."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from slrnet.backbones import BACKBONES, WideResNet38, build_backbone
from slrnet.config import ModelConfig
from slrnet.model import build_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_registry_names() -> None:
    """The torch-free list of backbones (the UI's and the CLI's choices) is the registry's."""
    from slrnet.config import BACKBONES as BACKBONE_NAMES

    assert sorted(BACKBONE_NAMES) == sorted(BACKBONES)
    with pytest.raises(ValueError):
        build_backbone("vgg16", 16, False, None)


def test_pretrained_false_touches_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("file access while building with pretrained=False")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbidden)
    for name in ("mobilenet_v2", "resnet50", "tiny"):
        build_backbone(name, 16, False, None)


def test_mobilenet_v2_loads_imagenet_weights(torch_hub_cache: Path) -> None:
    state = torch.load(torch_hub_cache / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth",
                       map_location="cpu", weights_only=True)
    model = build_model(ModelConfig(num_classes=3, backbone="mobilenet_v2", pretrained=True))
    net = model.backbone
    torch.testing.assert_close(net.low[0][0].weight, state["features.0.0.weight"])
    torch.testing.assert_close(net.deep[-1].conv[-1].running_var, state["features.17.conv.3.running_var"])
    # weights survive dilation; BN is frozen and has no trainable parameters
    assert isinstance(net.low[0][1], FrozenBatchNorm2d)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("output_stride", [8, 16])
def test_mobilenet_dilation_keeps_receptive_field_growing(output_stride: int) -> None:
    net = build_backbone("mobilenet_v2", output_stride, False, None)
    dilations = [m.dilation[0] for m in net.deep.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    strides = [m.stride[0] for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert 2 ** strides.count(2) == output_stride
    assert dilations == sorted(dilations) and dilations[-1] == 32 // output_stride


def test_backbone_batchnorm_statistics_stay_frozen_in_training() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=3, backbone="mobilenet_v2", pretrained=False)).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.forward_train(torch.randn(2, 3, 64, 64))
    after = model.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed, "decoder BatchNorm should update in training"
    assert not any(k.startswith("backbone.") for k in changed)


def test_wideresnet38_matches_the_official_weights_layout() -> None:
    shapes = {k: tuple(v.shape) for k, v in WideResNet38(8).state_dict().items()}
    # keys and shapes of the 1-Stage ImageNet file ilsvrc-cls_rna-a1_cls1000_ep-0001.pth
    assert shapes["conv1a.weight"] == (64, 3, 3, 3)
    assert shapes["b2.conv_branch1.weight"] == (128, 64, 1, 1)
    assert shapes["b4_5.conv_branch2b1.weight"] == (512, 512, 3, 3)
    assert shapes["b5.conv_branch2a.weight"] == (512, 512, 3, 3)
    assert shapes["b5.conv_branch2b1.weight"] == (1024, 512, 3, 3)
    assert shapes["b6.conv_branch2a.weight"] == (512, 1024, 1, 1)
    assert shapes["b7.conv_branch2b2.weight"] == (4096, 2048, 1, 1)
    assert shapes["bn7.running_var"] == (4096,)
    assert "b3_1.conv_branch1.weight" not in shapes      # identity shortcut


def test_wideresnet38_without_weights_file_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="slrnet.backbones"):
        build_backbone("wideresnet38", 16, True, None)
    assert "random initialisation" in caplog.text


def test_backbone_weights_file_is_loaded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_backbone("tiny", 16, False, None)
    torch.save({"state_dict": source.state_dict(), "unrelated.weight": torch.zeros(1)}, tmp_path / "w.pth")
    # a checkpoint wrapping its state dict under "state_dict" is accepted
    loaded = build_backbone("tiny", 16, True, str(tmp_path / "w.pth"))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError):
        build_backbone("tiny", 16, True, str(tmp_path / "bad.pth"))


# Every registered backbone (timm style), a new one included: small inputs keep it fast (about 30 s
# for all on one core); WideResNet-38 (about 100M parameters, 6-9 s) runs on one 32x32 image.
@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_shapes_strides_gradients_and_freeze_low(name: str, output_stride: int) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, output_stride, False, None).train()
    batch, size = (1, 32) if name == "wideresnet38" else (2, 64)
    images = torch.randn(batch, 3, size, size)
    low, deep = net(images)
    assert net.output_stride == output_stride
    assert low.shape == (batch, net.low_channels, size // 4, size // 4)
    assert deep.shape == (batch, net.deep_channels, size // output_stride, size // output_stride)

    deep.square().mean().backward()
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    assert trainable
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    assert any(p.grad.abs().sum() > 0 for p in trainable.values())

    net.zero_grad(set_to_none=True)
    net.freeze_low()
    low_ids = {id(p) for module in net.low_modules() for p in module.parameters()}
    low, deep = net(images)
    assert not low.requires_grad  # nothing up to stride 4 trains
    deep.square().mean().backward()
    for n, p in net.named_parameters():
        if id(p) in low_ids:
            assert not p.requires_grad and p.grad is None, f"{name}: stride-4 parameter {n} still trains"
    deeper = [p for p in net.parameters() if id(p) not in low_ids and p.requires_grad]
    assert deeper and all(p.grad is not None for p in deeper), f"{name}: the deep layers stopped training"
