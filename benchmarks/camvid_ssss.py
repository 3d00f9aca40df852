"""CamVid with a few masks: SLRNet (ssss, the rest of train as unlabelled images) vs supervised-only
(CE on the same masks, no consistency or pseudo-label terms), mIoU on CamVid val; per-class IoU,
and the coverage / accuracy per class of SLRNet's pseudo-labels on the unlabelled train images.

    .venv/bin/python -m benchmarks.camvid_ssss --masks 20 [--epochs N | --minutes M] [--image-size S] \
        [--network '{"head": "light"}']

With neither --epochs nor --minutes SLRNet trains with the CPU default (the time budget).
``--network`` sets ModelConfig fields of BOTH models (the network compared, e.g. the light head on
stored features); ``--model-overrides`` those of SLRNet alone. When the network is the light head,
the feature pass over all train images runs first, timed apart (``times["features_s"]``, its CPU
time ``features_cpu_s``); both trainings then read the same stored features.

Both models train through `services.training.train` (the service behind `launch.py train`) for the same
number of optimiser steps; the supervised-only project holds just the masked images. Val images are
scored with `slrnet.inference.Predictor` (the library behind `launch.py predict`), argmax labels.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from benchmarks.common import DATA, log_epochs, seed_torch_home, timed, write_result
from services import publishing, training
from services.context import Studio
from services.features import project_features
from services.import_options import ImportOptions
from services.importing import import_dataset
from services.publishing import CPU_INFERENCE
from services.train_options import TrainOptions
from services.train_plan import preview_training
from slrnet.config import LossWeights, default_mask_repeat
from slrnet.feature_spec import FeatureSpec
from slrnet.inference import Predictor
from slrnet.metrics import SegmentationMeter
from storage.files import read_rgb

SUPERVISED_ONLY = LossWeights(mask_consistency=0.0, code_consistency=0.0, pseudo=0.0)


@contextmanager
def cpu_timed(into: dict[str, float], key: str) -> Iterator[None]:
    """The process's CPU time of the block (1 thread: what it costs one core alone)."""
    start = time.process_time()
    yield
    into[key] = round(time.process_time() - start, 1)


def val_scores(studio: Studio, checkpoint: str, root: Path, names: list[str],
               limit: int | None = None) -> tuple[dict, float]:
    predictor = Predictor.from_checkpoint(studio.data_dir / checkpoint, config=CPU_INFERENCE)
    meter = SegmentationMeter(predictor.num_classes)
    times: dict[str, float] = {}
    paths = sorted((root / "val" / "images").iterdir())[:limit]
    with timed(times, "s"):
        for path in paths:
            with PILImage.open(root / "val" / "masks" / f"{path.stem}.png") as im:
                gold = np.array(im, dtype=np.uint8)
            meter.update(predictor.predict(read_rgb(path)).labels, gold)
    scores = meter.scores()
    per_class = dict(zip(names, scores["per_class_iou"], strict=True))
    return {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"], "per_class_iou": per_class,
            "images": scores["images"]}, len(paths) / times["s"]


