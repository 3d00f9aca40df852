"""slrnet.metrics: confusion matrix and mIoU."""

from __future__ import annotations

import numpy as np
import pytest

from slrnet.metrics import SegmentationMeter, confusion_matrix, scores_from_matrix


def test_confusion_matrix_counts_rows_gt_columns_pred_and_skips_ignore() -> None:
    target = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [1, 2, 0]], dtype=np.uint8)
    m = confusion_matrix(pred, target, 3)
    assert m.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0]]


def test_uncertain_prediction_counts_as_a_miss() -> None:
    target = np.array([0, 1, 1])
    pred = np.array([0, 255, 1])
    m = confusion_matrix(pred, target, 2)
    assert m[1, 2] == 1  # the "no prediction" column
    s = scores_from_matrix(m)
    assert s["per_class_iou"] == [1.0, 0.5]  # class 1 lost a pixel (union 2, hit 1); class 0 did not
    assert s["pixel_accuracy"] == pytest.approx(2 / 3)


def test_meter_miou_over_classes_present_only() -> None:
    meter = SegmentationMeter(4)
    meter.update(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]))
    meter.update(np.array([2, 2]), np.array([2, 2]))
    s = meter.scores()
    # class 0: tp 2, union 3; class 1: tp 1, union 2; class 2: 1.0; class 3 absent -> None
    assert s["per_class_iou"] == [pytest.approx(2 / 3), 0.5, 1.0, None]
    assert s["miou"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert s["pixel_accuracy"] == pytest.approx(5 / 6)
    assert s["images"] == 2


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
