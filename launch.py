"""SLRNet Studio: the single entry point.

    python launch.py [serve] [--host 127.0.0.1] [--port 7860] [--data DIR]
    python launch.py import PATH [--project NAME] [--classes FILE] [--tags CSV] [--masks DIR] [--coco JSON]
    python launch.py train   [--project NAME] [--mode auto|wsss|ssss|ssss_tags] [--backbone NAME] ...
    python launch.py predict [--project NAME]
    python launch.py evaluate --gt-masks DIR [--project NAME]
    python launch.py export  OUT [--project NAME] [--format coco|voc] [--source best|human|model]
    python launch.py worker  [--data DIR]
    python launch.py label-studio-backend [--port 9090] [--project NAME] [--label-studio-url URL]
                                          [--api-key KEY] [--auth user:pass]
    python launch.py features [--project NAME] [--backbone B] [--image-size S] [--status]

Every subcommand calls the same services the UI calls. Exit code 0 on success; a one-line
``error: ...`` on stderr and exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from services.errors import UserError, environment_problem
from services.exporting import SOURCES
from services.formats.exporters import FORMATS
from services.train_options import MODE_CHOICES
from slrnet.config import BACKBONES, DEVICES

logger = logging.getLogger("launch")

SUBCOMMANDS = ("serve", "import", "train", "predict", "evaluate", "export", "worker", "label-studio-backend",
               "features")
DEFAULT_PROJECT = "default"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="data dir (default: $SLRNET_DATA or ./data)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("--feature-cache-mb", type=int, default=None, metavar="MB",
                   help="cap of the stored image features (default: $SLRNET_FEATURE_CACHE_MB or 4096)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch.py", description="SLRNet Studio")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the web app (default)")
    _add_common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", default=None, help="user:pass (or $SLRNET_AUTH) to require a login")
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="do not train or predict in this process (leave it to `launch.py worker`s)",
    )
    p.add_argument(
        "--import-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder the web UI may import from on the server (repeatable; also $SLRNET_IMPORT_ROOTS); "
        "none: the UI imports uploads only",
    )
    p.add_argument(
        "--allowed-hosts",
        action="append",
        default=[],
        metavar="NAMES",
        help="comma-separated host names the server answers to besides localhost and --host "
        "(a name users type, e.g. studio.lab.org; .lab.org for subdomains; * for any)",
    )

    p = sub.add_parser("import", help="import a folder or .zip of images, with optional labels")
    _add_common(p)
    p.add_argument("path", nargs="?", default=None,
                   help="folder or .zip of images (optional with --label-studio when the project has them)")
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--classes", default=None, help="text file, one class name per line")
    p.add_argument(
        "--no-background",
        action="store_true",
        help="the class file's first line is label value 0 (no background class, e.g. CamVid)",
    )
    p.add_argument("--tags", default=None, help="CSV with columns image,tags (tags ';'-separated)")
    p.add_argument("--masks", default=None, help="folder of indexed PNGs named like the images; 255 = ignore")
    p.add_argument("--coco", default=None, help="COCO instances JSON (polygons or RLE)")
    p.add_argument("--label-studio", default=None, metavar="EXPORT_JSON",
                   help="a Label Studio JSON export: choices/taxonomy -> tags, brush/polygons -> masks")
    p.add_argument("--label-config", default=None, metavar="XML",
                   help="the Label Studio project's labelling config (default: the export's labels)")
    p.add_argument("--max-pixels", type=int, default=None, help="reject images larger than this many pixels")

    p = sub.add_parser("train", help="train SLRNet on the project's labels")
    _add_common(p)
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--mode", default="auto", choices=MODE_CHOICES)
    p.add_argument("--backbone", default=None, choices=BACKBONES)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start afresh, do not resume an interrupted run")
    p.add_argument("--minutes", type=float, default=None,
                   help="training budget in minutes (CPU, no --epochs; default 4, 2 when continuing)")
    p.add_argument("--fresh", action="store_true",
                   help="do not continue from the current model (default: continue when it matches)")

    p = sub.add_parser("predict", help="write pseudo-labels for every image with the latest model")
    _add_common(p)
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--device", default="auto", choices=DEVICES)

    p = sub.add_parser("evaluate", help="mIoU of the current pseudo-labels against gold masks (JSON)")
    _add_common(p)
    p.add_argument("--gt-masks", required=True)
    p.add_argument("--project", default=DEFAULT_PROJECT)

    p = sub.add_parser("export", help="export labels as COCO (RLE), VOC PNGs or Label Studio tasks")
    _add_common(p)
    p.add_argument("out")
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--format", default="coco", choices=FORMATS)
    p.add_argument("--source", default="best", choices=SOURCES)
    p.add_argument("--palette", action="store_true", help="voc: colour-palette PNGs (same class indices)")

    p = sub.add_parser("label-studio-backend", help="serve SLRNet to Label Studio as its ML backend")
    _add_common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--project", default=None,
                   help="our project for Label Studio's (default: label-studio-<its id>)")
    p.add_argument("--label-studio-url", default=None, metavar="URL",
                   help="where Label Studio runs, to fetch task images (default: what it says at /setup)")
    p.add_argument("--api-key", default=None, help="a Label Studio API key (or $LABEL_STUDIO_API_KEY)")
    p.add_argument("--auth", default=None, help="user:pass (or $SLRNET_BACKEND_AUTH) to require basic auth")
    p.add_argument("--train-minutes", type=float, default=None,
                   help="training budget of each START_TRAINING (default: train's)")
    p.add_argument("--train-every", type=int, default=None, metavar="N",
                   help="also train after every N annotations Label Studio sends")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--no-worker", action="store_true",
                   help="queue training for `launch.py worker`s instead of training in this process")

    p = sub.add_parser("worker", help="run a job-queue consumer (e.g. one per GPU)")
    _add_common(p)
    p.add_argument("--workers", type=int, default=1)

    p = sub.add_parser("features", help="compute the stored backbone features of the project's images")
    _add_common(p)
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--backbone", default=None, help="default: the feature extractor's default backbone")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--status", action="store_true", help="only show what is stored, compute nothing")
    return parser


def serve(args: argparse.Namespace) -> int:
    """``serve``: the web app, with the job consumers in-process (threads; ``--no-worker``: only
    imports/exports run here, training waits for a ``launch.py worker``)."""
    from app.security import guard_middleware
    from app.ui import launch
    from jobs.consumers import start_embedded_consumer
    from services.context import Studio
    from services.import_sources import IMPORT_ROOTS_ENV, parse_import_roots

    auth = args.auth or os.environ.get("SLRNET_AUTH")
    import_roots = parse_import_roots(args.import_root, os.environ.get(IMPORT_ROOTS_ENV))
    middleware = guard_middleware(args.host, args.allowed_hosts, login=bool(auth))
    restore = _stop_on_signals()
    try:
        with Studio.open(args.data) as studio:
            studio.import_roots = import_roots
            consumers = start_embedded_consumer(studio, compute=not args.no_worker)
            try:
                launch(studio, host=args.host, port=args.port, auth=auth, middleware=middleware)
            except KeyboardInterrupt as stop:  # the way a server is ended: a clean exit
                logger.info("stopping on %s", stop or "SIGINT")
            finally:
                consumers.stop()
    finally:
        restore()
    return 0


def _stop_on_signals() -> Callable[[], None]:
    """SIGINT and SIGTERM end ``serve`` the way Ctrl+C does (the web server closes, the consumers
    stop and the jobs they ran are marked interrupted), also where the parent left SIGINT ignored
    (a background job of a non-interactive shell) or stops a container with SIGTERM. Returns what
    puts the previous handlers back."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _progress_bar(**options: Any) -> Any:
    """A tqdm bar of total 1.0 for a service's progress (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=1.0, unit="", bar_format="{l_bar}{bar}| {elapsed}<{remaining}", leave=False, **options)


def _tqdm_progress(bar: Any) -> Callable[[float, str, dict], None]:
    """A service progress callback drawing on a tqdm bar of total 1.0."""

    def progress(fraction: float, message: str, metrics: dict) -> None:
        bar.set_description(message, refresh=False)  # the bar shows the time left (as a job's eta_s)
        bar.update(fraction - bar.n)

    return progress


def _plan_printer(progress: Callable[[float, str, dict], None],
                  write: Callable[[str], None] | None) -> Callable[[float, str, dict], None]:
    """``progress``, and the service's measured plan written as its own line when it arrives."""

    def report(fraction: float, message: str, metrics: dict) -> None:
        if write is not None and "plan" in (metrics or {}):
            write(message)
        progress(fraction, message, metrics)

    return report


