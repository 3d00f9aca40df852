"""The light head on stored features: its two-view training set, outputs, losses, fit and predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slrnet.config import ModelConfig, TrainConfig
from slrnet.feature_data import FeatureSample, FeatureTrainSet, crop_resample, random_box
from slrnet.features import LEVELS
from slrnet.inference import Predictor
from slrnet.light_head import LightSLRNet, resize_bilinear
from slrnet.model import build_model
from slrnet.modes import compute_losses, pseudo_label_targets
from slrnet.pamr import PAMR
from slrnet.pseudo_labels import make_pseudo_labels
from slrnet.train import fit, load_checkpoint, model_from_checkpoint, train_outputs

pytestmark = pytest.mark.usefixtures("torch_one_thread")
pytest.importorskip("efficientnet_lite_pytorch")

CHANNELS = (24, 40, 112, 320)  # EfficientNet-Lite0's levels
VIEWS = ("s1", "s1f", "s0.5", "s0.5f")


def ramp_features(h: int, w: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic stored features whose every channel is the unmirrored image's x position (0..1)
    plus noise, so crops and mirrors can be checked; half-scale views on half the grid."""
    rng = np.random.default_rng(seed)
    out = {}
    for view in VIEWS:
        scale = 1 if view.startswith("s1") else 2
        for i, (level, c) in enumerate(zip(LEVELS, CHANNELS, strict=True)):
            lh, lw = -(-h // (scale * 2 ** i)), -(-w // (scale * 2 ** i))
            x = (np.arange(lw) + 0.5) / lw
            if view.endswith("f"):
                x = 1 - x
            noise = rng.normal(0, 0.01, (c, lh, lw))
            out[f"{view}/{level}"] = (np.broadcast_to(x, (c, lh, lw)) + noise).astype(np.float16)
        gh, gw = out[f"{view}/l1"].shape[1:]
        out[f"{view}/image"] = np.broadcast_to(out[f"{view}/l1"][:3].astype(np.float32).clip(0, 1),
                                               (3, gh, gw)).astype(np.float16)
    return out


def test_resize_bilinear_matches_interpolate() -> None:
    x = torch.randn(2, 3, 5, 7)
    for size in ((10, 14), (20, 9), (5, 7)):
        torch.testing.assert_close(resize_bilinear(x, size),
                                   F.interpolate(x, size=size, mode="bilinear", align_corners=False))


def test_crop_resample_whole_box_is_identity_and_boxes_are_in_range() -> None:
    x = torch.randn(3, 8, 12)
    torch.testing.assert_close(crop_resample(x, (0.0, 0.0, 1.0, 1.0), (8, 12)), x)
    torch.manual_seed(0)
    for _ in range(50):
        x0, y0, x1, y1 = random_box(56, 80, (0.5, 1.0))
        assert 0 <= x0 < x1 <= 1 + 1e-9 and 0 <= y0 < y1 <= 1 + 1e-9
        assert 0.5 - 1e-6 <= (x1 - x0) * (y1 - y0) <= 1 + 1e-6


def test_train_set_views_mirrors_and_mask_agree() -> None:
    h, w = 64, 96
    mask = np.tile((np.arange(w) * 8 // w).astype(np.uint8), (h, 1))     # class = x octile
    tags = np.eye(8, dtype=np.float32)[1]
    samples = [FeatureSample("a", ramp_features(h // 4, w // 4), tags=tags, mask=mask)]
    data = FeatureTrainSet(samples, 8, VIEWS, crop=12, has_background=False)
    torch.manual_seed(0)
    flips = set()
    for _ in range(20):
        item = data[0]
        assert item["v1/l1"].shape == (24, 12, 12) and item["v1/l4"].shape == (320, 2, 2)
        assert item["v2/l1"].shape == (24, 6, 6) and item["image"].shape == (3, 12, 12)
        assert item["mask"].shape == (12, 12) and item["mask"].dtype == torch.int64
        v1 = item["v1/l1"].mean(dim=(0, 1))                 # x position along view 1's columns
        v2 = F.interpolate(item["v2/l1"][None], size=(12, 12), mode="bilinear")[0].mean(dim=(0, 1))
        if bool(item["flip"]):
            v2 = v2.flip(-1)
        flips.add(bool(item["flip"]))
        assert (v1 - v2).abs().max() < 0.1                   # same region, same orientation
        # the mask follows view 1: its class grows with x in the unmirrored image
        expected = (v1 * 8).floor().clamp(0, 7)
        assert (item["mask"].float().mean(0) - expected).abs().mean() < 0.5
    assert flips == {True, False}


def test_light_model_outputs_losses_and_gradients() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=5, has_background=True, backbone="efficientnet_lite0", pretrained=False,
                      head="light", feature_channels=16)
    model = build_model(cfg)
    assert isinstance(model, LightSLRNet)
    samples = [FeatureSample(str(i), ramp_features(16, 24, i), tags=np.array([0, 1, 0, 1, 0], np.float32))
               for i in range(4)]
    data = FeatureTrainSet(samples, 5, VIEWS, crop=10)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    model.train()
    outs = train_outputs(model, batch)
    assert outs["seg_logits"].shape == outs["seg_logits_view2"].shape == (4, 5, 10, 10)
    assert outs["codes"].shape == outs["codes_view2"].shape == (4, 5, 10, 10)
    assert outs["cls_logits"].shape == (4, 5)
    assert torch.equal(outs["seg_logits"][:, 0], torch.ones(4, 10, 10))    # constant background
    losses = compute_losses(cfg, outs, batch, use_pseudo_labels=True, feature_resolution=True)
    for name in ("cls", "mask_consistency", "code_consistency", "pseudo", "total"):
        assert torch.isfinite(losses[name]), name
    losses["total"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters() if p.requires_grad)
    assert not model.backbone.training                       # frozen: stays in eval mode
    # inference from images: the Predictor contract of SLRNet (stride-4 logits)
    model.eval()
    out = model(torch.randn(2, 3, 64, 96))
    assert out["seg_logits"].shape == (2, 5, 16, 24) and out["cls_logits"].shape == (2, 5)


def test_batched_pseudo_labels_equal_one_image_at_a_time() -> None:
    g = torch.Generator().manual_seed(0)
    for has_background in (False, True):
        cfg = ModelConfig(num_classes=6, has_background=has_background, pretrained=False)
        probs = torch.rand(5, 6, 12, 12, generator=g).softmax(1)
        outs = {"probs": probs, "probs_view2": torch.rand(5, 6, 12, 12, generator=g).softmax(1)}
        image = torch.randn(5, 3, 48, 48, generator=g)
        present = torch.rand(5, 6, generator=g) < 0.5
        present[0] = False
        if has_background:
            present[:, 0] = True
        labels = pseudo_label_targets(cfg, outs, image, present, size=(12, 12))
        mean = (outs["probs"] + outs["probs_view2"]) / 2
        small = F.interpolate(image, size=(12, 12), mode="bilinear", align_corners=True)
        for i in range(5):
            channels = present[i].nonzero().squeeze(1)
            if channels.numel() == 0:
                assert (labels[i] == 255).all()
                continue
            allowed = mean[i:i + 1, channels]
            refined = PAMR(cfg.pamr_iters, cfg.pamr_dilations)(small[i:i + 1],
                                                                 allowed / allowed.sum(1, keepdim=True))
            local = make_pseudo_labels(refined, torch.ones(1, len(channels), dtype=torch.bool),
                                       0.6, 0.2, 0.7, has_background)[0]
            expected = torch.where(local == 255, local, channels[local.clamp_max(len(channels) - 1)])
            assert torch.equal(labels[i], expected)


def test_fit_checkpoint_and_predict_from_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=3, has_background=False, backbone="efficientnet_lite0", pretrained=False,
                      head="light", feature_channels=8, feature_image_size=64)
    tags = [np.array([1, 0, 1], np.float32), np.array([0, 1, 0], np.float32)]
    samples = [FeatureSample(str(i), ramp_features(16, 16, i), tags=tags[i % 2]) for i in range(4)]
    train = TrainConfig(epochs=2, warmup_epochs=1, batch_size=2, image_size=32, amp=False,
                        feature_resolution_losses=True)
    path = tmp_path / "run.pt"
    result = fit(build_model(cfg), samples, model_config=cfg, train_config=train, class_names=["a", "b", "c"],
                 checkpoint_path=path, device=torch.device("cpu"))
    assert result.epochs_completed == 2
    assert result.history[0]["pseudo"] == 0 and "pseudo_labelled" in result.history[1]  # after warm-up
    state = load_checkpoint(path)
    assert state["model_config"]["head"] == "light"
    assert isinstance(model_from_checkpoint(state), LightSLRNet)
    predictor = Predictor.from_checkpoint(path)
    assert predictor.size == 64                              # the features' size, not the crop
    pred = predictor.predict(np.zeros((40, 50, 3), np.uint8) + 128, known_tags=tags[0])
    assert pred.labels.shape == (40, 50) and pred.probs.shape == (3, 51, 64)  # probs at the model's size


def test_predict_from_stored_levels_reads_like_the_image_without_the_backbone() -> None:
    """Predict (and the presence rule's reading) of a light head take the image's stored "s1" /
    "s1f" levels instead of running the backbone: the same reading where the geometry agrees (a
    64 x 64 image at feature size 64), up to the store's half precision."""
    from slrnet.feature_spec import FeatureSpec
    from slrnet.features import FeatureExtractor

    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=4, has_background=True, backbone="efficientnet_lite0", pretrained=False,
                      head="light", feature_channels=8, feature_image_size=64)
    model = build_model(cfg).eval()
    predictor = Predictor(model, cfg, ["bg", "a", "b", "c"], default_size=64)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    extractor = FeatureExtractor(FeatureSpec.for_backbone("efficientnet_lite0", 64, ("s1", "s1f")))
    extractor.net.load_state_dict(model.backbone.state_dict())   # the model's (random) backbone
    stored = extractor.extract(image)
    from_image = predictor.read(image)

    def no_backbone(*args: object) -> None:
        raise AssertionError("the backbone ran although the levels were stored")

    model.backbone.levels = no_backbone
    from_store = predictor.read(image, stored)
    torch.testing.assert_close(from_store.probs, from_image.probs, atol=2e-2, rtol=0)
    torch.testing.assert_close(from_store.tag_scores, from_image.tag_scores, atol=2e-2, rtol=0)
    assert predictor.predict(image, stored=stored).labels.shape == (64, 64)
    # an entry without the views it reads, or another read size: the backbone is needed again
    with pytest.raises(AssertionError, match="backbone ran"):
        predictor.read(image, {k: v for k, v in stored.items() if not k.startswith("s1f/")})
    with pytest.raises(AssertionError, match="backbone ran"):
        Predictor(model, cfg, ["bg", "a", "b", "c"], default_size=96).read(image, stored)
