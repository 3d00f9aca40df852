"""SLRNet model: shapes per backbone, gradients per mode, state-dict round trip, param groups."""

from __future__ import annotations

import pytest
import torch

from slrnet.config import LossWeights, ModelConfig
from slrnet.model import SLRNet, build_model
from slrnet.modes import compute_losses

K = 4

pytestmark = pytest.mark.usefixtures("torch_one_thread")


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


@pytest.mark.parametrize("use_pseudo", [True, False])
@pytest.mark.parametrize("mode", ["wsss", "ssss", "ssss_tags"])
def test_every_trainable_parameter_gets_a_gradient(mode: str, use_pseudo: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=K, mode=mode, backbone="tiny", pretrained=False, feature_channels=64)
    model = build_model(cfg).train()
    images = torch.randn(3, 3, 64, 64)
    losses = compute_losses(cfg, model.forward_train(images), _batch(images), use_pseudo_labels=use_pseudo)
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


@pytest.mark.parametrize("mode", ["wsss", "ssss", "ssss_tags"])
def test_losses_use_only_the_labels_an_image_has(mode: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=K, mode=mode, backbone="tiny", pretrained=False, feature_channels=32)
    model = build_model(cfg).train()
    images = torch.randn(3, 3, 64, 64)
    outs = model.forward_train(images)
    batch = _batch(images)
    ref = compute_losses(cfg, outs, batch, use_pseudo_labels=True)
    expected_terms = {"wsss": {"cls"}, "ssss": {"mask_ce"}, "ssss_tags": {"cls", "mask_ce"}}[mode]
    assert set(ref) == expected_terms | {"mask_consistency", "code_consistency", "pseudo", "total",
                                         "pseudo_labelled"}
    # labels behind has_tags=False / has_mask=False must be ignored
    other = dict(batch)
    other["tags"] = batch["tags"].clone()
    other["tags"][2] = 1.0
    other["mask"] = batch["mask"].clone()
    other["mask"][0] = 1
    other["mask"][2] = 3
    changed = compute_losses(cfg, outs, other, use_pseudo_labels=True)
    for name, value in ref.items():
        torch.testing.assert_close(changed[name], value, msg=name)
    # ... but the labels that are declared count
    if "mask_ce" in ref:
        other["mask"][1] = 3
        assert not torch.equal(compute_losses(cfg, outs, other, True)["mask_ce"], ref["mask_ce"])
    if "cls" in ref:
        other["tags"][0, 2] = 1.0
        assert not torch.equal(compute_losses(cfg, outs, other, True)["cls"], ref["cls"])


def test_total_is_the_weighted_sum_and_warmup_drops_pseudo_labels() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=K, mode="ssss_tags", backbone="tiny", pretrained=False, feature_channels=32)
    model = build_model(cfg).train()
    images = torch.randn(3, 3, 64, 64)
    outs = model.forward_train(images)
    w = LossWeights(cls=0.5, mask_consistency=2.0, code_consistency=3.0, pseudo=0.7, mask_ce=1.5)
    losses = compute_losses(cfg, outs, _batch(images), use_pseudo_labels=True, weights=w)
    expected = (0.5 * losses["cls"] + 2.0 * losses["mask_consistency"] + 3.0 * losses["code_consistency"]
                + 0.7 * losses["pseudo"] + 1.5 * losses["mask_ce"])
    torch.testing.assert_close(losses["total"], expected)
    assert losses["pseudo"] > 0
    warm = compute_losses(cfg, outs, _batch(images), use_pseudo_labels=False, weights=w)
    assert warm["pseudo"] == 0
    torch.testing.assert_close(warm["total"], losses["total"] - 0.7 * losses["pseudo"])


def test_second_view_is_downscaled_and_flipped_back() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=K, backbone="tiny", pretrained=False, feature_channels=32, view_flip=True)
    model = build_model(cfg)
    images = torch.randn(8, 3, 64, 64)
    view, flip = model.make_second_view(images)
    assert view.shape == (8, 3, 32, 32)
    assert 0 < int(flip.sum()) < 8
    small = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=True)
    torch.testing.assert_close(view[~flip], small[~flip])
    torch.testing.assert_close(view[flip], small[flip].flip(-1))
    outs = model.forward_train(images)
    assert outs["seg_logits_view2"].shape == outs["seg_logits"].shape == (8, K, 16, 16)
    assert outs["codes_view2"].shape == outs["codes"].shape == (8, K, 16, 16)
    torch.testing.assert_close(outs["probs_view2"].sum(1), torch.ones(8, 16, 16))


def test_a_frozen_backbone_records_no_graph_and_the_head_still_learns() -> None:
    from slrnet.config import TrainConfig
    from slrnet.train import build_optimizer

    cfg = ModelConfig(num_classes=K, backbone="tiny", pretrained=False, freeze_backbone=True)
    model: SLRNet = build_model(cfg)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    optimizer = build_optimizer(model, TrainConfig())
    assert len(optimizer.param_groups[0]["params"]) == 0  # nothing of the backbone
    images = torch.randn(3, 3, 64, 64)
    low, deep = model.backbone(images)
    assert low.grad_fn is None and deep.grad_fn is None  # no backward through it
    losses = compute_losses(cfg, model.forward_train(images), _batch(images), use_pseudo_labels=True)
    losses["total"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for g in model.param_groups()[1:] for p in g["params"])
