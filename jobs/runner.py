"""The job-row lifecycle around one service call.

:func:`run_job` claims a queued job (queued -> running), hands the service a ``progress`` callback
and a ``should_stop`` check wired to the job row, keeps a heartbeat while it runs, and stores how it
ended: succeeded (with the service's result dict), cancelled, or failed (the line
:func:`services.errors.user_message` gives, never a driver's SQL; the traceback goes to the log).

Progress is written at most every ``write_interval_s``; nothing is lost in between because the
reporter keeps the whole metrics dict (with the loss curve) in memory and writes it whole. Every
write is conditional on this worker still holding the job: if a recovery sweep marked it
interrupted (heartbeat missed), the service is told to stop and the row is left as it is.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.errors import UserError, user_message
from services.progress import Cancelled, ProgressFn, StopFn
from storage import jobs as job_rows
from storage import runs as run_rows
from storage.models import Job

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.context import Studio

logger = logging.getLogger(__name__)

MAX_CURVE_POINTS = 1000

# A service run by a job: (studio, job row as it was claimed, progress, should_stop) -> result dict.
JobService = Callable[["Studio", Job, ProgressFn, StopFn], dict[str, Any]]


@dataclass(frozen=True)
class RunnerSettings:
    """Timings of the job runner; tests shorten them."""

    heartbeat_s: float = 2.0  # how often a running job proves it is alive and reads the cancel flag
    write_interval_s: float = 0.5  # at most one progress write per this many seconds


SETTINGS = RunnerSettings()

_held_lock = threading.Lock()
_held: set[int] = set()  # ids of the jobs this process is running now
_shutdown = threading.Event()


def jobs_held_here() -> set[int]:
    """Ids of the jobs this process is running right now."""
    with _held_lock:
        return set(_held)


def request_shutdown() -> None:
    """Ask every job running in this process to stop; they end 'interrupted' (resumable)."""
    _shutdown.set()


def shutting_down() -> bool:
    return _shutdown.is_set()


def reset_shutdown() -> None:
    """Allow jobs to run again after :func:`request_shutdown` (a consumer started anew)."""
    _shutdown.clear()


def worker_name() -> str:
    """This process as the ``jobs.worker`` column names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def curve_point(fraction: float, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """A loss-curve point from a progress report that carries losses, else None.

    Services report either ``loss`` (a number) or ``losses`` (loss term -> value, ``total`` being
    the objective); the point keeps the job fraction, ``epoch`` (1-based) when given, ``step``
    counted from the start of training (from ``epoch``, ``step`` within it and ``steps`` per epoch
    when all three are given, else ``step`` as reported), and the losses.
    """
    losses = metrics.get("losses")
    if isinstance(losses, dict):
        values = {k: v for k, v in losses.items() if _finite(v)}
    elif _finite(metrics.get("loss")):
        values = {"loss": metrics["loss"]}
    else:
        return None
    point: dict[str, Any] = {"fraction": round(fraction, 4)}
    epoch, step, steps = (metrics.get(k) for k in ("epoch", "step", "steps"))
    if isinstance(epoch, int):
        point["epoch"] = epoch
    if isinstance(step, int):
        within = isinstance(epoch, int) and isinstance(steps, int)
        point["step"] = (epoch - 1) * steps + step if within else step
    point.update(values)
    return point


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def json_safe(value: Any) -> Any:
    """``value`` with NaN / infinity replaced by None (PostgreSQL's JSON rejects them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class JobReporter:
    """The ``progress`` and ``should_stop`` callables of one running job, plus its heartbeat."""

    def __init__(self, studio: Studio, job: Job, worker: str, settings: RunnerSettings) -> None:
        self._studio = studio
        self._job_id = job.id
        self._worker = worker
        self._settings = settings
        self._lock = threading.Lock()
        self._stop = threading.Event()  # cancel requested, or this worker lost the job
        self._lost = threading.Event()  # the row is no longer ours: write nothing more
        self._done = threading.Event()
        self._cancel = threading.Event()  # the user asked to cancel
        self._metrics: dict[str, Any] = dict(job.metrics or {})
        self._fraction = float(job.progress or 0.0)
        self._message = job.message
        self._start_fraction = self._fraction
        self._started = time.monotonic()
        self._last_write = 0.0
        self._dirty = False
        self._thread = threading.Thread(target=self._beat, name=f"job-{job.id}-heartbeat", daemon=True)

    @property
    def lost(self) -> bool:
        """True when the job row was taken from this worker (e.g. marked interrupted)."""
        return self._lost.is_set()

    @property
    def cancel_requested(self) -> bool:
        """True once the heartbeat read the job's cancel flag."""
        return self._cancel.is_set()

    @property
    def metrics(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._metrics)

    @property
    def fraction(self) -> float:
        return self._fraction

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the heartbeat thread."""
        self._done.set()
        self._thread.join()

    def progress(self, fraction: float, message: str, metrics: dict[str, Any] | None = None) -> None:
        """The service's progress callback (see :mod:`services.progress`)."""
        with self._lock:
            self._fraction = min(max(float(fraction), 0.0), 1.0)
            self._message = message
            self._merge(metrics or {})
            self._dirty = True
            due = time.monotonic() - self._last_write >= self._settings.write_interval_s
        if due:
            self.flush()

    def should_stop(self) -> bool:
        """The service's stop check: cancel requested, this process shutting down, or the job lost."""
        return self._stop.is_set() or _shutdown.is_set()

    def flush(self) -> None:
        """Write the latest progress, message and metrics to the job row now.

        A failed write (database busy beyond its timeout, connection lost) is logged and retried
        with the next report; it never fails the service.
        """
        with self._lock:
            if not self._dirty or self.lost:
                return
            fraction, message, metrics = self._fraction, self._message, dict(self._metrics)
            self._dirty = False
            self._last_write = time.monotonic()
        job_id, worker = self._job_id, self._worker
        try:
            with self._studio.Session.begin() as session:
                held = job_rows.report_progress(session, job_id, worker, fraction, message, metrics)
        except Exception:
            logger.exception("could not store the progress of job %d; retrying with the next report", job_id)
            with self._lock:
                self._dirty = True
            return
        if not held:
            self._lose()

    def _merge(self, metrics: dict[str, Any]) -> None:
        self._metrics.update(json_safe(metrics))
        point = curve_point(self._fraction, metrics)
        if point is not None:
            curve = [*self._metrics.get("loss_curve", []), point]
            if len(curve) > MAX_CURVE_POINTS:
                curve = curve[::2]  # keep the shape, bound the row size
            self._metrics["loss_curve"] = curve
        done = self._fraction - self._start_fraction
        if done > 0.005:  # the one ETA of a job (the UI shows it; the CLI's bar makes the same)
            elapsed = time.monotonic() - self._started
            self._metrics["eta_s"] = round(elapsed * (1.0 - self._fraction) / done, 1)

    def _lose(self) -> None:
        logger.warning("job %d is no longer held by %s; stopping it", self._job_id, self._worker)
        self._lost.set()
        self._stop.set()

    def _beat(self) -> None:
        while not self._done.wait(self._settings.heartbeat_s):
            try:
                with self._studio.Session.begin() as session:
                    held = job_rows.heartbeat(session, self._job_id, self._worker)
                    cancel = job_rows.is_cancel_requested(session, self._job_id)
            except Exception:
                logger.exception("heartbeat of job %d failed", self._job_id)
                continue
            if not held:
                self._lose()
                return
            if cancel and not self._cancel.is_set():
                logger.info("job %d: cancel requested", self._job_id)
                self._cancel.set()
                self._stop.set()


def run_job(
    studio: Studio,
    job_id: int,
    service: JobService,
    *,
    worker: str | None = None,
    settings: RunnerSettings | None = None,
) -> str | None:
    """Run ``service`` for queued job ``job_id``; returns the final status (None when not run).

    A job that is no longer queued (cancelled before it started, or already taken by another
    worker) is skipped. Never raises for what the service does: failures go to the job row. A
    job stopped by :func:`request_shutdown` ends 'interrupted', its training run too, so that
    :func:`jobs.submit.resume_job` can continue it from the last checkpoint.
    """
    worker = worker or worker_name()
    with _held_lock:  # held before it is claimed, so a sweep never sees it claimed but not held
        _held.add(job_id)
    try:
        with studio.Session.begin() as session:
            if not job_rows.claim_job(session, job_id, worker):
                job = job_rows.get_job(session, job_id)
                logger.info("job %d not run: it is %s", job_id, job.status if job else "gone")
                return None
            job = job_rows.get_job(session, job_id)
            assert job is not None
        logger.info("job %d (%s) started on %s", job.id, job.kind, worker)
        return _run_claimed(studio, job, service, worker, settings or SETTINGS)
    finally:
        with _held_lock:
            _held.discard(job_id)


def _run_claimed(
    studio: Studio, job: Job, service: JobService, worker: str, settings: RunnerSettings
) -> str | None:
    reporter = JobReporter(studio, job, worker, settings)
    reporter.start()
    status, message, result, error = "failed", "failed", {}, None
    try:
        result = service(studio, job, reporter.progress, reporter.should_stop) or {}
        status, message = "succeeded", str(result.get("summary", "done"))
    except Cancelled as exc:
        if shutting_down() and not reporter.cancel_requested:
            status, message = "interrupted", "stopped: the worker shut down; resume to continue"
        else:
            status, message = "cancelled", str(exc) or "cancelled"
    except Exception as exc:
        error = user_message(exc)
        if isinstance(exc, UserError):
            logger.info("job %d failed: %s", job.id, error)
        else:
            logger.exception("job %d failed", job.id)
    finally:
        reporter.close()

    if reporter.lost:
        logger.warning("job %d ended %s after %s lost it; row left as is", job.id, status, worker)
        with studio.Session.begin() as session:
            current = job_rows.get_job(session, job.id)
            if current is not None and current.status == "interrupted":
                interrupt_run_of_job(session, job.id)  # the service may have marked it cancelled
        return None
    with studio.Session.begin() as session:
        job_rows.finish_job(
            session,
            job.id,
            worker,
            status,
            message,
            progress=1.0 if status == "succeeded" else reporter.fraction,
            metrics=reporter.metrics,
            result=json_safe(result),
            error=error,
        )
        if status == "interrupted":
            interrupt_run_of_job(session, job.id)
    logger.info("job %d %s: %s", job.id, status, error or message)
    return status


def interrupt_run_of_job(session: Session, job_id: int) -> None:
    """Mark the training run a job left unfinished as interrupted (resumable from its checkpoint).

    A run that finished training ('trained') keeps its status: a resumed job only predicts.
    Nothing is ever published here.
    """
    run = run_rows.latest_run_of_job(session, job_id)
    if run is not None and run.status in ("running", "cancelled"):
        run_rows.mark_ended(session, run, "interrupted")
