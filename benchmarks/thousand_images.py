"""1,000 tagged photos through the CLI at its defaults: the peak resident memory of each step
(import, features, train, predict), the feature store's size per image and in all, and the times.

    OMP_NUM_THREADS=1 SLRNET_TORCH_THREADS=1 .venv/bin/python -m benchmarks.thousand_images [--images 1000]

The photos are MSRC-21's 335 tagged train photos and variants of them made here (mirrored, and a
centre crop of 80 % of each side, mirrored or not: new pictures with new content hashes and the same
tags), written to a temporary folder; each step runs as its own ``launch.py`` process under
``/usr/bin/time -v`` ("Maximum resident set size"). Issue 18's target: training peak RSS <= 3 GiB.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

from benchmarks.common import DATA, REPO, seed_torch_home, write_result
from storage.feature_store import FEATURES_DIR

VARIANTS = ("orig", "mirror", "crop", "crop-mirror")


def make_photos(target: Path, count: int) -> tuple[Path, Path, Path]:
    """Write ``count`` photos (MSRC train + variants) and their tags CSV; returns (folder, tags
    CSV, classes file)."""
    msrc = DATA / "msrc"
    with open(msrc / "train" / "tags.csv", newline="") as f:
        rows = [(r["image"], r["tags"]) for r in csv.DictReader(f)]
    images = target / "images"
    images.mkdir(parents=True)
    written: list[tuple[str, str]] = []
    for variant in VARIANTS:
        for name, tags in rows:
            if len(written) == count:
                break
            with Image.open(msrc / "train" / "images" / name) as im:
                picture = im.convert("RGB")
            if variant.startswith("crop"):
                w, h = picture.size
                picture = picture.crop((w // 10, h // 10, w - w // 10, h - h // 10))
            if variant.endswith("mirror"):
                picture = ImageOps.mirror(picture)
            out = f"{Path(name).stem}-{variant}.jpg"
            picture.save(images / out, quality=92)
            written.append((out, tags))
    tags_csv = target / "tags.csv"
    with open(tags_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "tags"])
        writer.writerows(written)
    return images, tags_csv, msrc / "classes.txt"


def run_step(name: str, args: list[str], data: Path) -> dict[str, float | str]:
    """One ``launch.py`` verb under /usr/bin/time -v: wall seconds, peak RSS (MiB), last line."""
    command = ["/usr/bin/time", "-v", sys.executable, str(REPO / "launch.py"), *args, "--data", str(data)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    step = {
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(int(peak[1]) / 1024, 1) if peak else -1.0,
        "last_line": lines[-1] if lines else "",
    }
    print(name, step, flush=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--name", default="thousand_images")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seed_torch_home(root / "torch")
        images, tags_csv, classes = make_photos(root / "photos", args.images)
        data = root / "data"
        project = ["--project", "thousand"]
        steps = {
            "import": run_step(
                "import",
                [
                    "import",
                    str(images),
                    *project,
                    "--classes",
                    str(classes),
                    "--no-background",
                    "--tags",
                    str(tags_csv),
                ],
                data,
            ),
            "features": run_step("features", ["features", *project], data),
            "train": run_step("train", ["train", *project], data),
            "predict": run_step("predict", ["predict", *project], data),
        }
        steps["store"] = run_step("store", ["features", *project, "--status"], data)
        store = sum(p.stat().st_size for p in (data / FEATURES_DIR).rglob("*") if p.is_file())
        count = len(list(images.iterdir()))
    result = {
        "images": count,
        "steps": steps,
        "feature_store_mib": round(store / 2**20, 1),
        "feature_store_kib_per_image": round(store / 2**10 / count, 1),
        "threads": os.environ.get("SLRNET_TORCH_THREADS", "default"),
    }
    write_result(args.name, result)


if __name__ == "__main__":
    main()
