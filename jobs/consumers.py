"""Running the queues: the app's embedded consumer (threads) and ``launch.py worker``.

Both sweep for orphaned jobs before they start and then on a :class:`~jobs.recovery.Sweeper`
thread of their own (see :mod:`jobs.recovery`), never behind a queued job. Stopping either asks
running jobs to stop at their next step; they end 'interrupted' (their training run too), so
:func:`jobs.submit.resume_job` continues them from the last checkpoint. Whatever has not stopped
within ``shutdown_timeout_s`` is marked interrupted as the consumer leaves.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from huey import Huey
from huey.consumer import Consumer

from jobs import queue, recovery, runner
from jobs import tasks as _tasks  # noqa: F401  (registers the tasks on the queues)
from services.progress import THREADS_ENV

if TYPE_CHECKING:
    from services.context import Studio

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 15.0
POLL_MAX_DELAY_S = 1.0  # an idle consumer looks at the queue at least this often

class StudioConsumer(Consumer):
    """A thread-based huey consumer whose stop asks the jobs it runs to stop first.

    ``handle_signals=False`` (embedded in the web app) leaves the process's signal handlers to the
    host application.
    """

    def __init__(self, huey: Huey, *, handle_signals: bool, **options: Any) -> None:
        self._handle_signals = handle_signals
        options.setdefault("worker_type", "thread")
        options.setdefault("periodic", False)  # no periodic tasks: the sweep has its own thread
        options.setdefault("max_delay", POLL_MAX_DELAY_S)
        options.setdefault("shutdown_timeout", SHUTDOWN_TIMEOUT_S)
        super().__init__(huey, **options)

    def _set_signal_handlers(self) -> None:
        if self._handle_signals:
            super()._set_signal_handlers()

    def stop(self, graceful: bool = False) -> None:
        """Ask running jobs to stop, then wait for the workers up to ``shutdown_timeout``."""
        runner.request_shutdown()
        super().stop(graceful=True)


@dataclass
class EmbeddedConsumers:
    """The consumers ``serve`` runs in its own process; :meth:`stop` them when the app exits."""

    studio: Studio
    sweeper: recovery.Sweeper
    consumers: list[StudioConsumer] = field(default_factory=list)

    def stop(self) -> list[int]:
        """Stop the consumers; returns the ids of jobs left interrupted (resumable)."""
        runner.request_shutdown()
        self.sweeper.stop()
        for consumer in self.consumers:
            consumer.stop()
        self.consumers.clear()
        leftover = recovery.interrupt_own_jobs(self.studio)
        runner.reset_shutdown()  # jobs run later in this process (CLI, tests) must not see it
        logger.info("job consumers stopped%s", f"; interrupted jobs {leftover}" if leftover else "")
        return leftover


def _prepare(studio: Studio) -> recovery.Sweeper:
    """Bind the queues, sweep once, and start the sweep thread (returned, running)."""
    queue.bind(studio)
    runner.reset_shutdown()
    recovered = recovery.recover_jobs(studio)
    if recovered:
        logger.warning("marked jobs %s interrupted (worker gone); resume them to continue", recovered)
    return recovery.Sweeper(studio).start()


def share_cpu_threads(workers: int) -> None:
    """Thread policy for compute consumers: torch's thread count is per process, so N compute
    workers in one process get cores // N threads each job (``$SLRNET_TORCH_THREADS`` wins when
    set, e.g. to 1 when several worker processes share a machine: two OpenMP threads of a job
    competing with another process for 2 cores were measured 10x slower than one)."""
    os.environ.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 1) // max(1, workers))))


def start_embedded_consumer(studio: Studio, *, compute: bool = True, workers: int = 1) -> EmbeddedConsumers:
    """Start the app's consumers in background threads and return a handle to stop them.

    The ``local`` queue (imports, exports) always runs here; the ``compute`` queue (training,
    prediction) too unless ``compute`` is False (``serve --no-worker``, with GPU workers elsewhere).
    """
    handle = EmbeddedConsumers(studio, _prepare(studio))
    handle.consumers.append(StudioConsumer(queue.local, handle_signals=False))
    if compute:
        share_cpu_threads(workers)
        handle.consumers.append(StudioConsumer(queue.compute, handle_signals=False, workers=workers))
    for consumer in handle.consumers:
        consumer.start()
    logger.info("job consumers running in-process (%s)", "local + compute" if compute else "local only")
    return handle


def run_worker(studio: Studio, *, workers: int = 1) -> list[int]:
    """Consume the ``compute`` queue until SIGINT/SIGTERM; returns the ids of jobs left interrupted."""
    sweeper = _prepare(studio)
    share_cpu_threads(workers)
    consumer = StudioConsumer(queue.compute, handle_signals=True, workers=workers)
    logger.info("worker %s consuming training and prediction jobs", runner.worker_name())
    try:
        consumer.run()
    finally:
        sweeper.stop()
    leftover = recovery.interrupt_own_jobs(studio)
    runner.reset_shutdown()
    return leftover
