"""Training-step time of our SLRNet side by side with the official SLRNet code, and our CPU levers.

The official model (DesertsP/SLRNet, `models/slrnet.py` `Net` on its WideResNet-38 `resnet38d`
backbone, output stride 8) is imported from a checkout the user names with `--official`; nothing
of it is copied here. One official step is what its `tools/train_voc_wss.py` does per batch after
the warm-up epochs, without the data loader and the optimizer: `model(img, img_raw, labels)` (both
views, PAMR pseudo-labels, its loss terms), `loss = cls + 4 reg + 4 code_reg + seg`, `backward`.
Its script turns autograd anomaly detection on for the whole run, so it is timed both with it on
(as shipped) and off.

One step of ours = `forward_train` + `compute_losses(use_pseudo_labels=True)` + `backward`, at the
same crop and batch, random weights on both sides (`pretrained=False`: the figures do not depend
on them). Our speed levers are timed on the same step: bf16 autocast, channels_last, both.

Variants run interleaved (one step each, round after round) so load from other work on the host
hits them alike; the report gives medians and ratios. A variant whose warm-up step is more than
`--max-slowdown` times our fp32 warm-up is timed on that one step only (bf16 on a CPU without
native bf16 support would otherwise take the run's whole budget).

    .venv/bin/python -m benchmarks.bench_official --official /path/to/SLRNet --size 256 --steps 3 \
        --threads 1 --backbone wideresnet38 --output-stride 8
    # our levers on the CPU default model (MobileNetV2, batch 8 at 224 px), no official rows:
    .venv/bin/python -m benchmarks.bench_official --cpu-default --size 224 --batch 8 --steps 3
"""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from slrnet.config import ModelConfig
from slrnet.data import IMAGENET_MEAN, IMAGENET_STD
from slrnet.model import build_model
from slrnet.modes import compute_losses

logger = logging.getLogger("bench_official")

# Loss coefficients of the official experiments/slrnet_voc_wss_v100x2.yaml (cls, reg, code reg, seg).
OFFICIAL_LOSS_COEFF = (1.0, 4.0, 4.0, 1.0)
LEVERS = ("bf16", "channels_last", "bf16+channels_last")

Step = Callable[[], None]


def ours_config(args: argparse.Namespace) -> ModelConfig:
    if args.cpu_default:
        return ModelConfig(num_classes=21, has_background=False, backbone="mobilenet_v2", pretrained=False,
                           feature_channels=64, separable_head=True, freeze_low=True)
    return ModelConfig(backbone=args.backbone, output_stride=args.output_stride, pretrained=False,
                       feature_channels=256, num_classes=21, mode="wsss")


