"""slrnet.inference.Predictor on an untrained tiny model: shapes, probabilities, class filter,
uncertain pixels, test-time augmentation, loading from a checkpoint."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from slrnet.config import InferenceConfig, ModelConfig
from slrnet.inference import Predictor
from slrnet.model import build_model
from slrnet.train import CHECKPOINT_FORMAT, save_checkpoint

K = 4


def make_predictor(mode: str = "wsss", **config: object) -> Predictor:
    cfg = ModelConfig(num_classes=K, mode=mode, backbone="tiny", pretrained=False, feature_channels=32)
    torch.manual_seed(0)
    return Predictor(build_model(cfg), cfg, ["bg", "a", "b", "c"], config=InferenceConfig(**config),
                     default_size=48)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)


def upsampled(pred: object, size: tuple[int, int]) -> torch.Tensor:
    probs = torch.as_tensor(pred.probs)[None]  # type: ignore[attr-defined]
    return torch.nn.functional.interpolate(probs, size=size, mode="bilinear", align_corners=False)[0]


def test_maps_at_image_resolution_probabilities_at_the_models(image: np.ndarray) -> None:
    pred = make_predictor(pamr=False, uncertain_below=0.0).predict(image)
    assert pred.probs.shape == (K, 34, 48) and pred.probs.dtype == np.float32  # longer side 48
    assert np.allclose(pred.probs.sum(0), 1.0, atol=1e-4)
    assert pred.labels.shape == (37, 53) and pred.labels.dtype == np.uint8
    full = upsampled(pred, (37, 53))
    assert (pred.labels == full.argmax(0).numpy()).mean() > 0.999  # ties aside
    assert pred.confidence.dtype == np.uint8
    assert np.abs(pred.confidence.astype(float) - full.max(0).values.numpy() * 255).max() <= 0.51
    assert pred.tag_scores.shape == (K,) and ((pred.tag_scores >= 0) & (pred.tag_scores <= 1)).all()


def test_known_tags_limit_the_classes(image: np.ndarray) -> None:
    tags = np.array([1, 0, 1, 0], dtype=np.float32)
    pred = make_predictor(pamr=True).predict(image, known_tags=tags)
    assert pred.classes.tolist() == [True, False, True, False]
    assert np.abs(pred.probs[[1, 3]]).max() < 1e-6
    assert set(np.unique(pred.labels)) <= {0, 2, 255}


def test_background_is_never_filtered_out(image: np.ndarray) -> None:
    pred = make_predictor(class_filter="known").predict(image, known_tags=np.array([0, 0, 0, 1]))
    assert pred.classes.tolist() == [True, False, False, True]


def test_no_filter_without_tags_in_mask_only_mode(image: np.ndarray) -> None:
    pred = make_predictor(mode="ssss").predict(image)
    assert pred.classes.all()


def test_uncertain_pixels_are_255(image: np.ndarray) -> None:
    pred = make_predictor(pamr=False, uncertain_below=0.99).predict(image)
    uncertain = pred.confidence < round(0.99 * 255)
    assert uncertain.any()
    assert (pred.labels[uncertain] == 255).all() and (pred.labels[~uncertain] != 255).all()


def test_multiscale_and_flip_average(image: np.ndarray) -> None:
    single = make_predictor(pamr=False, flip=False).predict(image)
    multi = make_predictor(pamr=False, flip=True, scales=(0.75, 1.0, 1.5)).predict(image)
    assert multi.probs.shape == single.probs.shape
    assert np.allclose(multi.probs.sum(0), 1.0, atol=1e-4)
    assert not np.allclose(multi.probs, single.probs)


def test_from_checkpoint_gives_the_same_predictions(tmp_path: Path, image: np.ndarray) -> None:
    direct = make_predictor(pamr=False)
    save_checkpoint(tmp_path / "ck.pt", {
        "format": CHECKPOINT_FORMAT, "model": direct.model.state_dict(),
        "model_config": asdict(direct.model_config), "train_config": {"image_size": 48},
        "class_names": direct.class_names,
    })
    loaded = Predictor.from_checkpoint(tmp_path / "ck.pt", config=InferenceConfig(pamr=False))
    assert loaded.class_names == ["bg", "a", "b", "c"] and loaded.size == 48
    assert np.allclose(loaded.predict(image).probs, direct.predict(image).probs, atol=1e-5)
    with pytest.raises(ValueError):
        InferenceConfig(scales=())


def test_background_power_shrinks_background(image: np.ndarray) -> None:
    # the power alone (the peak-relative reading after it rescales every kept class again)
    plain = make_predictor(pamr=False, class_max_norm=False).predict(image)
    assert make_predictor().background_power == 1.0  # the default, whatever the mode
    cubed = make_predictor(pamr=False, background_power=3.0, class_max_norm=False).predict(image)
    assert np.allclose(cubed.probs.sum(0), 1.0, atol=1e-4)
    assert (cubed.probs[0] <= plain.probs[0] + 1e-6).all()
    assert (cubed.probs[0] < plain.probs[0]).any()


def test_background_wins_after_renormalising_over_the_kept_classes() -> None:
    """81 classes, one tagged: background must be compared with the tagged class alone. Cubing
    the raw softmax share (~1/81) before renormalising made background lose everywhere."""
    k = 81
    cfg = ModelConfig(num_classes=k, mode="wsss", backbone="tiny", pretrained=False, feature_channels=16)

    class Flat(torch.nn.Module):  # background logit 1.5; the tagged class 3.0 on the left sixth
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            b, _, h, w = x.shape
            logits = torch.zeros(b, k, h // 4, w // 4)
            logits[:, 0] = 1.5
            logits[:, 5, :, : w // 12] = 3.0
            return {"seg_logits": logits, "cls_logits": torch.zeros(b, k)}

    predictor = Predictor(Flat(), cfg, [str(i) for i in range(k)],
                          config=InferenceConfig(pamr=False, flip=False, background_power=3.0),
                          default_size=64)
    tags = np.zeros(k, dtype=np.float32)
    tags[5] = 1.0
    pred = predictor.predict(np.zeros((64, 64, 3), dtype=np.uint8), known_tags=tags)
    assert (pred.labels[:, 40:] == 0).all()      # background where the tagged class is absent
    assert (pred.labels[:, :12] == 5).all()


def test_pamr_at_reduced_scale_keeps_shapes_and_probabilities(image: np.ndarray) -> None:
    pred = make_predictor(pamr_scale=0.5).predict(image)
    assert pred.probs.shape == (K, 34, 48) and pred.labels.shape == image.shape[:2]
    assert np.allclose(pred.probs.sum(0), 1.0, atol=1e-4)
    with pytest.raises(ValueError):
        InferenceConfig(pamr_scale=0.0)


def test_class_max_norm_lets_an_object_on_a_stuff_class_take_its_pixels() -> None:
    """A cow always on grass: grass's probability is higher everywhere, the cow's map only peaks
    on the cow. Read peak-relative (as the training pseudo-labels are), the cow takes its pixels;
    with every class kept (no tags known) the maps are left as they are."""
    k = 3
    cfg = ModelConfig(num_classes=k, mode="wsss", has_background=False, backbone="tiny", pretrained=False,
                      feature_channels=16)

    class Grass(torch.nn.Module):  # grass 2.0 everywhere; the cow 1.5 on the left quarter, else 0
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            b, _, h, w = x.shape
            logits = torch.zeros(b, k, h // 4, w // 4)
            logits[:, 0] = 2.0
            logits[:, 1, :, : w // 16] = 1.5
            logits[:, 2] = -4.0
            return {"seg_logits": logits, "cls_logits": torch.zeros(b, k)}

    def labels(max_norm: bool, known: np.ndarray | None) -> np.ndarray:
        predictor = Predictor(Grass(), cfg, ["grass", "cow", "sky"], default_size=64, config=InferenceConfig(
            pamr=False, flip=False, class_filter="known" if known is not None else "none",
            class_max_norm=max_norm))
        return predictor.predict(np.zeros((64, 64, 3), dtype=np.uint8), known_tags=known).labels

    tags = np.array([1.0, 1.0, 0.0], dtype=np.float32)
    assert (labels(False, tags) == 0).all()  # the cow never wins a pixel outright
    peaked = labels(True, tags)
    assert (peaked[:, :12] == 1).all() and (peaked[:, 20:] == 0).all()
    np.testing.assert_array_equal(labels(True, None), labels(False, None))  # nothing known: unchanged
