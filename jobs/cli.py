"""The CLI subcommands of launch.py: thin wrappers that parse nothing and call the services.

Each function takes the argparse namespace built in launch.py and returns the exit code.
"""

from __future__ import annotations

import argparse
import logging

from jobs.errors import UserError

logger = logging.getLogger(__name__)


def serve(args: argparse.Namespace) -> int:
    raise UserError("serve: not built yet")


def import_(args: argparse.Namespace) -> int:
    raise UserError("import: not built yet")


def train(args: argparse.Namespace) -> int:
    raise UserError("train: not built yet")


def predict(args: argparse.Namespace) -> int:
    raise UserError("predict: not built yet")


def evaluate(args: argparse.Namespace) -> int:
    raise UserError("evaluate: not built yet")


def export(args: argparse.Namespace) -> int:
    raise UserError("export: not built yet")


def worker(args: argparse.Namespace) -> int:
    raise UserError("worker: not built yet")
