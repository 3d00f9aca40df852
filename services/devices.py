"""The torch device a training or predict job runs on, and the CPU thread count it uses."""

from __future__ import annotations

import os

import torch

from services.errors import UserError
from services.progress import THREADS_ENV
from slrnet.train import resolve_device


def open_device(name: str) -> torch.device:
    """The device ``name`` ("auto", "cpu", "cuda", "cuda:1") names (UserError when unavailable).
    CPU jobs use ``$SLRNET_TORCH_THREADS`` threads when set (see jobs.consumers.share_cpu_threads)."""
    try:
        device = resolve_device(name)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    threads = os.environ.get(THREADS_ENV, "")
    if device.type == "cpu" and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    return device
