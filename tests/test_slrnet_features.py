"""slrnet.features: spec keys, the arrays an extractor returns, weights loading, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from slrnet.backbones import (
    PACKAGED_WEIGHTS,
    build_backbone,
    build_level_backbone,
    load_backbone_weights,
    packaged_weights_file,
)
from slrnet.feature_spec import weights_id
from slrnet.features import LEVELS, FeatureExtractor, FeatureSpec, parse_view, view_size

pytestmark = pytest.mark.usefixtures("torch_one_thread")
pytest.importorskip("efficientnet_lite_pytorch")


def test_spec_key_is_a_safe_relative_path_and_names_everything_that_matters() -> None:
    spec = FeatureSpec.for_backbone("efficientnet_lite0")
    assert spec.key == "efficientnet_lite0-57934424/s320/s1+s1f+s0.5+s0.5f"
    keys = {spec.key,
            FeatureSpec.for_backbone("efficientnet_lite0", image_size=224).key,
            FeatureSpec.for_backbone("efficientnet_lite0", views=("s1", "s0.5")).key,
            FeatureSpec.for_backbone("efficientnet_lite2").key,
            FeatureSpec("efficientnet_lite0", "0000aaaa").key}
    assert len(keys) == 5
    for key in keys:
        parts = key.split("/")
        assert all(p and p not in (".", "..") and "\\" not in p for p in parts)
        assert all(c.isalnum() or c in "-_.+/" for c in key)


@pytest.mark.parametrize("bad", [
    {"backbone": "../x", "weights": "ab"}, {"backbone": "a", "weights": "a/b"},
    {"backbone": "a", "weights": "b", "image_size": 8}, {"backbone": "a", "weights": "b", "views": ()},
    {"backbone": "a", "weights": "b", "views": ("s1", "s1")},
    {"backbone": "a", "weights": "b", "views": ("x1",)},
])
def test_spec_rejects_bad_fields(bad: dict) -> None:
    with pytest.raises(ValueError):
        FeatureSpec(**bad)


def test_parse_view_and_view_sizes() -> None:
    assert parse_view("s1") == (1.0, False) and parse_view("s0.5f") == (0.5, True)
    with pytest.raises(ValueError):
        parse_view("s0")
    assert view_size(213, 320, 320, 1.0) == (224, 320)
    assert view_size(213, 320, 320, 0.5) == (112, 160)   # half of scale 1, side by side
    assert view_size(3000, 40, 320, 1.0) == (320, 32)    # never a zero side


def test_extract_shapes_dtypes_views_and_determinism() -> None:
    spec = FeatureSpec.for_backbone("efficientnet_lite0", image_size=128)
    extractor = FeatureExtractor(spec)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    arrays = extractor.extract(image)
    assert list(arrays) == spec.names()
    h, w = view_size(90, 130, 128, 1.0)
    assert (h, w) == (96, 128)
    for view, scale in (("s1", 1), ("s1f", 1), ("s0.5", 2), ("s0.5f", 2)):
        for level, channels, stride in zip(LEVELS, extractor.level_channels, (4, 8, 16, 32), strict=True):
            a = arrays[f"{view}/{level}"]
            assert a.dtype == np.float16
            assert a.shape == (channels, -(-h // (stride * scale)), -(-w // (stride * scale))), (view, level)
            assert np.isfinite(a).all() and a.astype(np.float32).std() > 0
        guide = arrays[f"{view}/image"]
        assert guide.shape == (3, *arrays[f"{view}/l1"].shape[1:]) and guide.dtype == np.float16
        assert guide.min() >= 0 and guide.max() <= 1
    assert extractor.level_channels == (24, 40, 112, 320)
    # the flipped view is the backbone run on the mirrored image, not a mirrored feature map
    assert np.array_equal(arrays["s1f/image"], arrays["s1/image"][:, :, ::-1])
    assert not np.allclose(arrays["s1f/l3"], arrays["s1/l3"][:, :, ::-1], atol=1e-2)
    again = extractor.extract_batch([image, image[:, ::-1].copy()])
    assert all(np.array_equal(arrays[k], again[0][k]) for k in arrays)
    # the mirrored image's first view is the first's mirrored view (up to batching round-off)
    np.testing.assert_allclose(again[1]["s1/l1"].astype(np.float32), arrays["s1f/l1"].astype(np.float32),
                               atol=0.05, rtol=0.01)


def test_extractor_refuses_other_weights() -> None:
    with pytest.raises(ValueError):
        FeatureExtractor(FeatureSpec("efficientnet_lite0", "deadbeef"))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_packaged_weights_load_with_no_missing_or_unused_tensor(name: str, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    pytest.importorskip(PACKAGED_WEIGHTS[name])
    from efficientnet_lite_pytorch import EfficientNet

    path = packaged_weights_file(name)
    assert path.name.endswith(f"-{weights_id(name)}.pth")
    net = EfficientNet.from_name(f"efficientnet-{name.split('_')[1]}", image_size=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    result = net.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    assert not result.missing_keys and not result.unexpected_keys
    with caplog.at_level(logging.INFO, logger="slrnet.backbones"):
        load_backbone_weights(net, path)
    assert not [r for r in caplog.records if "not in the weights file" in r.getMessage()]
    # the level backbone carries exactly those weights (frozen BN included)
    levels = build_level_backbone(name)
    first = levels.stem[0].weight
    torch.testing.assert_close(first, state["_conv_stem.weight"])
    last = levels.blocks[-1]._bn2
    torch.testing.assert_close(last.running_var, state[f"_blocks.{len(levels.blocks) - 1}._bn2.running_var"])
    assert not any(p.requires_grad for p in levels.parameters())


def test_dilated_efficientnet_keeps_levels_and_weights() -> None:
    net = build_backbone("efficientnet_lite0", 16, False, None)
    x = torch.randn(1, 3, 64, 96)
    low, deep = net(x)
    assert low.shape == (1, 24, 16, 24) and deep.shape == (1, 320, 4, 6)
    assert [t.shape[-1] for t in net.levels(x)] == [24, 12, 6, 6]
