"""Model size and CPU training-step time per backbone.

One step = `forward_train` + `compute_losses` (wsss, pseudo-labels on, so PAMR runs) + backward,
at a square crop, random weights (`pretrained=False`: the figures do not depend on the weights).
Prints a Markdown table; the median of `--repeats` timed steps after one warm-up step.

    .venv/bin/python -m benchmarks.bench_model --size 320 --batch 1 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time

import torch

from slrnet.config import ModelConfig
from slrnet.model import build_model
from slrnet.modes import compute_losses

logger = logging.getLogger("bench_model")


def _batch(images: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    b, _, h, w = images.shape
    tags = torch.zeros(b, num_classes)
    tags[:, :3] = 1.0
    return {"image": images, "tags": tags, "has_tags": torch.ones(b, dtype=torch.bool),
            "mask": torch.full((b, h, w), 255, dtype=torch.int64),
            "has_mask": torch.zeros(b, dtype=torch.bool)}


def measure(backbone: str, size: int, batch: int, num_classes: int, output_stride: int,
            repeats: int) -> dict[str, float]:
    """Parameter counts (millions) and median seconds of a training step and of inference."""
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=num_classes, backbone=backbone, pretrained=False,
                      output_stride=output_stride)
    model = build_model(cfg).train()
    images = torch.randn(batch, 3, size, size)
    data = _batch(images, num_classes)
    steps = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        losses = compute_losses(cfg, model.forward_train(images), data, use_pseudo_labels=True)
        losses["total"].backward()
        model.zero_grad(set_to_none=True)
        if i:
            steps.append(time.perf_counter() - start)
    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            model(images)
            if i:
                infer.append(time.perf_counter() - start)
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "backbone_m": sum(p.numel() for p in model.backbone.parameters()) / 1e6,
        "step_s": statistics.median(steps),
        "infer_s": statistics.median(infer),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+",
                        default=["tiny", "mobilenet_v2", "resnet50", "resnet101", "wideresnet38"])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a shared host 2 OpenMP threads mostly wait on each other)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("torch %s, %d threads, %s; %d px, batch %d, K=%d, output stride %d",
                torch.__version__, torch.get_num_threads(), platform.processor() or platform.machine(),
                args.size, args.batch, args.classes, args.output_stride)
    logger.info("| backbone | params (M) | trainable (M) | backbone (M) | train step (s) | inference (s) |")
    logger.info("|---|---|---|---|---|---|")
    for name in args.backbones:
        r = measure(name, args.size, args.batch, args.classes, args.output_stride, args.repeats)
        logger.info("| %s | %.2f | %.2f | %.2f | %.2f | %.2f |", name, r["params_m"], r["trainable_m"],
                    r["backbone_m"], r["step_s"], r["infer_s"])


if __name__ == "__main__":
    main()
