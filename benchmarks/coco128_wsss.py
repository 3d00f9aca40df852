"""coco128, image tags only: SLRNet (wsss) pseudo-labels vs a CAM-only baseline, mIoU on the gold masks.

    .venv/bin/python -m benchmarks.coco128_wsss [--epochs 6] [--image-size 192] [--feature-channels 64]
        [--workdir DIR] [--stage all|slrnet|cam]

With ``--workdir`` a second invocation reuses the imported project and its trained model (each
stage writes its own results file), so the SLRNet and CAM halves can run as separate jobs.

SLRNet goes through the same services as `launch.py import / train / predict / evaluate`; the CAM
baseline (benchmarks/cam_baseline.py) trains the same backbone with the classification loss only,
for the same epochs at the same crop size, and its best background threshold is reported.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from benchmarks.cam_baseline import cam_label_map, normalised_cams, train_cam
from benchmarks.common import DATA, log_epochs, seed_torch_home, timed, write_result
from services import evaluation, publishing, training
from services.context import Studio
from services.import_options import ImportOptions
from services.importing import import_dataset
from services.train_options import TrainOptions
from slrnet.data import Sample
from slrnet.metrics import SegmentationMeter
from storage import runs as run_repo
from storage.files import read_rgb
from storage.projects import get_project_by_name

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--feature-channels", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="coco128_wsss")
    parser.add_argument("--workdir", default=None, help="work dir to create or reuse (default: a new temp)")
    parser.add_argument("--stage", default="all", choices=["all", "slrnet", "cam"])
    args = parser.parse_args()
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="bench-coco-"))
    seed_torch_home(tmp / "torch")
    if args.stage in ("all", "slrnet"):
        write_result(f"{args.name}_slrnet", {"args": vars(args), **run_slrnet(args, tmp)})
    if args.stage in ("all", "cam"):
        write_result(f"{args.name}_cam", {"args": vars(args), **run_cam(args)})


def run_slrnet(args: argparse.Namespace, tmp: Path) -> dict:
    """import -> train -> predict -> evaluate through the services (skipping what the workdir has)."""
    root = DATA / "coco128"
    times: dict[str, float] = {}
    studio = Studio.open(tmp / "data")
    with timed(times, "import_s"):
        import_dataset(studio, root / "images", ImportOptions(
            classes_file=root / "classes.txt", tags_csv=root / "tags.csv"), project="coco")
    with studio.Session() as session:
        project = get_project_by_name(session, "coco")
        done = run_repo.latest_trained_run(session, project.id)
        history = done.metrics["history"] if done is not None else None
    if history is None:
        with timed(times, "train_s"):
            trained = training.train(studio, "coco", TrainOptions(
                backbone="mobilenet_v2", epochs=args.epochs, image_size=args.image_size, device="cpu",
                seed=args.seed, model_overrides={"feature_channels": args.feature_channels}),
                progress=log_epochs)
        history = trained.metrics["history"]
    with timed(times, "predict_s"):
        published = publishing.predict(studio, "coco", device="cpu")
    scores = evaluation.evaluate(studio, "coco", gt_masks=root / "masks")
    studio.close()
    return {
        "miou": scores["miou"], "images": scores["images"], "pixel_accuracy": scores["pixel_accuracy"],
        "final_losses": history[-1], "epoch_seconds": [round(h["seconds"]) for h in history],
        "predict_img_per_s": round(published.images / times["predict_s"], 2), "times": times,
        "per_class_iou": scores["per_class_iou"],
    }


def run_cam(args: argparse.Namespace) -> dict:
    """The CAM-only baseline: same backbone, epochs and crop size; best background threshold."""
    root = DATA / "coco128"
    times: dict[str, float] = {}

    # The same class list the importer builds: coco128's file already starts with "background".
    lines = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    classes = lines if lines[0] == "background" else ["background", *lines]
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    with open(root / "tags.csv", newline="") as f:
        for row in csv.DictReader(f):
            tags = np.zeros(len(classes), np.float32)
            tags[[index[t] for t in row["tags"].split(";") if t]] = 1
            path = root / "images" / row["image"]
            samples.append(Sample(row["image"], image=lambda p=path: read_rgb(p), tags=tags))
    with timed(times, "cam_train_s"):
        model, cam_rate = train_cam(samples, len(classes), epochs=args.epochs, image_size=args.image_size,
                                    seed=args.seed)
    meters = {t: SegmentationMeter(len(classes)) for t in THRESHOLDS}
    for s in samples:
        with PILImage.open(root / "masks" / (Path(s.name).stem + ".png")) as im:
            gold = np.array(im, dtype=np.uint8)
        cams = normalised_cams(model, s.image(), s.tags, args.image_size)
        for t, meter in meters.items():
            meter.update(cam_label_map(cams, t), gold)
    by_threshold = {t: m.scores()["miou"] for t, m in meters.items()}
    best = max(by_threshold, key=by_threshold.get)
    return {"miou": by_threshold[best], "best_threshold": best, "miou_by_threshold": by_threshold,
            "train_img_per_s": round(cam_rate, 2), "times": times}


if __name__ == "__main__":
    main()
