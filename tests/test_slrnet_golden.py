"""Golden outputs of SLRNet: a seeded tiny model on a seeded input gives the stored logits and losses.

The model's numbers may only change on purpose. Every architecture field of the configuration is
given explicitly, so a later change of a default does not move these values (a new field makes
`test_every_model_field_is_pinned` fail until it is pinned here too). The expected values are a
compact summary in tests/data/slrnet_golden.json: per-channel means of each output and a fixed
selection of its entries (flat indices stored with them).

After an intended change of the model's numerics, regenerate and review the diff::

    SLRNET_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_slrnet_golden.py -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from slrnet.config import LossWeights, ModelConfig
from slrnet.model import build_model
from slrnet.modes import compute_losses

pytestmark = pytest.mark.usefixtures("torch_one_thread")

GOLDEN = Path(__file__).parent / "data" / "slrnet_golden.json"
REGENERATE = os.environ.get("SLRNET_REGENERATE_GOLDEN") == "1"
SELECTED = 128  # entries stored per output map
# float32 on different CPUs / BLAS builds differs in the last bits; a real change is far larger.
RTOL, ATOL = 1e-4, 1e-4

CONFIGS: dict[str, dict[str, Any]] = {
    # the paper's head: full 3x3 convs, image tags, constant background logit
    "full_head": dict(num_classes=4, mode="wsss", backbone="tiny", pretrained=False, backbone_weights=None,
                      output_stride=16, has_background=True, background="constant", feature_channels=16,
                      separable_head=False, freeze_low=False, freeze_backbone=False,
                      view_scale=0.5, view_flip=True,
                      low_rank_iters=1, low_rank_temperature=1.0, gate_rate=0.3, pamr_iters=3,
                      pamr_dilations=(1, 2), head="paper", feature_image_size=320,
                      feature_views=("s1", "s1f", "s0.5", "s0.5f"), head_dropout=0.1),
    # the CPU-sized head: depthwise-separable convs, tags + masks, learnt background, frozen stride 4
    "separable_head": dict(num_classes=4, mode="ssss_tags", backbone="tiny", pretrained=False,
                           backbone_weights=None, output_stride=8, has_background=True,
                           background="explicit", feature_channels=16, separable_head=True,
                           freeze_low=True, freeze_backbone=False, view_scale=0.5,
                           view_flip=False, low_rank_iters=2,
                           low_rank_temperature=0.5, gate_rate=0.3, pamr_iters=3, pamr_dilations=(1, 2),
                           head="paper", feature_image_size=320, feature_views=("s1", "s1f", "s0.5", "s0.5f"),
                           head_dropout=0.1),
}
LOSS_WEIGHTS = dict(cls=1.0, mask_consistency=4.0, code_consistency=4.0, pseudo=1.0, mask_ce=1.0, aux=0.4)


def _model(name: str) -> tuple[ModelConfig, torch.nn.Module, torch.Tensor]:
    cfg = ModelConfig(**CONFIGS[name])
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    return cfg, model, images


def _batch(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Image 0 tagged with class 1 and half-masked (background / class 1); image 1 tagged 2, no mask."""
    mask = torch.full((2, 64, 64), 255, dtype=torch.int64)
    mask[0, :32] = 0
    mask[0, 32:, :32] = 1
    return {"image": images, "tags": torch.tensor([[1.0, 1, 0, 0], [1.0, 0, 1, 0]]),
            "has_tags": torch.tensor([True, True]), "mask": mask, "has_mask": torch.tensor([True, False])}


def _summary(a: np.ndarray) -> dict[str, Any]:
    """Shape, per-channel means (dim 1) and a fixed selection of the entries of an output map."""
    flat = a.reshape(-1)
    index = np.arange(flat.size) if flat.size <= SELECTED else \
        np.sort(np.random.default_rng(0).choice(flat.size, SELECTED, replace=False))
    means = a.mean(axis=tuple(d for d in range(a.ndim) if d != 1))
    return {"shape": list(a.shape), "channel_means": means.tolist(), "index": index.tolist(),
            "values": flat[index].tolist()}


def _load() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


def _check_or_store(key: str, scalars: dict[str, float], maps: dict[str, torch.Tensor]) -> None:
    """Compare with the stored entry ``key`` (maps at their stored indices), or store it."""
    arrays = {name: x.detach().double().numpy() for name, x in maps.items()}
    if REGENERATE:
        golden = _load()
        golden[key] = {**scalars, **{name: _summary(a) for name, a in arrays.items()}}
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"regenerated {key} in {GOLDEN}")
    golden = _load()
    assert key in golden, f"{key} missing from {GOLDEN}; regenerate (see the module docstring)"
    expected = golden[key]
    assert sorted(expected) == sorted([*scalars, *arrays]), key
    for name, value in scalars.items():
        np.testing.assert_allclose(value, expected[name], rtol=RTOL, atol=ATOL, err_msg=f"{key} {name}")
    for name, a in arrays.items():
        want = expected[name]
        assert list(a.shape) == want["shape"], f"{key} {name}"
        means = a.mean(axis=tuple(d for d in range(a.ndim) if d != 1))
        np.testing.assert_allclose(means, want["channel_means"], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{key} {name}: channel means")
        np.testing.assert_allclose(a.reshape(-1)[want["index"]], want["values"], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{key} {name}: selected entries")


def test_every_model_field_is_pinned() -> None:
    model_fields = {f.name for f in fields(ModelConfig)}
    for name, kwargs in CONFIGS.items():
        assert set(kwargs) == model_fields, f"{name}: pin {sorted(model_fields - set(kwargs))}"
    assert set(LOSS_WEIGHTS) == {f.name for f in fields(LossWeights)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_eval_forward_matches_golden(name: str) -> None:
    _, model, images = _model(name)
    with torch.no_grad():
        outs = model.eval()(images)
    assert outs["seg_logits"].shape == (2, 4, 16, 16)
    _check_or_store(f"{name}/eval", {}, {k: outs[k] for k in ("seg_logits", "cls_logits", "aux_logits")})


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_train_losses_match_golden(name: str) -> None:
    cfg, model, images = _model(name)
    model.train()
    torch.manual_seed(2)  # dropout, stochastic gate and view flips draw from torch's generator
    outs = model.forward_train(images)
    terms = compute_losses(cfg, outs, _batch(images), use_pseudo_labels=True,
                           weights=LossWeights(**LOSS_WEIGHTS), feature_resolution=False)
    assert torch.isfinite(terms["total"])
    _check_or_store(f"{name}/train", {k: float(v.detach()) for k, v in terms.items()},
                    {k: outs[k] for k in ("seg_logits_view2", "cls_logits", "codes")})
