"""Peak memory of `launch.py export` on a large synthetic project.

    .venv/bin/python benchmarks/bench_export.py [--images 5000] [--size 640x480] [--workdir DIR]

Builds a project of N synthetic images (rows only: the export never reads image files) with
20 classes + background: 60 % get a human mask (with some ignore pixels), the rest a pseudo-label
of a published run, so ``--source best`` mixes both. Then runs each export (COCO, VOC) as a fresh
``launch.py export`` process and reports its peak RSS (``ru_maxrss`` of the child) and wall time,
next to the peak RSS of a process that only imports the export code and opens the database.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from services.context import Studio  # noqa: E402
from storage.images import add_image  # noqa: E402
from storage.labels import put_mask, put_pseudo_label  # noqa: E402
from storage.models import TrainingRun  # noqa: E402
from storage.projects import create_project, set_classes  # noqa: E402

logger = logging.getLogger("bench_export")
N_CLASSES = 20
BATCH = 250  # images per transaction while building


def synthetic_label_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Background with a few rectangles and ellipses of random classes and an ignore band."""
    lm = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(rng.integers(1, 6)):
        cls = int(rng.integers(1, N_CLASSES + 1))
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        ry, rx = rng.integers(height // 16, height // 3), rng.integers(width // 16, width // 3)
        if rng.random() < 0.5:
            lm[max(cy - ry, 0) : cy + ry, max(cx - rx, 0) : cx + rx] = cls
        else:
            lm[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = cls
    if rng.random() < 0.3:
        lm[:, : width // 20] = 255
    return lm


def build_project(data_dir: Path, n_images: int, height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    studio = Studio.open(data_dir)
    confidence = np.tile(np.linspace(120, 255, width, dtype=np.uint8), (height, 1))
    try:
        with studio.Session.begin() as session:
            project = create_project(session, "bench")
            set_classes(session, project, ["background", *(f"class{k}" for k in range(1, N_CLASSES + 1))])
            run = TrainingRun(project_id=project.id, version=1, mode="ssss", backbone="synthetic",
                              status="published", published_at=datetime.now(UTC))
            session.add(run)
            session.flush()
            project_id, run_id = project.id, run.id
        for start in range(0, n_images, BATCH):
            with studio.Session.begin() as session:
                for i in range(start, min(start + BATCH, n_images)):
                    image = add_image(session, project_id, name=f"img{i:06d}.jpg", sha256=f"{i:064x}",
                                      path=f"images/{i}.jpg", width=width, height=height)
                    label_map = synthetic_label_map(rng, height, width)
                    if rng.random() < 0.6:
                        put_mask(session, image.id, label_map)
                    else:
                        put_pseudo_label(session, image.id, run_id, label_map, confidence)
            logger.info("built %d/%d images", min(start + BATCH, n_images), n_images)
    finally:
        studio.close()


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of a child process; raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t0  # Linux: ru_maxrss in KiB


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", default="640x480", help="WxH of the synthetic label maps")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the project and exports here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = (int(v) for v in args.size.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        data_dir, out_dir = work / "data", work / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        build_project(data_dir, args.images, height, width)
        build_s = time.perf_counter() - t0
        logger.info("built %d images of %dx%d in %.0f s", args.images, width, height, build_s)

        py = sys.executable
        baseline = [py, "-c", "import launch, services.exporting; from services.context import Studio; "
                    f"Studio.open({str(data_dir)!r}).close()"]
        export = [py, "launch.py", "export", "--data", str(data_dir), "--project", "bench"]
        rows = [
            ("imports + open database (baseline)", baseline),
            ("export --format coco --source best", [*export, str(out_dir / "coco.json")]),
            ("export --format voc --source best", [*export, str(out_dir / "voc"), "--format", "voc"]),
        ]
        print(f"\n{args.images} images {width}x{height}, {N_CLASSES} classes + background")
        print(f"{'process':<40} {'peak RSS MiB':>12} {'wall s':>8}")
        for label, cmd in rows:
            rss, wall = peak_rss_mib(cmd)
            print(f"{label:<40} {rss:>12.0f} {wall:>8.1f}")
        coco_mib = (out_dir / "coco.json").stat().st_size / 2**20
        print(f"coco.json {coco_mib:.1f} MiB, coco_results.json "
              f"{(out_dir / 'coco_results.json').stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
