"""Peak memory of `launch.py predict` (services.publishing.predict) against photo size and class
count: one JPEG photo of 1..48 MP in a project of K classes, predicted by the CPU model (random
weights: memory does not depend on them) in a fresh process; its peak RSS (ru_maxrss) is what the
photo costs on top of the process's fixed part (Python, torch, the model), shown beside it.

    .venv/bin/python -m benchmarks.predict_memory [--megapixels 1 3 12 24 48] [--classes 21 81]
        [--code-root ../other-checkout]   # the same measurement with another checkout's code

Each (size, classes) runs twice in separate processes: "setup" (import the photo, write the
checkpoint and a trained run) and "predict" (only the service call, measured).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, write_result

SETUP = """
import sys
from dataclasses import asdict
from pathlib import Path
import numpy as np
from PIL import Image as PILImage
from services.context import Studio
from services.import_options import ImportOptions
from services.importing import import_dataset
from services.lookups import resolve_project
from services.train_plan import CPU_MODEL
from slrnet.config import ModelConfig
from slrnet.model import build_model
from slrnet.train import CHECKPOINT_FORMAT, save_checkpoint
from storage import runs as run_repo

root, megapixels, k = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
width = round((megapixels * 1e6 * 4 / 3) ** 0.5); height = round(width * 3 / 4)
rng = np.random.default_rng(0)
small = rng.integers(0, 255, (height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
(root / "photos").mkdir(parents=True)
photo = PILImage.fromarray(small).resize((width, height), PILImage.BILINEAR)
photo.save(root / "photos" / "photo.jpg", quality=90)
(root / "classes.txt").write_text("".join(f"class{i}\\n" for i in range(k)))
studio = Studio.open(root / "data")
options = ImportOptions(classes_file=str(root / "classes.txt"), has_background=False)
import_dataset(studio, root / "photos", options, project="p")
cfg = ModelConfig(num_classes=k, mode="wsss", has_background=False, pretrained=False, freeze_backbone=True,
                  **CPU_MODEL)
save_checkpoint(root / "data" / "checkpoints" / "run.pt", {
    "format": CHECKPOINT_FORMAT, "model": build_model(cfg).state_dict(), "model_config": asdict(cfg),
    "train_config": {"image_size": 160}, "class_names": [f"class{i}" for i in range(k)]})
with studio.Session.begin() as session:
    run = run_repo.create_run(session, resolve_project(session, "p").id, mode="wsss", backbone="mobilenet_v2",
                              config={})
    run.checkpoint_path = "checkpoints/run.pt"
    run_repo.mark_trained(session, run)
studio.close()
print(width, height)
"""

PREDICT = """
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from services.context import Studio
from services import publishing
studio = Studio.open(Path(sys.argv[1]) / "data")
fixed = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
publishing.predict(studio, "p", device="cpu")
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": round(peak / 1024), "before_predict_mb": round(fixed / 1024),
                  "predict_s": round(seconds, 1)}))
"""


def run(code: str, args: list[str], code_root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=code_root, env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 3, 12, 24, 48])
    parser.add_argument("--classes", type=int, nargs="+", default=[21, 81])
    parser.add_argument("--code-root", type=Path, default=REPO)
    parser.add_argument("--name", default="predict_memory")
    args = parser.parse_args()
    rows = []
    for k in args.classes:
        for mp in args.megapixels:
            with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
                size = run(SETUP, [tmp, str(mp), str(k)], REPO)
                measured = json.loads(run(PREDICT, [tmp], args.code_root.resolve()))
            row = {"classes": k, "megapixels": mp, "photo": size, **measured}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_result(args.name, {"code_root": str(args.code_root), "rows": rows})


if __name__ == "__main__":
    main()