def import_(args: argparse.Namespace) -> int:
    """``import [PATH] [--classes F] [--tags CSV] [--masks DIR] [--coco JSON] [--label-studio JSON]``:
    one summary line."""
    from services.context import Studio
    from services.import_options import ImportOptions
    from services.importing import import_dataset

    with Studio.open(args.data) as studio, _progress_bar(delay=0.5) as bar:
        report = import_dataset(
            studio,
            args.path,
            ImportOptions(classes_file=args.classes, has_background=not args.no_background,
                          tags_csv=args.tags,
                          masks_dir=args.masks, coco_json=args.coco, label_studio_json=args.label_studio,
                          label_config=args.label_config, max_pixels=args.max_pixels),
            project=args.project,
            progress=_tqdm_progress(bar),
        )
    print(report.summary())
    return 0


def train(args: argparse.Namespace) -> int:
    """``train [--mode M] [--backbone B] [--epochs N] [--image-size S] [--device D] [--seed N]
    [--minutes M] [--fresh]``: prints the plan (epochs, image size, estimated time) first.

    Under ``torchrun --nproc_per_node N launch.py train ...`` every rank trains (DDP); rank 0 prints.
    """
    from services.context import Studio
    from services.train_options import train_options
    from services.train_plan import preview_training
    from services.training import train as train_service

    options = train_options(mode=args.mode, backbone=args.backbone, epochs=args.epochs,
                            image_size=args.image_size, device=args.device, minutes=args.minutes,
                            continue_model=not args.fresh, seed=args.seed)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with Studio.open(args.data) as studio:
        preview = preview_training(studio, args.project, options)
        if main_rank:
            print(preview.summary(), flush=True)
        with _progress_bar(disable=None if main_rank else True) as bar:
            result = train_service(
                studio, args.project, options, resume=not args.no_resume,
                progress=_plan_printer(_tqdm_progress(bar), bar.write if main_rank else None),
            )
    if main_rank:
        resumed = f", resumed after epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else ""
        print(f"mode {result.mode}: {result.reason}")
        print(f"trained model version {result.version} (run {result.run_id}, {result.epochs} epochs"
              f"{resumed}); run `predict` to publish its pseudo-labels")
    return 0


