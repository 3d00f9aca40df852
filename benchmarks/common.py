"""Helpers shared by the benchmark scripts: an offline TORCH_HOME, timing, result files."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLRNET_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
RESULTS_DIR = REPO / "benchmarks" / "results"


def seed_torch_home(root: Path) -> None:
    """Point TORCH_HOME at ``root`` holding ../shared/weights' MobileNetV2 (no download ever)."""
    src = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
    target = root / "hub" / "checkpoints"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, target / src.name)
    os.environ["TORCH_HOME"] = str(root)


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - start, 1)


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def log_epochs(fraction: float, message: str, metrics: dict[str, Any]) -> None:
    """A service progress callback printing one line per finished epoch."""
    if metrics.get("step") == metrics.get("steps"):
        print(f"{message} ({metrics.get('images_per_s', 0):.2f} img/s)", flush=True)
