"""The CLI subcommands of launch.py: thin wrappers that parse nothing and call the services.

Each function takes the argparse namespace built in launch.py and returns the exit code.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def import_(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from services.context import Studio
    from services.importing import import_dataset

    studio = Studio.open(args.data)
    try:
        with tqdm(total=1.0, bar_format="{l_bar}{bar}| {elapsed}", leave=False, delay=0.5) as bar:

            def progress(fraction: float, message: str, metrics: dict) -> None:
                bar.set_description_str(message, refresh=False)
                bar.update(fraction - bar.n)

            report = import_dataset(
                studio,
                args.path,
                project=args.project,
                classes_file=args.classes,
                has_background=not args.no_background,
                tags_csv=args.tags,
                masks_dir=args.masks,
                coco_json=args.coco,
                max_pixels=args.max_pixels,
                progress=progress,
            )
    finally:
        studio.close()
    print(report.summary())
    return 0


def _tqdm_progress(bar: Any) -> Callable[[float, str, dict], None]:
    """A service progress callback drawing on a tqdm bar of total 1.0."""

    def progress(fraction: float, message: str, metrics: dict) -> None:
        eta = metrics.get("eta_s")
        bar.set_description(message + (f", ETA {eta / 60:.1f} min" if eta else ""), refresh=False)
        bar.update(fraction - bar.n)

    return progress


def train(args: argparse.Namespace) -> int:
    """``train [--mode M] [--backbone B] [--epochs N] [--image-size S] [--device D] [--seed N]``.

    Under ``torchrun --nproc_per_node N launch.py train ...`` every rank trains (DDP); rank 0 prints.
    """
    import os

    from tqdm import tqdm

    from services.context import Studio
    from services.training import train as train_service

    main_rank = int(os.environ.get("RANK", "0")) == 0
    studio = Studio.open(args.data)
    try:
        with tqdm(total=1.0, unit="", bar_format="{l_bar}{bar}| {elapsed}", leave=False,
                  disable=None if main_rank else True) as bar:
            result = train_service(
                studio, args.project, mode=args.mode, backbone=args.backbone, epochs=args.epochs,
                image_size=args.image_size, device=args.device, seed=args.seed, resume=not args.no_resume,
                progress=_tqdm_progress(bar),
            )
    finally:
        studio.close()
    if main_rank:
        resumed = f", resumed after epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else ""
        print(f"mode {result.mode}: {result.reason}")
        print(f"trained model version {result.version} (run {result.run_id}, {result.epochs} epochs"
              f"{resumed}); run `predict` to publish its pseudo-labels")
    return 0


def predict(args: argparse.Namespace) -> int:
    """``predict [--device D]``: pseudo-labels of every image with the newest trained model, then
    that model becomes current."""
    from tqdm import tqdm

    from services.context import Studio
    from services.training import predict as predict_service

    studio = Studio.open(args.data)
    try:
        with tqdm(total=1.0, unit="", bar_format="{l_bar}{bar}| {elapsed}", leave=False, disable=None) as bar:
            result = predict_service(studio, args.project, device=args.device, progress=_tqdm_progress(bar))
    finally:
        studio.close()
    print(f"model version {result.version} published: pseudo-labels for {result.images} images "
          f"(mean confidence {result.mean_score:.2f})")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``evaluate --gt-masks DIR``: JSON with miou, per_class_iou, pixel_accuracy, images."""
    import json

    from services.context import Studio
    from services.training import evaluate as evaluate_service

    studio = Studio.open(args.data)
    try:
        scores = evaluate_service(studio, args.project, gt_masks=args.gt_masks)
    finally:
        studio.close()
    print(json.dumps(scores, indent=2))
    return 0


def export(args: argparse.Namespace) -> int:
    """``export OUT [--format coco|voc] [--source best|human|model] [--palette]``: one summary line."""
    from tqdm import tqdm

    from services.context import Studio
    from services.exporting import export_project

    studio = Studio.open(args.data)
    try:
        with tqdm(total=1.0, unit="", bar_format="{l_bar}{bar}| {elapsed}", leave=False, disable=None) as bar:
            report = export_project(
                studio,
                args.project,
                args.out,
                fmt=args.format,
                source=args.source,
                palette=args.palette,
                progress=_tqdm_progress(bar),
            )
    finally:
        studio.close()
    print(report.summary())
    return 0


def worker(args: argparse.Namespace) -> int:
    """``worker [--data DIR] [--workers N]``: consume training/prediction jobs until Ctrl-C / SIGTERM.

    Run one per GPU (``CUDA_VISIBLE_DEVICES=k``); see the README for several machines.
    """
    from jobs.consumers import run_worker
    from services.context import Studio

    studio = Studio.open(args.data)
    try:
        left = run_worker(studio, workers=args.workers)
    finally:
        studio.close()
    if left:
        logger.warning("jobs %s were interrupted by the shutdown; resume them to continue", left)
    return 0
