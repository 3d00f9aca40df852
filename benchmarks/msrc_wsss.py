"""MSRC-21 from image-level tags: SLRNet's pseudo-labels through the user path, next to the
trivial priors and a CAM baseline computed in the same run.

    .venv/bin/python -m benchmarks.msrc_wsss [--view all|objects] [--split full|thirds]
        [--minutes M | --epochs N] [--image-size S] [--seed N] [--no-cam] [--name NAME]

``--view all``: the 21 MSRC classes, no background class (``import --no-background --tags``).
``--view objects``: 14 object classes + a never-tagged background (constant background logit),
the 280 photos that show an object.
``--split full``: train on every photo with its tags, score the pseudo-labels of all of them.
``--split thirds``: a seeded 2/3 is imported with tags and 1/3 without; the model trains on the
tagged 2/3 (its pseudo-labels are scored as "seen") and predicts the other third WITHOUT their
tags (the classes it predicts itself: "unseen").

Everything goes through the services behind ``launch.py import / train / predict / evaluate`` with
their defaults unless an option is given (``--minutes`` sets the training budget; no option = the
CPU default budget). The CAM baseline is the same backbone with a 1x1 classifier trained for the
same number of epochs at the same crop; with a background class its threshold is chosen on the
seeded 2/3 ("tune" half) and applied to all.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from benchmarks.common import DATA, seed_torch_home, timed, write_result
from services.import_options import ImportOptions
from services.train_options import TrainOptions

VIEWS = {
    "all": {"classes": "classes.txt", "tags": "tags.csv", "masks": "masks", "background": False},
    "objects": {"classes": "classes_objects.txt", "tags": "tags_objects.csv", "masks": "masks_objects",
                "background": True},
}
CAM_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def read_tags(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        return {row["image"]: [t for t in row["tags"].split(";") if t] for row in csv.DictReader(f)}


def load_view(root: Path, view: dict, seed: int) -> tuple[list[str], dict[str, list[str]], set[str]]:
    """Class names, each photo's tag names, and the seeded 2/3 of the photos (the "tune" split)."""
    names = [n.strip() for n in (root / view["classes"]).read_text().splitlines() if n.strip()]
    tag_names = read_tags(root / "train" / view["tags"])
    images = sorted(tag_names)
    order = np.random.default_rng(seed).permutation(len(images))
    return names, tag_names, {images[i] for i in order[: round(len(images) * 2 / 3)]}


def gold_mask(root: Path, view: dict, name: str) -> np.ndarray:
    with PILImage.open(root / "train" / view["masks"] / f"{Path(name).stem}.png") as im:
        return np.array(im, dtype=np.uint8)


# --- trivial priors -------------------------------------------------------------------------------