def pseudo_label_quality(studio: Studio, root: Path, names: list[str], unlabelled: set[str]) -> dict:
    """Coverage (share of gold-labelled pixels with a pseudo-label) and accuracy (of those) per
    gold class, over the published pseudo-labels of the unlabelled train images."""
    from services.lookups import resolve_project
    from storage import labels as label_repo
    from storage.images import all_images
    from storage.label_maps import decode_label_png

    k = len(names)
    covered, correct, total = np.zeros(k), np.zeros(k), np.zeros(k)
    with studio.Session.begin() as session:
        project = resolve_project(session, "slrnet")
        for image in all_images(session, project.id):
            row = label_repo.current_pseudo_label(session, project.id, image.id)
            if image.name not in unlabelled or row is None:
                continue
            pred = decode_label_png(row.png)
            with PILImage.open(root / "train" / "masks" / f"{Path(image.name).stem}.png") as im:
                gold = np.array(im, dtype=np.uint8)
            valid = gold < k
            for c in range(k):
                here = valid & (gold == c)
                total[c] += here.sum()
                labelled = here & (pred != 255)
                covered[c] += labelled.sum()
                correct[c] += (labelled & (pred == c)).sum()
    per_class = {n: {"coverage": round(float(covered[c] / max(total[c], 1)), 3),
                     "accuracy": round(float(correct[c] / max(covered[c], 1)), 3)}
                 for c, n in enumerate(names)}
    return {"coverage": round(float(covered.sum() / max(total.sum(), 1)), 3),
            "accuracy": round(float(correct.sum() / max(covered.sum(), 1)), 3), "per_class": per_class}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--masks", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--train-overrides", default="{}", help="JSON of TrainConfig fields (SLRNet)")
    parser.add_argument("--model-overrides", default="{}",
                        help="JSON of ModelConfig fields (SLRNet only; supervised-only keeps the default)")
    parser.add_argument("--network", default="{}",
                        help="JSON of ModelConfig fields of both models (e.g. {\"head\": \"light\"})")
    parser.add_argument("--unlabelled", type=int, default=None, help="unlabelled train images (default: all)")
    parser.add_argument("--mask-repeat", type=int, default=None, help="default: the service's choice")
    parser.add_argument("--val-images", type=int, default=None, help="the first N val images (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    root = DATA / "camvid"
    tmp = Path(tempfile.mkdtemp(prefix="bench-camvid-"))
    seed_torch_home(tmp / "torch")
    names = [n.strip() for n in (root / "classes.txt").read_text().splitlines() if n.strip()]

    images = sorted((root / "train" / "images").iterdir())
    order = np.random.default_rng(args.seed).permutation(len(images))
    chosen = [images[i] for i in order[: args.masks]]
    rest = [images[i] for i in order[args.masks :]][: args.unlabelled]
    masks_dir, labelled_dir, train_dir = tmp / "masks", tmp / "labelled", tmp / "train"
    for folder in (masks_dir, labelled_dir, train_dir):
        folder.mkdir()
    for path in chosen:
        shutil.copy(root / "train" / "masks" / f"{path.stem}.png", masks_dir)
        shutil.copy(path, labelled_dir)
    for path in chosen + rest:
        shutil.copy(path, train_dir)

    studio = Studio.open(tmp / "data")
    times: dict[str, float] = {}
    common = {"device": "cpu", "seed": args.seed, "warm_start": False}
    if args.image_size:
        common["image_size"] = args.image_size
    import_dataset(studio, train_dir, ImportOptions(
        classes_file=root / "classes.txt", has_background=False, masks_dir=masks_dir), project="slrnet")
    unlabelled = len(rest)
    repeat = args.mask_repeat or default_mask_repeat(args.masks, unlabelled)
    budget = {"epochs": args.epochs} if args.epochs else {}
    if args.minutes:
        budget["budget_s"] = args.minutes * 60
    network = json.loads(args.network)
    overrides = {"mask_repeat": repeat, **json.loads(args.train_overrides)}
    slr_options = TrainOptions(train_overrides=overrides,
                               model_overrides={**network, **json.loads(args.model_overrides)} or None,
                               **budget, **common)
    plan = preview_training(studio, "slrnet", slr_options)
    if plan.feature_spec_key is not None:  # the feature pass, timed apart from training
        with timed(times, "features_s"), cpu_timed(times, "features_cpu_s"):
            project_features(studio, "slrnet", FeatureSpec.of_model(plan.model_config), device="cpu")
    with timed(times, "slrnet_train_s"), cpu_timed(times, "slrnet_train_cpu_s"):
        slr = training.train(studio, "slrnet", slr_options, progress=log_epochs)
    slr_epochs = slr.epochs

    # Same optimiser steps for the supervised-only model, on the masked images alone.
    per_epoch = args.masks * repeat + unlabelled
    sup_epochs = math.ceil(slr_epochs * (per_epoch // 8) / max(args.masks // 8, 1))
    import_dataset(studio, labelled_dir, ImportOptions(
        classes_file=root / "classes.txt", has_background=False, masks_dir=masks_dir), project="supervised")
    with timed(times, "supervised_train_s"), cpu_timed(times, "supervised_train_cpu_s"):
        sup = training.train(studio, "supervised", TrainOptions(
            epochs=sup_epochs, train_overrides={"loss_weights": SUPERVISED_ONLY},
            model_overrides=network or None, **common),
            progress=log_epochs)

    result: dict = {"args": vars(args), "slrnet_epochs": slr_epochs, "slrnet_plan": slr.metrics.get("plan"),
                    "supervised_epochs": sup_epochs, "slrnet_mode": slr.mode,
                    "head": plan.model_config.head, "backbone": plan.model_config.backbone}
    with timed(times, "slrnet_predict_train_s"):
        publishing.predict(studio, "slrnet", run_id=slr.run_id, device="cpu")
    result["pseudo_labels_on_unlabelled"] = pseudo_label_quality(studio, root, names, {p.name for p in rest})
    result["slrnet"], slr_rate = val_scores(studio, slr.checkpoint_path, root, names, args.val_images)
    result["supervised_only"], _ = val_scores(studio, sup.checkpoint_path, root, names, args.val_images)
    studio.close()
    result["slrnet"]["final_losses"] = slr.metrics["history"][-1]
    result["supervised_only"]["final_losses"] = sup.metrics["history"][-1]
    gain = result["slrnet"]["miou"] - result["supervised_only"]["miou"]
    result["miou_gain_points"] = round(100 * gain, 2)
    result["train_img_per_s"] = round(slr_epochs * per_epoch / times["slrnet_train_s"], 2)
    result["inference_img_per_s"] = round(slr_rate, 2)
    result["times"] = times
    write_result(args.name or f"camvid_ssss_{args.masks}", result)


if __name__ == "__main__":
    main()
