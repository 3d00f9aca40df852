"""The CLI subcommands of launch.py: thin wrappers that parse nothing and call the services.

Each function takes the argparse namespace built in launch.py and returns the exit code.
"""

from __future__ import annotations

import argparse
import logging

from jobs.errors import UserError

logger = logging.getLogger(__name__)


def serve(args: argparse.Namespace) -> int:
    """``serve``: the web app, with the job consumers in-process (threads; ``--no-worker``: only
    imports/exports run here, training waits for a ``launch.py worker``)."""
    import importlib
    import importlib.util
    import os

    from jobs.consumers import start_embedded_consumer
    from jobs.context import Studio

    studio = Studio.open(args.data)
    consumers = start_embedded_consumer(studio, compute=not args.no_worker)
    try:
        if importlib.util.find_spec("app.ui") is None:
            raise UserError("the web UI (app.ui) is not built yet")
        ui = importlib.import_module("app.ui")
        ui.launch(studio, host=args.host, port=args.port, auth=args.auth or os.environ.get("SLRNET_AUTH"))
    finally:
        consumers.stop()
        studio.close()
    return 0


def import_(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jobs.context import Studio
    from jobs.importing import import_dataset

    studio = Studio.open(args.data)
    try:
        with tqdm(total=1.0, unit="", bar_format="{l_bar}{bar}| {elapsed}", leave=False) as bar:

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


def train(args: argparse.Namespace) -> int:
    raise UserError("train: not built yet")


def predict(args: argparse.Namespace) -> int:
    raise UserError("predict: not built yet")


def evaluate(args: argparse.Namespace) -> int:
    raise UserError("evaluate: not built yet")


def export(args: argparse.Namespace) -> int:
    """``export OUT [--format coco|voc] [--source best|human|model] [--palette]``: one summary line."""
    from tqdm import tqdm

    from jobs.context import Studio
    from jobs.exporting import export_project

    studio = Studio.open(args.data)
    try:
        with tqdm(total=1.0, unit="", bar_format="{l_bar}{bar}", leave=False, disable=None) as bar:

            def progress(fraction: float, message: str, metrics: dict) -> None:
                bar.set_description(message, refresh=False)
                bar.update(fraction - bar.n)

            report = export_project(
                studio,
                args.project,
                args.out,
                fmt=args.format,
                source=args.source,
                palette=args.palette,
                progress=progress,
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
    from jobs.context import Studio

    studio = Studio.open(args.data)
    try:
        left = run_worker(studio, workers=args.workers)
    finally:
        studio.close()
    if left:
        logger.warning("jobs %s were interrupted by the shutdown; resume them to continue", left)
    return 0
