"""After training: learn the run's class-presence rule from its labelled images and store it in
the checkpoint (`slrnet.presence`), so predict's class filter reads it from there.

The images that say which classes they show: tagged ones (their tags), and with masks, those whose
mask labels every pixel (the classes in it). A partial mask does not say what is absent; it is
left out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from slrnet.config import IGNORE_INDEX, InferenceConfig
from slrnet.data import Sample
from slrnet.feature_data import FeatureSource
from slrnet.inference import Predictor
from slrnet.presence import PresenceRule, fit_presence
from slrnet.train import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

MAX_IMAGES = 1500  # a seeded subset of a larger project: the rule has 3 + K parameters


def known_classes(sample: Sample, num_classes: int) -> np.ndarray | None:
    """(K,) 0/1 of the classes the sample is known to show and not to show, or None."""
    if sample.tags is not None:
        return (np.asarray(sample.tags) > 0.5).astype(np.float32)
    if sample.mask is None:
        return None
    mask = sample.mask() if callable(sample.mask) else sample.mask
    if (mask == IGNORE_INDEX).any():
        return None
    present = np.zeros(num_classes, np.float32)
    present[np.unique(mask)[np.unique(mask) < num_classes]] = 1.0
    return present


def learn_presence(checkpoint: Path, samples: Sequence[Sample], *, config: InferenceConfig,
                   device: torch.device | str = "cpu", seed: int = 0,
                   features: Sequence[FeatureSource] | None = None) -> PresenceRule | None:
    """Fit the presence rule on ``samples`` read as predict will read them (``config``) and
    write it into ``checkpoint``; None (checkpoint unchanged) when there is too little to learn.
    ``features``: each sample's stored features (or their loader), read instead of running the
    backbone, as predict reads them (`slrnet.inference.Predictor.read`)."""
    predictor = Predictor.from_checkpoint(checkpoint, config=replace(config, calibrated_presence=False),
                                          device=device)
    k = predictor.num_classes
    stored = list(features) if features is not None else [None] * len(samples)
    labelled = [(s, t, f) for s, f in zip(samples, stored, strict=True)
                if (t := known_classes(s, k)) is not None]
    if len(labelled) > MAX_IMAGES:
        pick = np.random.default_rng(seed).choice(len(labelled), MAX_IMAGES, replace=False)
        labelled = [labelled[i] for i in sorted(pick)]
    if len(labelled) < 2:
        return None

    def evidence(sample: Sample, source: FeatureSource | None) -> np.ndarray:
        image = sample.image() if callable(sample.image) else sample.image
        arrays = source() if callable(source) else source
        return predictor.read(image, arrays).evidence()

    features_of = np.stack([evidence(s, f) for s, _, f in labelled])
    rule = fit_presence(features_of, np.stack([t for _, t, _ in labelled]),
                        first_class=1 if predictor.model_config.has_background else 0, seed=seed)
    if rule is not None:
        state = load_checkpoint(checkpoint)
        state["presence"] = rule.to_dict()
        save_checkpoint(checkpoint, state)
        logger.info("presence rule from %d labelled images: out-of-fold F1 %.3f", rule.images, rule.cv_f1)
    return rule