def prior_maps(gold: np.ndarray, tags: list[int], freq: Counter,
               has_background: bool) -> dict[str, np.ndarray]:
    """The priors a result must beat, from the image's tags alone."""
    h, w = gold.shape
    by_freq = sorted(tags, key=lambda c: -freq[c])
    most, rarest = by_freq[0], by_freq[-1]
    box = np.zeros((h, w), bool)
    bh, bw = round(h * 0.5 ** 0.5), round(w * 0.5 ** 0.5)  # a centre box of half the area
    box[(h - bh) // 2:(h - bh) // 2 + bh, (w - bw) // 2:(w - bw) // 2 + bw] = True
    maps = {"whole_image_most_frequent_tag": np.full((h, w), most, np.uint8)}
    if has_background:
        maps["all_background"] = np.zeros((h, w), np.uint8)
        maps["centre_box_most_frequent_tag"] = np.where(box, most, 0).astype(np.uint8)
    else:
        maps["all_most_frequent_class"] = np.full((h, w), freq.most_common(1)[0][0], np.uint8)
        maps["centre_box_rarest_tag_rest_most_frequent"] = np.where(box, rarest, most).astype(np.uint8)
    return maps


def score(meter: object, names: list[str]) -> dict:
    s = meter.scores()  # type: ignore[attr-defined]
    return {"miou": round(s["miou"], 4), "pixel_accuracy": round(s["pixel_accuracy"], 4),
            "per_class_iou": {n: (None if v is None else round(v, 4))
                              for n, v in zip(names, s["per_class_iou"], strict=True)}}


# --- CAM baseline ---------------------------------------------------------------------------------


def run_cam(root: Path, view: dict, names: list[str], tags: dict[str, list[int]], tune: set[str], *,
            epochs: int, image_size: int, seed: int) -> dict:
    import torch

    from benchmarks.cam_baseline import cam_label_map, normalised_cams, train_cam
    from slrnet.data import Sample
    from slrnet.metrics import SegmentationMeter
    from storage.files import read_rgb

    k = len(names)
    bg = view["background"]
    samples = []
    for name, tagged in tags.items():
        vec = np.zeros(k, np.float32)
        vec[tagged] = 1
        path = root / "train" / "images" / name
        samples.append(Sample(name, image=lambda p=path: read_rgb(p), tags=vec))
    t0 = time.perf_counter()
    model, rate = train_cam(samples, k, epochs=epochs, image_size=image_size, seed=seed, has_background=bg)
    train_s = time.perf_counter() - t0
    thresholds = CAM_THRESHOLDS if bg else (0.0,)
    tune_meters = {t: SegmentationMeter(k) for t in thresholds}
    all_meters = {t: SegmentationMeter(k) for t in thresholds}
    for s in samples:
        gold = gold_mask(root, view, s.name)
        cams = normalised_cams(model, s.image(), s.tags, image_size, has_background=bg)
        for t in thresholds:
            if bg:
                pred = cam_label_map(cams, t)
            else:  # every pixel is one of the image's tagged classes: the best-scoring one
                untagged = torch.as_tensor(s.tags == 0)[:, None, None]
                pred = cams.masked_fill(untagged, -1.0).argmax(0).to(torch.uint8).numpy()
            all_meters[t].update(pred, gold)
            if s.name in tune:
                tune_meters[t].update(pred, gold)
    best = max(thresholds, key=lambda t: tune_meters[t].scores()["miou"])
    return {**score(all_meters[best], names), "threshold_chosen_on_tune_split": best,
            "train_s": round(train_s, 1), "train_img_per_s": round(rate, 2)}


# --- SLRNet through the services ------------------------------------------------------------------


def link_images(root: Path, names: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for n in names:
        os.symlink(root / "train" / "images" / n, folder / n)
    return folder


def write_tags(path: Path, tags: dict[str, list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "tags"])
        for n, t in tags.items():
            w.writerow([n, ";".join(t)])
    return path


def link_gold(root: Path, view: dict, names: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for n in names:
        stem = Path(n).stem
        os.symlink(root / "train" / view["masks"] / f"{stem}.png", folder / f"{stem}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--view", choices=sorted(VIEWS), default="all")
    parser.add_argument("--split", choices=["full", "thirds"], default="full")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training budget (default: the CPU default)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cam", action="store_true")
    parser.add_argument("--train-overrides", default="{}", help="JSON of TrainConfig fields")
    parser.add_argument("--model-overrides", default="{}", help="JSON of ModelConfig fields")
    parser.add_argument("--inference", default="{}", help="JSON of InferenceConfig fields")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    import json

    import torch

    from services import evaluation, publishing, train_plan, training
    from services.context import Studio
    from services.importing import import_dataset
    from slrnet.config import InferenceConfig
    from slrnet.metrics import SegmentationMeter

    root = DATA / "msrc"
    view = VIEWS[args.view]
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-msrc-{args.view}-"))
    seed_torch_home(tmp / "torch")
    names, tag_names, two_thirds = load_view(root, view, args.seed)
    index = {n: i for i, n in enumerate(names)}
    images = sorted(tag_names)
    seen = sorted(two_thirds) if args.split == "thirds" else images
    unseen = sorted(set(images) - two_thirds) if args.split == "thirds" else []
    tags = {n: [index[t] for t in tag_names[n]] for n in images}

    # Priors over the scored images (class frequencies from the tags of the scored set).
    freq = Counter(c for n in images for c in tags[n])
    prior_meters: dict[str, SegmentationMeter] = {}
    for n in images:
        gold = gold_mask(root, view, n)
        for key, pred in prior_maps(gold, tags[n], freq, view["background"]).items():
            prior_meters.setdefault(key, SegmentationMeter(len(names))).update(pred, gold)
    print(f"working folder (kept for benchmarks.msrc_repredict): {tmp}", flush=True)
    result: dict = {"args": vars(args), "workdir": str(tmp), "images": len(images), "seen": len(seen),
                    "unseen": len(unseen),
                    "torch_threads": torch.get_num_threads(),
                    "priors": {k: score(m, names) for k, m in prior_meters.items()}}
    print(json.dumps({k: v["miou"] for k, v in result["priors"].items()}), flush=True)

    studio = Studio.open(tmp / "data")
    times: dict[str, float] = {}
    with timed(times, "import_s"):
        import_dataset(studio, link_images(root, seen, tmp / "seen"), ImportOptions(
            classes_file=root / view["classes"], has_background=view["background"],
            tags_csv=write_tags(tmp / "tags.csv", {n: tag_names[n] for n in seen})), project="msrc")
        if unseen:
            import_dataset(studio, link_images(root, unseen, tmp / "unseen"), ImportOptions(
                classes_file=root / view["classes"], has_background=view["background"]), project="msrc")

    def log(fraction: float, message: str, metrics: dict) -> None:
        if "plan" in metrics or metrics.get("step") == metrics.get("steps"):
            print(f"[{time.strftime('%H:%M:%S')}] {message} ({metrics.get('images_per_s', 0):.2f} img/s) "
                  f"{json.dumps({k: round(v, 4) for k, v in metrics.get('losses', {}).items()})}", flush=True)

    options: dict = {"device": "cpu", "seed": args.seed, "warm_start": False,
                     "train_overrides": json.loads(args.train_overrides) or None,
                     "model_overrides": json.loads(args.model_overrides) or None}
    if args.epochs:
        options["epochs"] = args.epochs
    if args.minutes:
        options["budget_s"] = args.minutes * 60
    if args.image_size:
        options["image_size"] = args.image_size
    with timed(times, "train_s"):
        trained = training.train(studio, "msrc", TrainOptions(**options), progress=log)
    inference = json.loads(args.inference)
    config = None
    if inference:
        config = InferenceConfig(**{**vars(publishing.CPU_INFERENCE), **inference})
    with timed(times, "predict_s"):
        predicted = publishing.predict(studio, "msrc", device="cpu", config=config)
    result["slrnet"] = {"seen": evaluation.evaluate(studio, "msrc",
                                                   gt_masks=link_gold(root, view, seen, tmp / "gold_seen"))}
    if unseen:
        result["slrnet"]["unseen_without_tags"] = evaluation.evaluate(
            studio, "msrc", gt_masks=link_gold(root, view, unseen, tmp / "gold_unseen"))
    history = trained.metrics["history"]
    result["slrnet"].update({
        "plan": trained.metrics.get("plan"), "epochs": trained.epochs,
        "loss_history": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}
                         for h in history],
        "predict_img_per_s": round(predicted.images / times["predict_s"], 2),
    })
    studio.close()
    if not args.no_cam:
        tune = two_thirds
        with timed(times, "cam_s"):
            size = (trained.metrics.get("plan") or {}).get("image_size") or args.image_size \
                or train_plan.CPU_IMAGE_SIZE
            result["cam"] = run_cam(root, view, names, {n: tags[n] for n in seen}, tune,
                                    epochs=trained.epochs, image_size=size, seed=args.seed)
    result["times"] = times
    summary = {"slrnet_seen": round(result["slrnet"]["seen"]["miou"], 4),
               "slrnet_unseen": result["slrnet"].get("unseen_without_tags", {}).get("miou"),
               "cam": result.get("cam", {}).get("miou"),
               **{k: v["miou"] for k, v in result["priors"].items()}, **times}
    result["summary"] = summary
    write_result(args.name or f"msrc_{args.view}_{args.split}", result)
    print("SUMMARY", json.dumps(summary))


if __name__ == "__main__":
    main()
