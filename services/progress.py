"""How long-running services report progress and learn that they should stop.

Every long service (import, train, predict, export) accepts two optional callables:

* ``progress(fraction, message, metrics)`` with ``fraction`` in 0..1 for the whole service,
  a short human message ("epoch 3/10, loss 0.41") and a JSON-able dict of extra figures
  (loss terms, ETA seconds, ...). The job runner stores them in the ``jobs`` row; the CLI shows
  them as a tqdm bar.
* ``should_stop()`` returning True when the user asked to cancel; services check it between
  steps and raise :class:`Cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ProgressFn = Callable[[float, str, dict[str, Any]], None]
StopFn = Callable[[], bool]


class Cancelled(Exception):
    """Raised by a service when ``should_stop()`` said so; whatever it finished stays consistent."""


def no_progress(fraction: float, message: str, metrics: dict[str, Any]) -> None:
    """The default progress callback: report nothing."""


def never_stop() -> bool:
    """The default stop check: never cancelled."""
    return False


# Torch threads a CPU job may use (set by the job consumers, read by the training service).
THREADS_ENV = "SLRNET_TORCH_THREADS"
