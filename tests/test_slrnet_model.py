"""SLRNet model: shapes per backbone, gradients per mode, state-dict round trip, param groups."""

from __future__ import annotations

import pytest
import torch

from slrnet.config import ModelConfig
from slrnet.model import SLRNet, build_model
from slrnet.modes import compute_losses, select_mode

K = 4


def _batch(images: torch.Tensor) -> dict[str, torch.Tensor]:
    b, _, h, w = images.shape
    mask = torch.full((b, h, w), 255, dtype=torch.int64)
    mask[1, : h // 2] = 0
    mask[1, h // 2:, : w // 3] = 2
    return {
        "image": images,
        "tags": torch.tensor([[1, 1, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.float32),
        "has_tags": torch.tensor([True, True, False]),
        "mask": mask,
        "has_mask": torch.tensor([False, True, False]),
    }


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("backbone", ["tiny", "mobilenet_v2", "resnet50", "wideresnet38"])
def test_output_shapes_and_strides(backbone: str, output_stride: int) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=K, backbone=backbone, pretrained=False,
                                    output_stride=output_stride)).eval()
    low, deep = model.backbone(torch.zeros(1, 3, 64, 96))
    assert low.shape == (1, model.backbone.low_channels, 16, 24)
    assert deep.shape == (1, model.backbone.deep_channels, 64 // output_stride, 96 // output_stride)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out["seg_logits"].shape == (2, K, 16, 24)
    assert out["cls_logits"].shape == (2, K)
    assert torch.isfinite(out["seg_logits"]).all()


def test_resnet101_builds() -> None:
    model = build_model(ModelConfig(num_classes=3, backbone="resnet101", pretrained=False))
    assert model.backbone.deep_channels == 2048


def test_select_mode() -> None:
    assert select_mode(True, False) == "wsss"
    assert select_mode(False, True) == "ssss"
    assert select_mode(True, True) == "ssss_tags"
    with pytest.raises(ValueError):
        select_mode(False, False)


@pytest.mark.parametrize("mode", ["wsss", "ssss", "ssss_tags"])
def test_every_trainable_parameter_gets_a_gradient(mode: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=K, mode=mode, backbone="tiny", pretrained=False)
    model = build_model(cfg).train()
    images = torch.randn(3, 3, 64, 64)
    losses = compute_losses(cfg, model.forward_train(images), _batch(images), use_pseudo_labels=True)
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing


def test_state_dict_round_trip_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=K, backbone="tiny", pretrained=False)
    model = build_model(cfg)
    # one training step changes BatchNorm statistics, which must travel too
    images = torch.randn(2, 3, 64, 64)
    model.train().forward_train(images)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = build_model(cfg)
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    model.eval()
    other.eval()
    with torch.no_grad():
        a, b = model(images), other(images)
    assert torch.equal(a["seg_logits"], b["seg_logits"])
    assert torch.equal(a["cls_logits"], b["cls_logits"])


def test_param_groups_cover_trainable_parameters_once() -> None:
    model: SLRNet = build_model(ModelConfig(num_classes=K, backbone="wideresnet38", pretrained=False))
    groups = model.param_groups()
    assert [g["name"] for g in groups] == ["backbone", "new"]
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    # the stem and stage b2 of WideResNet-38 are not trained (official fixed_layers)
    assert not any(p.requires_grad for p in model.backbone.conv1a.parameters())
    assert any(p.requires_grad for p in model.backbone.b3.parameters())
