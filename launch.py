"""SLRNet Studio: the single entry point.

    python launch.py [serve] [--host 127.0.0.1] [--port 7860] [--data DIR]
    python launch.py import PATH [--project NAME] [--classes FILE] [--tags CSV] [--masks DIR] [--coco JSON]
    python launch.py train   [--project NAME] [--mode auto|wsss|ssss|ssss_tags] [--backbone NAME] ...
    python launch.py predict [--project NAME]
    python launch.py evaluate --gt-masks DIR [--project NAME]
    python launch.py export  OUT [--project NAME] [--format coco|voc] [--source best|human|model]
    python launch.py worker  [--data DIR]

Every subcommand calls the same services the UI calls. Exit code 0 on success; a one-line
``error: ...`` on stderr and exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

SUBCOMMANDS = ("serve", "import", "train", "predict", "evaluate", "export", "worker")
DEFAULT_PROJECT = "default"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="data dir (default: $SLRNET_DATA or ./data)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")


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

    p = sub.add_parser("import", help="import a folder or .zip of images, with optional labels")
    _add_common(p)
    p.add_argument("path", help="folder or .zip of images")
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
    p.add_argument("--max-pixels", type=int, default=None, help="reject images larger than this many pixels")

    p = sub.add_parser("train", help="train SLRNet on the project's labels")
    _add_common(p)
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--mode", default="auto", choices=["auto", "wsss", "ssss", "ssss_tags"])
    p.add_argument("--backbone", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start afresh, do not resume an interrupted run")

    p = sub.add_parser("predict", help="write pseudo-labels for every image with the latest model")
    _add_common(p)
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    p = sub.add_parser("evaluate", help="mIoU of the current pseudo-labels against gold masks (JSON)")
    _add_common(p)
    p.add_argument("--gt-masks", required=True)
    p.add_argument("--project", default=DEFAULT_PROJECT)

    p = sub.add_parser("export", help="export labels as COCO (RLE) or VOC PNGs")
    _add_common(p)
    p.add_argument("out")
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--format", default="coco", choices=["coco", "voc"])
    p.add_argument("--source", default="best", choices=["best", "human", "model"])
    p.add_argument("--palette", action="store_true", help="voc: colour-palette PNGs (same class indices)")

    p = sub.add_parser("worker", help="run a job-queue consumer (e.g. one per GPU)")
    _add_common(p)
    p.add_argument("--workers", type=int, default=1)
    return parser


def serve(args: argparse.Namespace) -> int:
    """``serve``: the web app, with the job consumers in-process (threads; ``--no-worker``: only
    imports/exports run here, training waits for a ``launch.py worker``)."""
    from app.ui import launch
    from jobs.consumers import start_embedded_consumer
    from services.context import Studio

    studio = Studio.open(args.data)
    consumers = start_embedded_consumer(studio, compute=not args.no_worker)
    try:
        launch(studio, host=args.host, port=args.port, auth=args.auth or os.environ.get("SLRNET_AUTH"))
    finally:
        consumers.stop()
        studio.close()
    return 0


def _commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    # Imported lazily: `serve` should not pay for torch, `import` should not pay for gradio.
    from jobs import cli

    return {
        "serve": serve,
        "import": cli.import_,
        "train": cli.train,
        "predict": cli.predict,
        "evaluate": cli.evaluate,
        "export": cli.export,
        "worker": cli.worker,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from services.errors import UserError

    try:
        return _commands()[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
