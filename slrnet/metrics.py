"""Segmentation metrics: a confusion matrix accumulated over images, and the scores read from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

IGNORE_INDEX = 255


def _flat(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).long().flatten()


def confusion_matrix(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; ``ignore_index`` pixels skipped.

    Predictions outside 0..K-1 (e.g. an "uncertain" 255) count as wrong for their true class.
    """
    pred_t, tgt_t = _flat(pred), _flat(target)
    if pred_t.shape != tgt_t.shape:
        raise ValueError(f"prediction has {pred_t.numel()} pixels, target {tgt_t.numel()}")
    valid = (tgt_t != ignore_index) & (tgt_t >= 0) & (tgt_t < num_classes)
    pred_t, tgt_t = pred_t[valid], tgt_t[valid]
    # A prediction outside the class range goes to an extra column that is dropped afterwards.
    pred_t = torch.where((pred_t >= 0) & (pred_t < num_classes), pred_t, torch.full_like(pred_t, num_classes))
    counts = torch.bincount(tgt_t * (num_classes + 1) + pred_t, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)[:, :num_classes].cpu().numpy().astype(np.int64)


@dataclass
class SegmentationMeter:
    """Accumulates a confusion matrix over images; :meth:`scores` gives mIoU and friends."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX
    matrix: np.ndarray = field(init=False)
    images: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.images += 1

    def merge(self, matrix: np.ndarray, images: int) -> None:
        """Add counts gathered elsewhere (another process)."""
        self.matrix += matrix
        self.images += images

    def scores(self) -> dict[str, float | list[float | None] | int]:
        return scores_from_matrix(self.matrix, self.images)


def scores_from_matrix(matrix: np.ndarray, images: int = 0) -> dict[str, float | list[float | None] | int]:
    """``miou`` averages the IoU of classes that occur in the ground truth or the prediction.

    ``per_class_iou[k]`` is None for a class absent from both (it has no defined IoU).
    """
    matrix = matrix.astype(np.float64)
    tp = np.diag(matrix)
    gt = matrix.sum(axis=1)
    pred = matrix.sum(axis=0)
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
