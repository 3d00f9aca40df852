"""Segmentation metrics: a confusion matrix accumulated over images, and the scores read from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from slrnet.config import IGNORE_INDEX


def _flat(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).long().flatten()


def confusion_matrix(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(K, K + 1) int64 counts, rows = ground truth, columns = prediction; ``ignore_index`` target
    pixels are skipped. The last column counts predictions outside 0..K-1 (e.g. an "uncertain"
    255): misses for their true class that are no other class's false positive.
    """
    pred_t, tgt_t = _flat(pred), _flat(target)
    if pred_t.shape != tgt_t.shape:
        raise ValueError(f"prediction has {pred_t.numel()} pixels, target {tgt_t.numel()}")
    valid = (tgt_t != ignore_index) & (tgt_t >= 0) & (tgt_t < num_classes)
    pred_t, tgt_t = pred_t[valid], tgt_t[valid]
    pred_t = torch.where((pred_t >= 0) & (pred_t < num_classes), pred_t, torch.full_like(pred_t, num_classes))
    counts = torch.bincount(tgt_t * (num_classes + 1) + pred_t, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1).cpu().numpy().astype(np.int64)


@dataclass
class SegmentationMeter:
    """Accumulates a confusion matrix over images; :meth:`scores` gives mIoU and friends."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX
    matrix: np.ndarray = field(init=False)
    images: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.images += 1

    def scores(self) -> dict[str, float | list[float | None] | int]:
        return scores_from_matrix(self.matrix, self.images)


def scores_from_matrix(matrix: np.ndarray, images: int = 0) -> dict[str, float | list[float | None] | int]:
    """Scores of a :func:`confusion_matrix`. ``miou`` averages the IoU of the classes that occur in
    the ground truth or the prediction.

    ``per_class_iou[k]`` is None for a class absent from both (it has no defined IoU).
    """
    matrix = matrix.astype(np.float64)
    k = matrix.shape[0]
    tp = np.diag(matrix[:, :k])
    gt = matrix.sum(axis=1)
    pred = matrix[:, :k].sum(axis=0)
    union = gt + pred - tp
    per_class: list[float | None] = [float(t / u) if u > 0 else None for t, u in zip(tp, union, strict=True)]
    defined = [v for v in per_class if v is not None]
    total = matrix.sum()
    return {
        "miou": float(np.mean(defined)) if defined else 0.0,
        "per_class_iou": per_class,
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "images": int(images),
    }
