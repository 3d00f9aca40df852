"""MSRC-21 from image-level tags with the light head on stored features (issue 18), next to the
priors and (optionally) the CAM baseline computed in the same run.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.msrc_features [--view all|objects]
        [--epochs N | --minutes M] [--feature-size 320] [--crop 160] [--channels 64] [--lr 0.005]
        [--seed 0] [--cam] [--name NAME]

Features of every photo are computed once (timed: the feature pass) and kept under
``--cache`` between runs (a benchmark cache, not the product's store). The head trains on all
photos with their tags (`slrnet.train.fit`, `ModelConfig(head="light")`); the pseudo-labels are
the product's `Predictor` (CPU inference settings) on each photo with its tags. Scores: all photos,
the seeded 2/3 "tune" split (the one msrc_wsss uses; choose settings there) and the other third
("rest": report it). Every epoch's loss terms are logged, with the share of crop cells given a
pseudo-label; for the final pseudo-labels the coverage (share of pixels not uncertain) and the
accuracy on the covered pixels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.common import DATA, seed_torch_home, timed, write_result
from benchmarks.msrc_wsss import VIEWS, gold_mask, load_view, prior_maps, run_cam, score


def load_or_extract(spec: object, names: list[str], root: Path, cache: Path) -> tuple[dict, float, int]:
    """{name: arrays}, seconds spent extracting (0 when all cached), photos extracted."""
    from slrnet.features import FeatureExtractor
    from storage.files import read_rgb

    folder = cache / spec.key  # type: ignore[attr-defined]
    folder.mkdir(parents=True, exist_ok=True)
    out, extractor, spent, count = {}, None, 0.0, 0
    for name in names:
        path = folder / f"{Path(name).stem}.npz"
        if path.is_file():
            with np.load(path) as data:
                out[name] = {k.replace("__", "/"): data[k] for k in data.files}
            continue
        extractor = extractor or FeatureExtractor(spec)  # type: ignore[arg-type]
        image = read_rgb(root / "train" / "images" / name)
        t = time.perf_counter()
        arrays = extractor.extract(image)
        spent += time.perf_counter() - t
        count += 1
        np.savez(path, **{k.replace("/", "__"): v for k, v in arrays.items()})
        out[name] = arrays
    return out, spent, count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--view", choices=sorted(VIEWS), default="all")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=None, help="train for this budget (timed steps)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--feature-size", type=int, default=320)
    parser.add_argument("--views", default="s1,s1f,s0.5,s0.5f")
    parser.add_argument("--crop", type=int, default=160, help="TrainConfig.image_size (crop, px at s1)")
    parser.add_argument("--crop-scale", default="0.5,1.0")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--model-overrides", default="{}")
    parser.add_argument("--train-overrides", default="{}")
    parser.add_argument("--inference", default="{}", help="JSON of InferenceConfig fields")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cam", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "slrnet-bench-features")
    parser.add_argument("--from-checkpoint", type=Path, default=None,
                        help="skip training: predict with this run's checkpoint (another --inference)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    import torch

    from services.publishing import CPU_INFERENCE
    from services.train_plan import default_warmup
    from slrnet.config import MODE_FACTS, InferenceConfig, ModelConfig, TrainConfig
    from slrnet.feature_data import FeatureSample
    from slrnet.features import FeatureSpec
    from slrnet.inference import Predictor
    from slrnet.metrics import SegmentationMeter
    from slrnet.model import build_model
    from slrnet.schedule import images_per_epoch
    from slrnet.train import (
        config_from_dict,
        fit,
        load_checkpoint,
        model_from_checkpoint,
        seconds_per_image,
    )
    from storage.files import read_rgb

    root = DATA / "msrc"
    view = VIEWS[args.view]
    tmp = Path(tempfile.mkdtemp(prefix="bench-msrc-features-"))
    seed_torch_home(tmp / "torch")
    names, tag_names, tune = load_view(root, view, args.seed)
    index = {n: i for i, n in enumerate(names)}
    images = sorted(tag_names)
    tags = {n: [index[t] for t in tag_names[n]] for n in images}
    k = len(names)
    bg = view["background"]
    result: dict = {"args": {a: (str(v) if isinstance(v, Path) else v) for a, v in vars(args).items()},
                    "images": len(images),
                    "torch_threads": torch.get_num_threads(), "load_before": __import__("os").getloadavg()}

    freq = Counter(c for n in images for c in tags[n])
    prior_meters: dict[str, SegmentationMeter] = {}
    golds = {n: gold_mask(root, view, n) for n in images}
    for n in images:
        for key, pred in prior_maps(golds[n], tags[n], freq, bg).items():
            prior_meters.setdefault(key, SegmentationMeter(k)).update(pred, golds[n])
    result["priors"] = {key: score(m, names)["miou"] for key, m in prior_meters.items()}
    print("priors", json.dumps(result["priors"]), flush=True)

    spec = FeatureSpec.for_backbone(args.backbone, args.feature_size, tuple(args.views.split(",")))
    features, spent, count = load_or_extract(spec, images, root, args.cache)
    per_image_kb = sum(a.nbytes for a in features[images[0]].values()) / 1024
    result["feature_pass"] = {"spec": spec.key, "extracted": count, "seconds": round(spent, 1),
                              "s_per_image": round(spent / count, 4) if count else None,
                              "kb_per_image_first": round(per_image_kb)}
    print("features", json.dumps(result["feature_pass"]), flush=True)

    samples = []
    for n in images:
        vec = np.zeros(k, np.float32)
        vec[tags[n]] = 1
        samples.append(FeatureSample(n, features[n], tags=vec))
    model_config = ModelConfig(**{
        "num_classes": k, "mode": "wsss", "backbone": args.backbone, "has_background": bg, "head": "light",
        "feature_channels": args.channels, "feature_image_size": args.feature_size,
        "feature_views": spec.views, **json.loads(args.model_overrides)})
    lo, hi = (float(x) for x in args.crop_scale.split(","))
    base = {"epochs": args.epochs or 1, "warmup_epochs": 0, "image_size": args.crop, "crop_scale": (lo, hi),
            "lr": args.lr, "amp": False, "seed": args.seed, "feature_resolution_losses": True,
            "batch_size": 8, "loss_weights": MODE_FACTS["wsss"].loss_weights,
            **json.loads(args.train_overrides)}
    torch.manual_seed(args.seed)
    model = build_model(model_config)
    device = torch.device("cpu")
    if args.minutes:
        probe = TrainConfig(**base)
        per_img = seconds_per_image(model, samples, model_config=model_config, train_config=probe,
                                    device=device, steps=3)
        per_epoch = images_per_epoch(len(samples), probe.batch_size) * per_img
        epochs = max(1, int(args.minutes * 60 / per_epoch))
        result["probe_s_per_image"] = round(per_img, 4)
    else:
        epochs = args.epochs or 10
    warmup = args.warmup if args.warmup is not None else default_warmup(epochs)
    train_config = TrainConfig(**{**base, "epochs": epochs, "warmup_epochs": min(warmup, epochs)})
    times: dict[str, float] = {}

    def log(p: object) -> None:
        if p.step == p.steps_per_epoch:  # type: ignore[attr-defined]
            print(f"[{time.strftime('%H:%M:%S')}] epoch {p.epoch + 1}/{p.epochs} "  # type: ignore[attr-defined]
                  f"{p.images_per_s:.1f} img/s {json.dumps({n: round(v, 4) for n, v in p.losses.items()})}",
                  flush=True)

    if args.from_checkpoint:
        state = load_checkpoint(args.from_checkpoint)
        model, history = model_from_checkpoint(state), state["metrics"]["history"]
        model_config = config_from_dict(ModelConfig, state["model_config"])
        epochs = len(history)
    else:
        with timed(times, "train_s"):
            history = fit(model, samples, model_config=model_config, train_config=train_config,
                          class_names=names, checkpoint_path=tmp / "run.pt", device=device,
                          progress=log).history
        print(f"checkpoint (for --from-checkpoint): {tmp / 'run.pt'}", flush=True)
    result["epochs"] = epochs
    result["loss_history"] = [{n: (round(v, 4) if isinstance(v, float) else v) for n, v in h.items()}
                              for h in history]

    config = InferenceConfig(**{**vars(CPU_INFERENCE), **json.loads(args.inference)})
    predictor = Predictor(model, model_config, names, config=config, default_size=args.feature_size)
    meters = {part: SegmentationMeter(k) for part in ("all", "tune", "rest")}
    covered = correct = pixels = 0
    with timed(times, "predict_s"):
        for n in images:
            known = np.zeros(k, np.float32)
            known[tags[n]] = 1
            labels = predictor.predict(read_rgb(root / "train" / "images" / n), known_tags=known).labels
            gold = golds[n]
            for part in ("all", "tune" if n in tune else "rest"):
                meters[part].update(labels, gold)
            valid = gold != 255
            sure = valid & (labels != 255)
            pixels += int(valid.sum())
            covered += int(sure.sum())
            correct += int((labels[sure] == gold[sure]).sum())
    result["light_head"] = {part: score(m, names) for part, m in meters.items()}
    result["pseudo_labels"] = {"coverage": round(covered / max(pixels, 1), 4),
                               "accuracy_on_covered": round(correct / max(covered, 1), 4)}
    if args.cam:
        with timed(times, "cam_s"):
            result["cam"] = run_cam(root, view, names, tags, tune, epochs=epochs, image_size=args.crop,
                                    seed=args.seed)
    result["times"] = times
    head = result["light_head"]
    summary = {"miou_all": head["all"]["miou"], "miou_tune": head["tune"]["miou"],
               "miou_rest": head["rest"]["miou"], "epochs": epochs, **result["pseudo_labels"],
               "cam": result.get("cam", {}).get("miou"), **result["priors"], **times}
    result["summary"] = summary
    result["load_after"] = __import__("os").getloadavg()
    write_result(args.name or f"msrc_features_{args.view}", result)
    print("SUMMARY", json.dumps(summary))


if __name__ == "__main__":
    main()
