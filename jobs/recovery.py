"""Finding jobs whose worker died, and marking them interrupted so they can be resumed.

A job is orphaned when it is 'running' and either

* its worker is a process on this host that is not alive (or is this process, which is not
  running it: a restarted container reuses its PIDs), or
* its heartbeat is older than ``stale_after_s`` (a worker on another machine that died or lost
  the network).

Each consumer sweeps at start-up, and the compute queue sweeps every minute (a periodic task), so a
job of a dead remote worker shows up as interrupted soon. Marking a job interrupted also marks its
unfinished training run interrupted; nothing is ever published.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

from jobs import runner
from storage import jobs as job_rows
from storage.models import Job, utcnow

if TYPE_CHECKING:
    from services.context import Studio

logger = logging.getLogger(__name__)

STALE_AFTER_S = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def dead_local_worker(job: Job) -> bool:
    """True when ``job`` is held by a process on this host that is not running it any more."""
    host, _, pid_text = (job.worker or "").rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return job.id not in runner.jobs_held_here()
    return not _pid_alive(pid)


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
