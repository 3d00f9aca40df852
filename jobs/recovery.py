"""Finding jobs whose worker died, and marking them interrupted so they can be resumed.

A job is orphaned when it is 'running' and either

* its worker is a process on this host that is not alive (or is this process, which is not
  running it: a restarted container reuses its PIDs), or
* its heartbeat is older than ``stale_after_s`` (a worker on another machine that died or lost
  the network).

Each consumer (``serve``, also with ``--no-worker``, and every ``launch.py worker``) sweeps at
start-up and then on its own :class:`Sweeper` thread every ``$SLRNET_SWEEP_INTERVAL_S`` seconds
(default ``SWEEP_INTERVAL_S``), whatever its workers are busy with: a job of a dead worker on this
host shows up as interrupted within one interval, one of a dead remote worker within
``STALE_AFTER_S`` plus one interval. Sweeps of several processes at once are harmless (each mark is
conditional on the job still running). Marking a job interrupted also marks its unfinished
training run interrupted; nothing is ever published.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from jobs import runner
from services.training_lock import pid_alive
from storage import jobs as job_rows
from storage.models import Job, utcnow

if TYPE_CHECKING:
    from services.context import Studio

logger = logging.getLogger(__name__)

STALE_AFTER_S = 60.0
SWEEP_INTERVAL_S = 10.0
SWEEP_INTERVAL_ENV = "SLRNET_SWEEP_INTERVAL_S"


def dead_local_worker(job: Job) -> bool:
    """True when ``job`` is held by a process on this host that is not running it any more."""
    host, _, pid_text = (job.worker or "").rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return job.id not in runner.jobs_held_here()
    return not pid_alive(pid)


def recover_jobs(studio: Studio, *, stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """Mark orphaned running jobs (see the module docstring) interrupted; returns their ids."""
    recovered = []
    with studio.Session.begin() as session:
        running = job_rows.running_jobs(session)
        stale = {j.id for j in job_rows.stale_before(running, utcnow() - timedelta(seconds=stale_after_s))}
        for job in running:
            if job.id in stale:
                why = f"interrupted: no heartbeat from {job.worker} for over {stale_after_s:.0f} s"
            elif dead_local_worker(job):
                why = f"interrupted: worker {job.worker} is gone"
            else:
                continue
            if job_rows.mark_interrupted(session, job.id, f"{why}; resume to continue"):
                runner.interrupt_run_of_job(session, job.id)
                recovered.append(job.id)
                logger.warning("job %d (%s) %s", job.id, job.kind, why)
    return recovered


def interrupt_own_jobs(studio: Studio) -> list[int]:
    """Mark jobs still held by this process interrupted (a consumer stopping without waiting)."""
    worker = runner.worker_name()
    interrupted = []
    with studio.Session.begin() as session:
        for job in job_rows.running_jobs(session):
            if job.worker == worker and job_rows.mark_interrupted(
                session, job.id, "stopped: the worker shut down; resume to continue"
            ):
                runner.interrupt_run_of_job(session, job.id)
                interrupted.append(job.id)
    return interrupted


def sweep_interval_s() -> float:
    """Seconds between sweeps: ``$SLRNET_SWEEP_INTERVAL_S`` when set to a positive number."""
    raw = os.environ.get(SWEEP_INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else SWEEP_INTERVAL_S
    except ValueError:
        logger.warning("ignoring %s=%r (not a number)", SWEEP_INTERVAL_ENV, raw)
        return SWEEP_INTERVAL_S
    return value if value > 0 else SWEEP_INTERVAL_S


class Sweeper:
    """A daemon thread running :func:`recover_jobs` every ``interval_s`` until :meth:`stop`."""

    def __init__(self, studio: Studio, interval_s: float | None = None) -> None:
        self._studio = studio
        self.interval_s = interval_s or sweep_interval_s()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dead-worker-sweep", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                recover_jobs(self._studio)
            except Exception:  # the database may be briefly unreachable: try again next time
                logger.exception("the dead-worker sweep failed; retrying in %.0f s", self.interval_s)