def ours_batch(cfg: ModelConfig, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two foreground classes tagged (plus background when the model has one)."""
    b, _, h, w = images.shape
    tags = torch.zeros(b, cfg.num_classes)
    tags[:, : 3 if cfg.has_background else 2] = 1.0
    return {"image": images, "tags": tags, "has_tags": torch.ones(b, dtype=torch.bool),
            "mask": torch.full((b, h, w), 255, dtype=torch.int64),
            "has_mask": torch.zeros(b, dtype=torch.bool)}


def ours_step(model: torch.nn.Module, cfg: ModelConfig, images: torch.Tensor, *, bf16: bool,
              feature_resolution: bool) -> Step:
    batch = ours_batch(cfg, images)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = compute_losses(cfg, model.forward_train(images), batch, use_pseudo_labels=True,
                                    feature_resolution=feature_resolution)
        losses["total"].backward()
        model.zero_grad(set_to_none=True)

    return step


def load_official(path: Path) -> type:
    """The official `Net` class from a checkout of DesertsP/SLRNet (its `models` package)."""
    if not (path / "models" / "slrnet.py").is_file():
        raise SystemExit(f"{path} is not a checkout of DesertsP/SLRNet (no models/slrnet.py)")
    sys.path.insert(0, str(path))
    try:
        return importlib.import_module("models.slrnet").Net
    finally:
        sys.path.remove(str(path))


def official_model(net_class: type) -> torch.nn.Module:
    """Its VOC configuration (experiments/slrnet_voc_wss_v100x2.yaml), random weights."""
    model = net_class(pretrained=None, num_classes=21, backbone="resnet38", scale_factor=0.5, pamr_iter=10,
                      cutoff_top=0.6, cutoff_low=0.2, temperature=1.0, pamr_dilations=[1, 2, 4, 8, 12, 24])
    model.train()  # its train() also freezes the backbone BN and stem + b2, as its trainer does per step
    return model


def official_step(model: torch.nn.Module, images: torch.Tensor, anomaly: bool) -> Step:
    labels = torch.zeros(images.shape[0], 20)
    labels[:, :2] = 1.0  # the same two foreground classes as ours
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    raw = images * std + mean  # its `denorm`
    c = OFFICIAL_LOSS_COEFF

    def step() -> None:
        with torch.autograd.set_detect_anomaly(anomaly):
            cls_loss, seg_loss, reg1, reg2, _, _ = model(images, raw, labels)
            loss = c[0] * cls_loss.mean() + c[1] * reg1.mean() + c[2] * reg2.mean() + c[3] * seg_loss.mean()
            loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def lever_model(base: torch.nn.Module, lever: str) -> torch.nn.Module:
    if "channels_last" not in lever:
        return base
    return copy.deepcopy(base).to(memory_format=torch.channels_last)


def lever_input(images: torch.Tensor, lever: str) -> torch.Tensor:
    if "channels_last" in lever:
        return images.contiguous(memory_format=torch.channels_last)
    return images


@torch.no_grad()
def logits_diff(base: torch.nn.Module, model: torch.nn.Module, images: torch.Tensor, lever: str) -> float:
    """Max |logit difference| of the main head vs fp32, eval mode (deterministic: no dropout/gate)."""
    base.eval()
    model.eval()
    try:
        ref = base(images)["seg_logits"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in lever):
            out = model(lever_input(images, lever))["seg_logits"]
        return float((out.float() - ref).abs().max())
    finally:
        base.train()
        model.train()


def timed(step: Step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="checkout of DesertsP/SLRNet (omit: our rows only)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", default="wideresnet38")
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--cpu-default", action="store_true",
                        help="our CPU default model (MobileNetV2, 64 channels, separable head, "
                             "pixel losses at feature resolution) instead of --backbone")
    parser.add_argument("--levers", nargs="*", default=list(LEVERS), choices=LEVERS)
    parser.add_argument("--max-slowdown", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.official and (args.cpu_default or args.backbone != "wideresnet38" or args.output_stride != 8):
        raise SystemExit("the official code has WideResNet-38 at output stride 8 only")

    torch.manual_seed(0)
    cfg = ours_config(args)
    images = torch.randn(args.batch, 3, args.size, args.size)
    ours = build_model(cfg).train()
    variants: dict[str, Step] = {
        "ours": ours_step(ours, cfg, images, bf16=False, feature_resolution=args.cpu_default)}
    diffs: dict[str, float] = {}
    for lever in args.levers:
        model = lever_model(ours, lever)
        variants[f"ours {lever}"] = ours_step(model, cfg, lever_input(images, lever), bf16="bf16" in lever,
                                              feature_resolution=args.cpu_default)
        diffs[f"ours {lever}"] = logits_diff(ours, model, images, lever)
        logger.info("ours %s: max abs logit diff vs fp32 %.2e", lever, diffs[f"ours {lever}"])
    if args.official:
        official = official_model(load_official(args.official.resolve()))
        variants["official, anomaly on"] = official_step(official, images, anomaly=True)
        variants["official, anomaly off"] = official_step(official, images, anomaly=False)

    model_name = ("CPU default (mobilenet_v2)" if args.cpu_default
                  else f"{args.backbone} OS {args.output_stride}")
    logger.info("torch %s, %d threads, %s (%s), OMP_NUM_THREADS=%s; model %s, %d px, batch %d; load %s",
                torch.__version__, torch.get_num_threads(), platform.machine(),
                torch.backends.cpu.get_cpu_capability(), os.environ.get("OMP_NUM_THREADS"),
                model_name, args.size, args.batch, os.getloadavg())
    times: dict[str, list[float]] = {name: [] for name in variants}
    warm = {name: timed(step) for name, step in variants.items()}
    logger.info("warm-up: %s", ", ".join(f"{n} {t:.2f} s" for n, t in warm.items()))
    once = {n for n, t in warm.items() if t > args.max_slowdown * warm["ours"]}
    for n in once:
        times[n].append(warm[n])
    for r in range(args.steps):
        for name, step in variants.items():
            if name not in once:
                times[name].append(timed(step))
        logger.info("round %d: %s", r + 1,
                    ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items() if n not in once))

    med = {n: statistics.median(t) for n, t in times.items()}
    logger.info("load after: %s", os.getloadavg())
    logger.info("| variant | median step (s) | steps timed | time / ours fp32 | max abs logit diff vs fp32 |")
    logger.info("|---|---|---|---|---|")
    for name, m in med.items():
        ratio = m / med["ours"]
        diff = f"{diffs[name]:.2e}" if name in diffs else "-"
        note = " (warm-up only)" if name in once else ""
        logger.info("| %s | %.2f | %d%s | %.2f× | %s |", name, m, len(times[name]), note, ratio, diff)
    if not args.official:
        return
    for key, target in (("official, anomaly on", 1.5), ("official, anomaly off", 1.3)):
        logger.info("%s / ours fp32 = %.2f (target >= %.1f)", key, med[key] / med["ours"], target)


if __name__ == "__main__":
    main()
