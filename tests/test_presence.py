"""slrnet.presence: evidence from a reading, the cross-validated rule, its round trip through a
checkpoint, and predict's class filter using it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from slrnet.config import InferenceConfig, ModelConfig
from slrnet.inference import Predictor
from slrnet.presence import FEATURES, PresenceRule, evidence, fit_presence, tag_scores_table
from slrnet.train import CHECKPOINT_FORMAT, save_checkpoint


def test_evidence_reads_the_classifier_and_the_maps() -> None:
    probs = torch.zeros(3, 4, 4)
    probs[0] = 0.9
    probs[1] = 0.1
    probs[1, :2, :2], probs[0, :2, :2] = 0.8, 0.2  # class 1 wins a quarter, peaks at 0.8
    x = evidence(probs, torch.tensor([0.5, 0.2, 0.01]))
    assert x.shape == (3, len(FEATURES))
    sigmoid = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(sigmoid[:, 0], [0.5, 0.2, 0.01], atol=1e-4)
    np.testing.assert_allclose(sigmoid[:, 1], [0.9, 0.8, 1e-4], atol=1e-4)
    np.testing.assert_allclose(sigmoid[:, 2], [0.75, 0.25, 1e-4], atol=1e-4)


def synthetic(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Presence shows in the maps' evidence; class scores are scaled differently per class (a
    short run's classifier): one cut-off cannot fit all classes."""
    rng = np.random.default_rng(seed)
    tags = (rng.random((n, k)) < 0.3).astype(np.float32)
    offset = np.linspace(-3, 2, k)  # the classifier's per-class scale
    classifier = offset + 2.5 * tags + rng.normal(0, 0.7, (n, k))
    seg = -2 + 3.5 * tags + rng.normal(0, 1.2, (n, k))
    share = -4 + 3 * tags + rng.normal(0, 1.5, (n, k))
    return np.stack([classifier, seg, share], -1).astype(np.float32), tags


def test_rule_beats_one_cut_off_on_new_images() -> None:
    x, tags = synthetic(200, 6, 0)
    rule = fit_presence(x, tags, seed=0)
    assert rule is not None and rule.images == 200 and 0 < rule.cv_f1 <= 1
    new_x, new_tags = synthetic(300, 6, 1)
    calibrated = tag_scores_table(rule.decide(new_x), new_tags, list("abcdef"))["micro"]["f1"]
    half = tag_scores_table(new_x[..., 0] > 0, new_tags, list("abcdef"))["micro"]["f1"]  # sigmoid > 0.5
    assert calibrated > half + 0.1, (calibrated, half)


def test_rule_round_trips_and_keeps_background() -> None:
    x, tags = synthetic(60, 4, 2)
    rule = fit_presence(x, tags, first_class=1)
    assert rule is not None and rule.thresholds[0] == 0.0
    again = PresenceRule.from_dict(rule.to_dict())
    assert again == rule
    assert again.decide(np.full((4, 3), -20.0, np.float32))[0]  # background always kept
    assert fit_presence(x[:1], tags[:1]) is None
    with pytest.raises(ValueError):
        PresenceRule.from_dict({**rule.to_dict(), "kind": "other"})


def test_predict_filters_with_the_checkpoints_rule(tmp_path: Path) -> None:
    k = 4
    cfg = ModelConfig(num_classes=k, mode="wsss", has_background=False, backbone="tiny", pretrained=False,
                      feature_channels=16)
    torch.manual_seed(0)
    from slrnet.model import build_model

    model = build_model(cfg)
    # a rule on the classifier score alone: classes 1 and 3 always pass, 0 and 2 never
    rule = PresenceRule(weights=(1.0, 0.0, 0.0), biases=(0.0,) * k, thresholds=(2.0, 0.0, 2.0, 0.0))
    save_checkpoint(tmp_path / "ck.pt", {
        "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "model_config": asdict(cfg),
        "train_config": {"image_size": 32}, "class_names": list("abcd"), "presence": rule.to_dict()})
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    pred = Predictor.from_checkpoint(tmp_path / "ck.pt", config=InferenceConfig(pamr=False)).predict(image)
    assert pred.present.tolist() == [False, True, False, True] == pred.classes.tolist()
    assert set(np.unique(pred.labels)) <= {1, 3, 255}
    off = Predictor.from_checkpoint(tmp_path / "ck.pt", config=InferenceConfig(calibrated_presence=False))
    assert off.presence is None
