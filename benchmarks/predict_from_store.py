"""Predict reading the feature store against predict running the backbone: same model, same
photos, time and mIoU side by side (and the learnt presence rule's reading, without tags).

    OMP_NUM_THREADS=1 SLRNET_TORCH_THREADS=1 .venv/bin/python -m benchmarks.predict_from_store [--photos 100]

A light head is trained on the first ``--photos`` MSRC-21 train photos (sorted by name, tagged) at
the CPU default for ``--minutes``; then every photo is predicted twice by the same
`slrnet.inference.Predictor` as publishing.predict reads it: from the image alone, and with its
stored "s1"/"s1f" levels. Scored against the gold masks with the tags known and without them.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from benchmarks.common import DATA, write_result
from services import training
from services.context import Studio
from services.import_options import ImportOptions
from services.importing import import_dataset
from services.publishing import CPU_INFERENCE
from services.train_options import TrainOptions
from slrnet.feature_spec import FeatureSpec
from slrnet.inference import Predictor
from slrnet.metrics import SegmentationMeter
from storage import images as image_repo
from storage.projects import get_project_by_name, list_classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--name", default="predict_from_store")
    args = parser.parse_args()
    msrc = DATA / "msrc"
    with open(msrc / "train" / "tags.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image"])[: args.photos]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "photos"
        folder.mkdir()
        for row in rows:
            (folder / row["image"]).symlink_to(msrc / "train" / "images" / row["image"])
        tags = root / "tags.csv"
        with open(tags, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "tags"])
            writer.writeheader()
            writer.writerows({"image": r["image"], "tags": r["tags"]} for r in rows)
        with Studio.open(root / "data") as studio:
            import_dataset(
                studio,
                folder,
                ImportOptions(
                    classes_file=str(msrc / "classes.txt"), tags_csv=str(tags), has_background=False
                ),
                project="p",
            )
            result = training.train(studio, "p", TrainOptions(device="cpu", budget_s=args.minutes * 60))
            predictor = Predictor.from_checkpoint(
                studio.data_dir / result.checkpoint_path, config=CPU_INFERENCE
            )
            spec_key = FeatureSpec.of_model(predictor.model_config).key
            with studio.Session() as session:
                project_id = get_project_by_name(session, "p").id
                images = list(image_repo.iter_images_with_labels(session, project_id))
                index_of = {c.id: c.index for c in list_classes(session, project_id)}
            k = predictor.num_classes
            meters = {
                (how, tagged): SegmentationMeter(k) for how in ("image", "store") for tagged in (True, False)
            }
            seconds = {"image": 0.0, "store": 0.0}
            for image in images:
                with PILImage.open(msrc / "train" / "masks" / f"{Path(image.name).stem}.png") as im:
                    gold = np.array(im, dtype=np.uint8)
                known = np.zeros(k, np.float32)
                known[[index_of[c] for c in image.tag_class_ids]] = 1.0
                rgb, size = studio.images.read_rgb_reduced(image.path, 2 * predictor.size)
                for how in ("image", "store"):
                    started = time.perf_counter()
                    stored = studio.features.get(image.sha256, spec_key) if how == "store" else None
                    reading = predictor.read(rgb, stored)
                    seconds[how] += time.perf_counter() - started
                    for tagged in (True, False):
                        keep = predictor._filter(predictor.present(reading)[0], known if tagged else None)
                        _, labels, _ = predictor.label(reading, keep, size or rgb.shape[:2])
                        meters[how, tagged].update(labels, gold)
    out = {
        "photos": len(images),
        "train_minutes": args.minutes,
        "epochs": result.epochs,
        "read_s_per_image": {how: round(s / len(images), 4) for how, s in seconds.items()},
        "miou": {
            f"{how}, {'tags known' if tagged else 'no tags'}": round(m.scores()["miou"], 4)
            for (how, tagged), m in meters.items()
        },
    }
    write_result(args.name, out)


if __name__ == "__main__":
    main()