def predict(args: argparse.Namespace) -> int:
    """``predict [--device D]``: pseudo-labels of every image with the newest trained model, then
    that model becomes current."""
    from services.context import Studio
    from services.publishing import predict as predict_service

    with Studio.open(args.data) as studio, _progress_bar(disable=None) as bar:
        result = predict_service(studio, args.project, device=args.device, progress=_tqdm_progress(bar))
    print(f"model version {result.version} published: pseudo-labels for {result.images} images "
          f"(mean confidence {result.mean_score:.2f})")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``evaluate --gt-masks DIR``: JSON with miou, per_class_iou, pixel_accuracy, images."""
    import json

    from services.context import Studio
    from services.evaluation import evaluate as evaluate_service

    with Studio.open(args.data) as studio:
        scores = evaluate_service(studio, args.project, gt_masks=args.gt_masks)
    print(json.dumps(scores, indent=2))
    return 0


def export(args: argparse.Namespace) -> int:
    """``export OUT [--format coco|voc] [--source best|human|model] [--palette]``: one summary line."""
    from services.context import Studio
    from services.exporting import ExportOptions, export_project

    with Studio.open(args.data) as studio, _progress_bar(disable=None) as bar:
        report = export_project(
            studio,
            args.project,
            args.out,
            ExportOptions(fmt=args.format, source=args.source, palette=args.palette),
            progress=_tqdm_progress(bar),
        )
    print(report.summary())
    return 0


def label_studio_backend(args: argparse.Namespace) -> int:
    """``label-studio-backend [--port 9090] [--project NAME] [--label-studio-url URL --api-key KEY]
    [--auth user:pass]``: Label Studio's ML backend protocol over HTTP (app/label_studio_backend.py),
    with a job consumer for the training it queues."""
    import uvicorn

    from app.label_studio_backend import BackendSettings, create_app
    from jobs.consumers import start_embedded_consumer
    from services.context import Studio
    from services.label_studio import LabelStudioLink

    if args.train_minutes is not None and args.train_minutes <= 0:
        raise UserError("--train-minutes must be positive")
    if args.train_every is not None and args.train_every < 1:
        raise UserError("--train-every must be at least 1")
    api_key = args.api_key or os.environ.get("LABEL_STUDIO_API_KEY", "")
    link = LabelStudioLink(args.label_studio_url or "", api_key)
    settings = BackendSettings(project=args.project, link=link, train_minutes=args.train_minutes,
                               auth=args.auth or os.environ.get("SLRNET_BACKEND_AUTH"), device=args.device,
                               train_every=args.train_every)
    with Studio.open(args.data) as studio:
        consumers = start_embedded_consumer(studio, compute=not args.no_worker)
        try:
            uvicorn.run(create_app(studio, settings), host=args.host, port=args.port, log_level="info")
        finally:
            consumers.stop()
    return 0


def worker(args: argparse.Namespace) -> int:
    """``worker [--data DIR] [--workers N]``: consume training/prediction jobs until Ctrl-C / SIGTERM.

    Run one per GPU (``CUDA_VISIBLE_DEVICES=k``); see the README for several machines.
    """
    from jobs.consumers import run_worker
    from services.context import Studio

    with Studio.open(args.data) as studio:
        left = run_worker(studio, workers=args.workers)
    if left:
        logger.warning("jobs %s were interrupted by the shutdown; resume them to continue", left)
    return 0


def features(args: argparse.Namespace) -> int:
    """``features [--backbone B] [--image-size S] [--status]``: fill the feature store for the
    project's images (a progress bar), then the project's and the store's sizes."""
    from services import features as feature_service
    from services.context import Studio

    with Studio.open(args.data) as studio:
        spec = feature_service.feature_spec(args.backbone, args.image_size)
        if not args.status:
            with _progress_bar(disable=None) as bar:
                report = feature_service.fill_project(studio, args.project, spec, device=args.device,
                                                      progress=_tqdm_progress(bar))
            print(report.summary())
        print(f"{feature_service.feature_status(studio, args.project, spec.key).line()} for {spec.key}")
        print(f"feature store {studio.features.root}: {studio.features.usage().summary()}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": serve,
    "import": import_,
    "train": train,
    "predict": predict,
    "evaluate": evaluate,
    "export": export,
    "worker": worker,
    "label-studio-backend": label_studio_backend,
    "features": features,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    if args.feature_cache_mb is not None:  # read by Studio.open, here and in the processes it starts
        from services.context import FEATURE_CACHE_ENV

        os.environ[FEATURE_CACHE_ENV] = str(args.feature_cache_mb)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk, a file deleted behind the database: one line, not a traceback
        problem = environment_problem(exc)
        if problem is None:
            raise
        logger.debug("%s failed", args.command, exc_info=True)
        print(f"error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
