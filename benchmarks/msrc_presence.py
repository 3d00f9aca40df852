"""Images nobody tagged: which classes the model keeps, and how right its confident pixels are.

Takes the model `benchmarks.msrc_wsss --split thirds` trained on a seeded 2/3 of the MSRC photos
(their tags, the "seen" part) and predicts the other third WITHOUT tags ("unseen"), under each
class-presence rule, beside the same images' oracle (gold-tag) pseudo-labels and the priors:

* ``rule_0.5``: the classifier's sigmoid above 0.5 (the old filter);
* ``calibrated``: `slrnet.presence.PresenceRule` learnt on the seen photos' tags as the training
  service learns it (cross-validated within them; never on scored images);
* ``no_filter``: every class; ``oracle_tags``: the gold tags (an upper bound of presence).

Choices are made on the seen 2/3 predicted without their tags ("tune"; in-sample for the network)
and reported on the unseen third. Per reading variant (``--variants``: InferenceConfig fields such
as the image size and scales, the levers of issue 19) the rule is refitted under that reading.
Also a reliability table (confidence bin -> pixel accuracy and share of pixels) of the calibrated
rule's predictions, and the confident cut-off chosen on "tune" (the lowest bin edge whose pixels
above are >= 90 % right).

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.msrc_presence /tmp/bench-msrc-all-XXXX \\
        [--variants '{"default": {}, "size224": {"size": 224}}'] [--name NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.common import DATA, seed_torch_home, write_result
from benchmarks.msrc_wsss import VIEWS, gold_mask, load_view, prior_maps, score

RULES = ("rule_0.5", "calibrated", "no_filter", "oracle_tags")
EDGES = np.round(np.arange(0.0, 1.01, 0.1), 2)
TARGET_ACCURACY = 0.9


def reliability(hist_right: np.ndarray, hist_all: np.ndarray) -> list[dict]:
    """Per confidence bin (of 256 uint8 levels, grouped by EDGES): accuracy and share."""
    rows, total = [], hist_all.sum()
    for low, high in itertools.pairwise(EDGES):
        lo, hi = round(low * 255), round(high * 255) if high < 1 else 256
        n, right = hist_all[lo:hi].sum(), hist_right[lo:hi].sum()
        rows.append({"bin": f"{low:.1f}-{high:.1f}", "accuracy": round(right / n, 4) if n else None,
                     "share": round(n / total, 4)})
    return rows


def cut_off(hist_right: np.ndarray, hist_all: np.ndarray, target: float = TARGET_ACCURACY) -> dict:
    """The lowest level (0..255) whose pixels at or above are >= target right, and their share."""
    right_above = np.cumsum(hist_right[::-1])[::-1]
    all_above = np.cumsum(hist_all[::-1])[::-1]
    accuracy = np.where(all_above > 0, right_above / np.maximum(all_above, 1), 0)
    ok = np.flatnonzero(accuracy >= target)
    level = int(ok[0]) if len(ok) else 255
    return {"level": level, "cut_off": round(level / 255, 3), "accuracy": round(float(accuracy[level]), 4),
            "coverage": round(float(all_above[level] / all_above[0]), 4)}


def above(hist_right: np.ndarray, hist_all: np.ndarray, level: int) -> dict:
    n = hist_all[level:].sum()
    return {"accuracy": round(float(hist_right[level:].sum() / max(n, 1)), 4),
            "coverage": round(float(n / hist_all.sum()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the newest in the workdir")
    parser.add_argument("--variants", default='{"default": {}}', help="JSON {name: InferenceConfig fields}")
    parser.add_argument("--seed", type=int, default=0, help="msrc_wsss's --seed (its split)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    import torch

    from services.publishing import CPU_INFERENCE
    from slrnet.config import InferenceConfig
    from slrnet.inference import Predictor
    from slrnet.metrics import SegmentationMeter
    from slrnet.presence import fit_presence, tag_scores_table
    from storage.files import read_rgb

    seed_torch_home(args.workdir / "torch")
    checkpoint = args.checkpoint or max((args.workdir / "data" / "checkpoints").glob("run-*.pt"),
                                        key=lambda p: p.stat().st_mtime)
    root, view = DATA / "msrc", VIEWS["all"]
    names, tag_names, seen = load_view(root, view, args.seed)
    index = {n: i for i, n in enumerate(names)}
    images = sorted(tag_names)
    k = len(names)
    gold_tags = np.zeros((len(images), k), np.float32)
    for i, n in enumerate(images):
        gold_tags[i, [index[t] for t in tag_names[n]]] = 1
    parts = {"tune": [i for i, n in enumerate(images) if n in seen],
             "unseen": [i for i, n in enumerate(images) if n not in seen]}
    pixels = [read_rgb(root / "train" / "images" / n) for n in images]
    golds = [gold_mask(root, view, n) for n in images]

    freq = Counter(c for i in parts["unseen"] for c in np.flatnonzero(gold_tags[i]))
    prior_meters: dict[str, SegmentationMeter] = {}
    for i in parts["unseen"]:
        for key, pred in prior_maps(golds[i], list(np.flatnonzero(gold_tags[i])), freq, False).items():
            prior_meters.setdefault(key, SegmentationMeter(k)).update(pred, golds[i])
    result: dict = {"checkpoint": str(checkpoint), "images": {p: len(v) for p, v in parts.items()},
                    "torch_threads": torch.get_num_threads(),
                    "priors_unseen_with_gold_tags": {key: score(m, names) for key, m in prior_meters.items()},
                    "variants": {}}
    for variant, fields in json.loads(args.variants).items():
        config = InferenceConfig(**{**dataclasses.asdict(CPU_INFERENCE), **fields,
                                    "calibrated_presence": False})
        predictor = Predictor.from_checkpoint(checkpoint, config=config)
        start = time.perf_counter()
        readings = [predictor.read(im) for im in pixels]
        read_s = (time.perf_counter() - start) / len(images)
        features = np.stack([r.evidence() for r in readings])
        rule = fit_presence(features[parts["tune"]], gold_tags[parts["tune"]], seed=args.seed)
        decisions = {
            "rule_0.5": np.stack([predictor.present(r)[0] for r in readings]),
            "calibrated": rule.decide(features),
            "no_filter": np.ones((len(images), k), bool),
            "oracle_tags": gold_tags > 0.5,
        }
        out: dict = {"config": fields, "read_s_per_image": round(read_s, 3),
                     "rule": {"thresholds": dict(zip(names, rule.thresholds, strict=True)),
                              "weights": dict(zip(rule.features, rule.weights, strict=True)),
                              "cv_f1_on_tune": rule.cv_f1}}
        for name in RULES:
            keep = decisions[name].copy()
            keep[~keep.any(1)] = True  # the predictor's fallback: nothing kept -> every class
            meters = {p: SegmentationMeter(k) for p in parts}
            right = {p: np.zeros(256, np.int64) for p in parts}
            every = {p: np.zeros(256, np.int64) for p in parts}
            for part, members in parts.items():
                for i in members:
                    _, labels, confidence = predictor.label(readings[i], keep[i], golds[i].shape)
                    meters[part].update(labels, golds[i])
                    valid = golds[i] != 255
                    every[part] += np.bincount(confidence[valid], minlength=256)
                    right[part] += np.bincount(confidence[valid & (labels == golds[i])], minlength=256)
            entry = {p: score(m, names) for p, m in meters.items()}
            unseen, tune = parts["unseen"], parts["tune"]
            entry["tags_unseen"] = tag_scores_table(keep[unseen], gold_tags[unseen], names)
            entry["tags_tune"] = tag_scores_table(keep[tune], gold_tags[tune], names)["micro"]
            chosen = cut_off(right["tune"], every["tune"])
            entry["reliability_unseen"] = reliability(right["unseen"], every["unseen"])
            entry["confident_cut_off_from_tune"] = chosen
            entry["confident_unseen_at_that_cut_off"] = above(right["unseen"], every["unseen"],
                                                              chosen["level"])
            out[name] = entry
            print(variant, name, json.dumps({"tune": entry["tune"]["miou"], "unseen": entry["unseen"]["miou"],
                                             "tags_unseen": entry["tags_unseen"]["micro"],
                                             "cut_off": chosen,
                                             "confident_unseen": entry["confident_unseen_at_that_cut_off"]}),
                  flush=True)
        result["variants"][variant] = out
    write_result(args.name or f"msrc_presence_{args.workdir.name}", result)


if __name__ == "__main__":
    main()
