"""Inference settings on MSRC-21 for a trained checkpoint: pseudo-label mIoU (known tags, as
`predict` uses them) and speed per `InferenceConfig` variant, on the seeded "tune" 2/3 of the photos
(where settings are chosen) and the other third (where they are only reported).

    .venv/bin/python -m benchmarks.msrc_inference CHECKPOINT [--view all|objects]
        [--variants '{"name": {"flip": false, ...}, ...}']
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import DATA, write_result
from benchmarks.msrc_wsss import VIEWS, gold_mask, load_view

DEFAULT_VARIANTS = {
    "cpu_default": {},
    "no_flip": {"flip": False},
    "pamr_full": {"pamr_scale": 1.0},
    "no_pamr": {"pamr": False},
    "bg_power_3": {"background_power": 3.0},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--view", choices=sorted(VIEWS), default="all")
    parser.add_argument("--variants", default=None, help="JSON {name: InferenceConfig fields}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    from services.publishing import CPU_INFERENCE
    from slrnet.config import InferenceConfig
    from slrnet.inference import Predictor
    from slrnet.metrics import SegmentationMeter
    from storage.files import read_rgb

    root, view = DATA / "msrc", VIEWS[args.view]
    names, tags, tune = load_view(root, view, args.seed)
    index = {n: i for i, n in enumerate(names)}
    images = sorted(tags)
    variants = json.loads(args.variants) if args.variants else DEFAULT_VARIANTS
    pixels = {n: read_rgb(root / "train" / "images" / n) for n in images}
    golds = {n: gold_mask(root, view, n) for n in images}
    result: dict = {"checkpoint": args.checkpoint, "variants": {}}
    for key, fields in variants.items():
        config = InferenceConfig(**{**vars(CPU_INFERENCE), **fields})
        predictor = Predictor.from_checkpoint(args.checkpoint, config=config)
        meters = {"tune": SegmentationMeter(len(names)), "rest": SegmentationMeter(len(names))}
        start = time.perf_counter()
        for n in images:
            known = np.zeros(len(names), np.float32)
            known[[index[t] for t in tags[n]]] = 1
            pred = predictor.predict(pixels[n], known_tags=known)
            meters["tune" if n in tune else "rest"].update(pred.labels, golds[n])
        rate = len(images) / (time.perf_counter() - start)
        scores = {part: m.scores() for part, m in meters.items()}
        result["variants"][key] = {"config": fields, "img_per_s": round(rate, 2),
                                   **{f"miou_{p}": round(s["miou"], 4) for p, s in scores.items()},
                                   **{f"pixel_accuracy_{p}": round(s["pixel_accuracy"], 4)
                                      for p, s in scores.items()}}
        print(key, json.dumps(result["variants"][key]), flush=True)
    write_result(args.name or f"msrc_inference_{args.view}", result)


if __name__ == "__main__":
    main()
