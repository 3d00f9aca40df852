"""CPU profile of our default CPU model: one training step, one `predict`, and predict throughput.

1. `torch.profiler` of one training step (`forward_train` + `compute_losses(use_pseudo_labels=True,
   feature_resolution=True)` + `backward`, batch 8 at 224 px) and of one `Predictor.predict` of an
   MSRC photo (320x213, `InferenceConfig(pamr_scale=0.5)`, flip on and off), each after one
   unprofiled warm-up; prints the top ops by self CPU time.
2. Throughput of the bare torchvision MobileNetV2 classifier (`models.mobilenet_v2()`, eval,
   `no_grad`) on the same photo at 320 px against our whole `Predictor.predict` path at 320 px
   (flip on/off x PAMR at 0.5 and 1.0 scale), at 1 and 2 torch threads, interleaved round after
   round; prints medians and the throughput ratio ours / bare (target >= 1/3).

Random weights everywhere (`pretrained=False`); the predictor keeps three known classes (the
typical MSRC image; PAMR's cost grows with the kept classes).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.profile_cpu --rounds 5
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.profiler import ProfilerActivity, profile
from torchvision import models

from benchmarks.common import DATA
from slrnet.config import InferenceConfig, ModelConfig
from slrnet.data import normalize
from slrnet.inference import Predictor
from slrnet.model import build_model
from slrnet.modes import compute_losses

logger = logging.getLogger("profile_cpu")

CPU_MODEL = ModelConfig(num_classes=21, has_background=False, backbone="mobilenet_v2", pretrained=False,
                        feature_channels=64, separable_head=True, freeze_low=True)
KNOWN_CLASSES = (1, 4, 7)


def photo(path: Path | None) -> np.ndarray:
    if path is None:
        path = sorted((DATA / "msrc" / "train" / "images").glob("*.jpg"))[0]
    return np.asarray(Image.open(path).convert("RGB"))


def train_step(model: torch.nn.Module, batch_size: int, size: int) -> Callable[[], None]:
    images = torch.randn(batch_size, 3, size, size)
    tags = torch.zeros(batch_size, CPU_MODEL.num_classes)
    tags[:, :2] = 1.0
    batch = {"image": images, "tags": tags, "has_tags": torch.ones(batch_size, dtype=torch.bool),
             "mask": torch.full((batch_size, size, size), 255, dtype=torch.int64),
             "has_mask": torch.zeros(batch_size, dtype=torch.bool)}

    def step() -> None:
        losses = compute_losses(CPU_MODEL, model.forward_train(images), batch, use_pseudo_labels=True,
                                feature_resolution=True)
        losses["total"].backward()
        model.zero_grad(set_to_none=True)

    return step


def predictor(model: torch.nn.Module, **config: object) -> Predictor:
    names = [f"class{i}" for i in range(CPU_MODEL.num_classes)]
    return Predictor(model, CPU_MODEL, names, config=InferenceConfig(**config))


def profiled(name: str, fn: Callable[[], object], rows: int) -> None:
    fn()  # warm-up, not profiled
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
    logger.info("\n### %s (%.2f s wall under the profiler)\n", name, wall)
    logger.info("%s", prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def per_call(fn: Callable[[], object], min_s: float = 0.3) -> float:
    """Seconds per call, calling `fn` at least once and until `min_s` has passed."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="default: the first MSRC train photo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=224)
    parser.add_argument("--predict-size", type=int, default=320)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    image = photo(args.image)
    known = np.zeros(CPU_MODEL.num_classes, dtype=np.int64)
    known[list(KNOWN_CLASSES)] = 1
    logger.info("torch %s, %s (%s), OMP_NUM_THREADS=%s, photo %dx%d, load %s", torch.__version__,
                platform.machine(), torch.backends.cpu.get_cpu_capability(),
                os.environ.get("OMP_NUM_THREADS"), image.shape[1], image.shape[0], os.getloadavg())

    model = build_model(CPU_MODEL)
    if not args.skip_profile:
        model.train()
        profiled(f"training step, batch {args.batch} at {args.train_size} px, 1 thread",
                 train_step(model, args.batch, args.train_size), args.rows)
        for flip in (True, False):
            p = predictor(model, pamr_scale=0.5, flip=flip)
            profiled(f"predict {image.shape[1]}x{image.shape[0]}, pamr_scale 0.5, flip {flip}, 1 thread",
                     lambda p=p: p.predict(image, known_tags=known), args.rows)

    bare = models.mobilenet_v2().eval()  # random weights, ImageNet head
    base = normalize(torch.from_numpy(image.copy()).permute(2, 0, 1)[None])
    factor = args.predict_size / max(base.shape[-2:])
    bare_input = torch.nn.functional.interpolate(
        base, size=(round(base.shape[-2] * factor), round(base.shape[-1] * factor)), mode="bilinear")

    def run_bare() -> None:
        with torch.no_grad():
            bare(bare_input)

    variants: dict[str, Callable[[], object]] = {"bare mobilenet_v2": run_bare}
    for flip in (False, True):
        for scale in (0.5, 1.0):
            p = predictor(model, size=args.predict_size, flip=flip, pamr_scale=scale)
            variants[f"predict flip {'on' if flip else 'off'}, pamr_scale {scale}"] = (
                lambda p=p: p.predict(image, known_tags=known))
    times: dict[tuple[int, str], list[float]] = {(t, n): [] for t in args.threads for n in variants}
    for threads in args.threads:  # warm-up
        torch.set_num_threads(threads)
        for fn in variants.values():
            fn()
    for _ in range(args.rounds):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, fn in variants.items():
                times[(threads, name)].append(per_call(fn))
    logger.info("\n### throughput at %d px (bare input %dx%d), %d interleaved rounds, load after %s\n",
                args.predict_size, bare_input.shape[-1], bare_input.shape[-2], args.rounds, os.getloadavg())
    logger.info("| threads | path | median s / image | images / s | ours / bare throughput |")
    logger.info("|---|---|---|---|---|")
    for threads in args.threads:
        bare_s = statistics.median(times[(threads, "bare mobilenet_v2")])
        for name in variants:
            s = statistics.median(times[(threads, name)])
            logger.info("| %d | %s | %.3f | %.1f | %.2f |", threads, name, s, 1 / s, bare_s / s)


if __name__ == "__main__":
    main()
