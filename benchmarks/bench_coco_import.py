"""Peak memory of `launch.py import --coco` against the number of annotations on one image.

    .venv/bin/python benchmarks/bench_coco_import.py [--counts 1000 10000 20000 100000] [--size 640x480]

For each count, writes one photo and a COCO instances file of that many tiny (2.5 px) square
polygons on it (the shape of the file that got the web server OOM-killed: 20,000 polygons on a
640x480 image, 1.77 MB), runs ``launch.py import`` as a fresh process and reports its peak RSS
(``ru_maxrss`` of the child) and wall time, next to the peak RSS of a process that only imports
the import code and opens the database (the floor).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import write_result  # noqa: E402

FLOOR = ("import sys; sys.path.insert(0, '.'); import services.importing; "
         "from services.context import Studio; Studio.open(sys.argv[1]).close()")


def coco_file(path: Path, count: int, width: int, height: int, seed: int = 0) -> int:
    """Write a COCO instances JSON of ``count`` tiny squares on one image; returns its size."""
    rng = np.random.default_rng(seed)
    xs, ys = rng.uniform(0, width - 3, count), rng.uniform(0, height - 3, count)
    annotations = [
        {"id": k + 1, "image_id": 1, "category_id": 1 + k % 3, "iscrowd": 0,
         "segmentation": [[round(x, 1), round(y, 1), round(x + 2.5, 1), round(y, 1),
                           round(x + 2.5, 1), round(y + 2.5, 1), round(x, 1), round(y + 2.5, 1)]]}
        for k, (x, y) in enumerate(zip(xs, ys, strict=True))
    ]
    data = {"images": [{"id": 1, "file_name": "photo.jpg", "width": width, "height": height}],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]}
    path.write_text(json.dumps(data, separators=(",", ":")))
    return path.stat().st_size


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Run ``args`` as a child; its peak RSS in MB (ru_maxrss of that child alone) and seconds."""
    code = ("import resource, runpy, sys; sys.argv = sys.argv[1:]; "
            "ret = 0\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    ret = e.code or 0\n"
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(ret)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed: {done.stderr[-2000:]}")
    rss_kb = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("MAXRSS")))
    return round(rss_kb / 1024, 1), round(seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000, 20000, 100000])
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-coco-") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / "photo.jpg", quality=90)
        floor_args = ["-c", FLOOR, str(root / "floor")]
        measure = ("import resource, subprocess, sys; subprocess.run([sys.executable, *sys.argv[1:]], "
                   "check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        floor = subprocess.run([sys.executable, "-c", measure, *floor_args], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True)
        floor_mb = round(int(floor.stdout.split()[-1]) / 1024, 1)
        for count in args.counts:
            json_path = root / f"coco-{count}.json"
            size = coco_file(json_path, count, width, height)
            data = root / f"data-{count}"
            rss, seconds = peak_rss_mb(["launch.py", "import", str(root / "images"), "--data", str(data),
                                        "--project", "p", "--coco", str(json_path)])
            rows.append({"annotations": count, "json_mb": round(size / 2**20, 2), "peak_rss_mb": rss,
                         "seconds": seconds})
            print(rows[-1], flush=True)
    write_result("coco_import_memory", {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "image": f"{width}x{height}",
        "floor_rss_mb": floor_mb, "runs": rows, "self_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })


if __name__ == "__main__":
    main()
