"""Finding jobs whose worker died, and marking them interrupted so they can be resumed; and queued
jobs whose queue message was lost, and queueing them again (:func:`requeue_lost`).

A job is orphaned when it is 'running' and either

* its worker is a process on this host that is not alive (or is this process, which is not
  running it: a restarted container reuses its PIDs), or
* its worker is on another machine and its heartbeat is older than ``stale_after_s`` (it died or
  lost the network).

A live worker on this host is never marked for a late heartbeat: its liveness is known, and a
heartbeat held up by a long database lock is no sign of death. A remote job is marked only while
its heartbeat is still that old when the mark is written.

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

from jobs import kinds, queue, runner, tasks
from services.training_lock import pid_alive
from storage import jobs as job_rows
from storage.models import Job, utcnow

if TYPE_CHECKING:
    from services.context import Studio

logger = logging.getLogger(__name__)

STALE_AFTER_S = 60.0
LOST_AFTER_S = 60.0  # a job queued this long without a message in its queue is queued again
SWEEP_INTERVAL_S = 10.0
SWEEP_INTERVAL_ENV = "SLRNET_SWEEP_INTERVAL_S"


def local_worker_alive(job: Job) -> bool | None:
    """Whether the process on this host that holds ``job`` still runs it; None when its worker
    is not a process of this host."""
    host, _, pid_text = (job.worker or "").rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return job.id in runner.jobs_held_here()
    return pid_alive(pid)


def recover_jobs(studio: Studio, *, stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """Mark orphaned running jobs (see the module docstring) interrupted; returns their ids."""
    recovered = []
    with studio.Session.begin() as session:
        running = job_rows.running_jobs(session)
        cutoff = utcnow() - timedelta(seconds=stale_after_s)
        stale = {j.id for j in job_rows.stale_before(running, cutoff)}
        for job in running:
            alive = local_worker_alive(job)
            if alive is False:
                why, seen_before = f"interrupted: worker {job.worker} is gone", None
            elif alive is None and job.id in stale:
                why = f"interrupted: no heartbeat from {job.worker} for over {stale_after_s:.0f} s"
                seen_before = cutoff
            else:
                continue
            if job_rows.mark_interrupted(session, job.id, f"{why}; resume to continue",
                                         seen_before=seen_before):
                runner.interrupt_run_of_job(session, job.id)
                recovered.append(job.id)
                logger.warning("job %d (%s) %s", job.id, job.kind, why)
    return recovered


def pending_job_ids() -> dict[str, set[int]]:
    """Queue name -> the job ids its pending messages carry."""
    return {name: {int(task.args[0]) for task in huey.pending() if task.args}
            for name, huey in queue.QUEUES.items()}


def requeue_lost(studio: Studio, *, lost_after_s: float = LOST_AFTER_S) -> list[int]:
    """Queue again the jobs queued for over ``lost_after_s`` whose queue holds no message for them
    (a queue server restarted without persistence lost it: the job would stay queued for ever and
    block its project); a job whose message cannot be queued fails, saying why. Returns the ids
    queued again. A second message for a job is harmless: only one worker can claim it."""
    with studio.Session.begin() as session:
        cutoff = utcnow() - timedelta(seconds=lost_after_s)
        waiting = [(j.id, j.kind) for j in job_rows.queued_before(session, cutoff)]
    if not waiting:
        return []
    pending = pending_job_ids()
    requeued = []
    for job_id, kind in waiting:
        if kind not in kinds.KINDS or job_id in pending.get(kinds.KINDS[kind].queue, set()):
            continue
        try:
            tasks.enqueue(kind, job_id)
        except Exception as exc:
            logger.exception("could not queue job %d again", job_id)
            with studio.Session.begin() as session:
                job_rows.fail_queued(session, job_id, f"its queue message was lost and queueing it again "
                                                      f"failed ({type(exc).__name__}); submit it again")
            continue
        with studio.Session.begin() as session:
            job_rows.set_queued_message(session, job_id, "queued again: its queue message was lost")
        logger.warning("job %d (%s) had no message in its queue; queued again", job_id, kind)
        requeued.append(job_id)
    return requeued


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
                requeue_lost(self._studio)
            except Exception:  # the database may be briefly unreachable: try again next time
                logger.exception("the dead-worker sweep failed; retrying in %.0f s", self.interval_s)
