"""Reliability of a project's published confidence against gold masks: per confidence bin, the
share of pixels and how many of them are right, and the accuracy and coverage of the pixels at or
above ``slrnet.config.CONFIDENT_FROM`` (what Review's "Accept the confident pixels" keeps).

Reads what ``launch.py predict`` stored (label map + confidence per image), so it scores exactly
what a user sees::

    python -m benchmarks.project_reliability --data DIR --project NAME --gt-masks GOLD_DIR

Gold pixels of 255 are ignored; an uncertain (255) prediction counts as wrong.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from services.context import Studio
from services.evaluation import class_names_and_gold
from slrnet.config import CONFIDENT_FROM, IGNORE_INDEX

BINS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)


def reliability(studio: Studio, project: str, gt_dir: Path) -> dict:
    right = np.zeros(len(BINS) - 1)
    total = np.zeros(len(BINS) - 1)
    images = 0
    for item in class_names_and_gold(studio, project, gt_dir)[1]:
        valid = item.gold != IGNORE_INDEX
        correct = (item.labels == item.gold)[valid]
        which = np.digitize(item.confidence[valid], BINS) - 1
        total += np.bincount(which, minlength=len(total))[: len(total)]
        right += np.bincount(which, weights=correct, minlength=len(total))[: len(total)]
        images += 1
    first = BINS.index(CONFIDENT_FROM)
    confident_right, confident = right[first:].sum(), total[first:].sum()
    return {
        "images": images,
        "bins": [{"from": lo, "to": min(hi, 1.0), "share": t / total.sum(), "accuracy": r / max(t, 1)}
                 for lo, hi, r, t in zip(BINS[:-1], BINS[1:], right, total, strict=True)],
        "confident_from": CONFIDENT_FROM,
        "confident_accuracy": confident_right / max(confident, 1),
        "confident_coverage": confident / total.sum(),
        "pixel_accuracy": right.sum() / total.sum(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--gt-masks", required=True, type=Path)
    args = parser.parse_args()
    with Studio.open(args.data) as studio:
        result = reliability(studio, args.project, args.gt_masks)
    for b in result["bins"]:
        print(f"confidence {b['from']:.1f}-{b['to']:.1f}: {100 * b['share']:5.1f} % of pixels, "
              f"{100 * b['accuracy']:5.1f} % right")
    print(f"at or above {result['confident_from']}: {100 * result['confident_accuracy']:.1f} % right on "
          f"{100 * result['confident_coverage']:.1f} % of the pixels ({result['images']} images); "
          f"all pixels {100 * result['pixel_accuracy']:.1f} % right")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
