"""Which classes an image shows, learnt from the tagged images of the training run.

A short CPU run leaves the classifier's sigmoid scores low and unevenly scaled across classes, so
one cut-off (0.5) keeps too few classes on untagged images. :class:`PresenceRule` combines the
classifier's score with evidence from the segmentation maps (each class's peak probability and
the share of pixels it wins) into one calibrated score per class and keeps a class above its own
threshold.

:func:`fit_presence` learns it from the run's tagged images: a logistic model (weights shared by
the classes, a bias per class pulled towards their mean) gives every tagged image an
out-of-fold score (k-fold cross-validation over the images); each class's threshold maximises
its F1 over those out-of-fold scores (classes with few positives share one threshold). The rule
is then refitted on all tagged images and stored in the checkpoint (``to_dict``), so any model
exposing class scores and segmentation probabilities gets one.

The evidence is read on images the network trained on, where its scores run higher than on new
images; the cross-validation protects the rule's own fit, not that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

FEATURES = ("classifier", "seg_peak", "seg_share")
RULE_KIND = "logistic_per_class_threshold"
FOLDS = 5
MIN_POSITIVES = 4  # a class with fewer tagged positives takes the shared threshold
BIAS_SHRINK = 0.05  # L2 pull of the per-class biases towards their mean
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)
_EPS = 1e-4


def evidence(probs: Tensor, tag_scores: Tensor) -> np.ndarray:
    """(K, F) features of one image: ``probs`` (K, h, w) softmax over all classes at the model's
    resolution (no class filter), ``tag_scores`` (K,) sigmoid scores; each as a logit."""
    k = probs.shape[0]
    flat = probs.reshape(k, -1).float()
    peak = flat.amax(1)
    winner = flat.argmax(0)
    share = torch.bincount(winner, minlength=k).float() / flat.shape[1]
    stacked = torch.stack([tag_scores.float(), peak, share], 1).clamp(_EPS, 1 - _EPS)
    return torch.logit(stacked).cpu().numpy().astype(np.float32)


@dataclass(frozen=True)
class PresenceRule:
    """Calibrated presence: p_c = sigmoid(x_c . weights + bias_c), class c kept when p_c >=
    thresholds[c]. ``first_class`` = 1 with a background class (always present, never scored)."""

    weights: tuple[float, ...]
    biases: tuple[float, ...]
    thresholds: tuple[float, ...]
    first_class: int = 0
    features: tuple[str, ...] = FEATURES
    kind: str = RULE_KIND
    images: int = 0
    cv_f1: float | None = None  # micro F1 of the out-of-fold decisions on the tagged images

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(K, F) or (N, K, F) evidence -> calibrated presence probabilities (K,) / (N, K)."""
        z = features @ np.asarray(self.weights, np.float32) + np.asarray(self.biases, np.float32)
        return 1.0 / (1.0 + np.exp(-z))

    def decide(self, features: np.ndarray) -> np.ndarray:
        keep = self.scores(features) >= np.asarray(self.thresholds, np.float32)
        keep[..., : self.first_class] = True
        return keep

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PresenceRule:
        if data.get("kind") != RULE_KIND or tuple(data.get("features", ())) != FEATURES:
            raise ValueError(f"unknown presence rule {data.get('kind')!r} / {data.get('features')!r}")
        return cls(**{**data, **{k: tuple(data[k]) for k in ("weights", "biases", "thresholds", "features")}})


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (N, K, F), y (N, K) 0/1 -> shared weights (F,), per-class biases (K,)."""
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    weights = torch.zeros(x.shape[2], dtype=torch.float64, requires_grad=True)
    biases = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, biases], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        z = xt @ weights + biases
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, yt)
        loss = loss + BIAS_SHRINK * ((biases - biases.mean()) ** 2).mean() + 1e-3 * (weights ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach().numpy(), biases.detach().numpy()


def _f1(keep: np.ndarray, truth: np.ndarray) -> float:
    tp = float((keep & truth).sum())
    denominator = float(keep.sum() + truth.sum())
    return 2 * tp / denominator if denominator else 1.0


def _best_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold of THRESHOLDS with the best F1 (the middle one of a tie)."""
    f1 = np.array([_f1(scores >= t, truth) for t in THRESHOLDS])
    best = np.flatnonzero(f1 >= f1.max() - 1e-9)
    return float(THRESHOLDS[best[len(best) // 2]])


def fit_presence(features: np.ndarray, tags: np.ndarray, *, first_class: int = 0, folds: int = FOLDS,
                 seed: int = 0) -> PresenceRule | None:
    """Learn a :class:`PresenceRule` from ``features`` (N, K, F) and ``tags`` (N, K) of tagged
    images. None with fewer than 2 tagged images or no positive / negative to learn from."""
    x = features[:, first_class:].astype(np.float32)
    y = (tags[:, first_class:] > 0.5)
    n, k = y.shape
    if n < 2 or y.all() or not y.any():
        return None
    folds = max(2, min(folds, n))
    order = np.random.default_rng(seed).permutation(n)
    out_of_fold = np.zeros((n, k), np.float32)
    for f in range(folds):
        held = order[f::folds]
        train = np.setdiff1d(order, held)
        w, b = _fit_logistic(x[train], y[train])
        out_of_fold[held] = 1.0 / (1.0 + np.exp(-(x[held] @ w + b)))
    shared = _best_threshold(out_of_fold, y)
    thresholds = [(_best_threshold(out_of_fold[:, c], y[:, c]) if y[:, c].sum() >= MIN_POSITIVES else shared)
                  for c in range(k)]
    cv_f1 = _f1(out_of_fold >= np.asarray(thresholds, np.float32), y)
    w, b = _fit_logistic(x, y)
    pad = [0.0] * first_class
    return PresenceRule(weights=tuple(float(v) for v in w), biases=tuple(pad + [float(v) for v in b]),
                        thresholds=tuple(pad + thresholds), first_class=first_class, images=n,
                        cv_f1=round(cv_f1, 4))


def tag_scores_table(keep: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> dict:
    """Per-class and micro precision / recall / F1 of presence decisions (N, K) against tags."""
    def prf(k: np.ndarray, t: np.ndarray) -> dict:
        tp, fp, fn = float((k & t).sum()), float((k & ~t).sum()), float((~k & t).sum())
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        return {"precision": round(p, 4), "recall": round(r, 4),
                "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0, "positives": int(t.sum())}

    truth = truth > 0.5
    return {"micro": prf(keep, truth),
            "per_class": {n: prf(keep[:, c], truth[:, c]) for c, n in enumerate(names)}}
