"""One training per project, held in the database so it holds across processes and machines.

The lock is the project's ``running`` training run (a unique index allows one per project). Its
``owner`` (``host:pid``) keeps ``heartbeat_at`` fresh from a thread (:func:`hold` /
:func:`release`) while it trains. A run may be taken over (marked interrupted, then resumed) only
when its owner is gone: a process on this host that is not alive (or this process, which is not
training it), or no heartbeat for ``STALE_AFTER_S`` (a process on another machine that died).
Torch-free: the job machinery checks it before queueing a training.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from services.errors import UserError
from storage import runs as run_repo
from storage.db import lock_project
from storage.jobs import as_utc
from storage.models import TrainingRun, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.context import Studio
    from storage.models import Project

logger = logging.getLogger(__name__)

STALE_AFTER_S = 60.0
HEARTBEAT_S = 5.0

_lock = threading.Lock()
_leases: dict[int, _Lease] = {}  # run id -> the heartbeat of a run this process trains


def owner_name() -> str:
    """This process as a run's ``owner`` (and a job's ``worker``): ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def held_here(run_id: int) -> bool:
    """Whether this process is training run ``run_id`` now."""
    with _lock:
        return run_id in _leases


def owner_gone(run: TrainingRun, *, stale_after_s: float = STALE_AFTER_S) -> bool:
    """True when nobody is training ``run`` any more (see the module docstring)."""
    host, _, pid_text = (run.owner or "").rpartition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return not held_here(run.id)
        if not pid_alive(pid):
            return True
    seen = run.heartbeat_at or run.created_at
    return seen is None or as_utc(seen) < utcnow() - timedelta(seconds=stale_after_s)


def describe(run: TrainingRun, project_name: str) -> str:
    """The one-line refusal naming the running training."""
    job = f", job {run.job_id}" if run.job_id is not None else ""
    return (f"project {project_name!r} is already training: run {run.id} (epoch {run.epoch} done) "
            f"on {run.owner or 'an unknown process'}{job}; wait for it to finish or cancel it")


def live_training(session: Session, project_id: int) -> TrainingRun | None:
    """The project's running run when its owner is alive, else None."""
    run = run_repo.running_run(session, project_id)
    return run if run is not None and not owner_gone(run) else None


def take_over(session: Session, project: Project) -> None:
    """Lock the project for this transaction; UserError naming the running training when one is
    alive; a running run whose owner is gone is marked interrupted (so it can be resumed)."""
    lock_project(session, project.id)
    run = run_repo.running_run(session, project.id)
    if run is None:
        return
    if not owner_gone(run):
        raise UserError(describe(run, project.name))
    logger.warning("run %d of project %r: its owner %s is gone; marking it interrupted",
                   run.id, project.name, run.owner)
    run_repo.mark_ended(session, run, "interrupted")


class _Lease:
    """A thread refreshing a run's heartbeat while this process trains it."""

    def __init__(self, studio: Studio, run_id: int, owner: str) -> None:
        self.studio, self.run_id, self.owner = studio, run_id, owner
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"run-{run_id}-lease", daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(HEARTBEAT_S):
            try:
                with self.studio.Session.begin() as session:
                    held = run_repo.heartbeat_run(session, self.run_id, self.owner)
            except Exception:
                logger.exception("heartbeat of run %d failed; retrying", self.run_id)
                continue
            if not held:
                logger.warning("run %d is no longer held by %s; stopping it", self.run_id, self.owner)
                self.lost.set()
                return


def hold(studio: Studio, run_id: int) -> None:
    """Start refreshing the heartbeat of run ``run_id``, which this process now trains."""
    lease = _Lease(studio, run_id, owner_name())
    with _lock:
        _leases[run_id] = lease
    lease._thread.start()


def lost(run_id: int) -> bool:
    """True when another process took run ``run_id`` over from this one (stop training it)."""
    with _lock:
        lease = _leases.get(run_id)
    return lease is not None and lease.lost.is_set()


def release(run_id: int) -> None:
    """Stop refreshing the heartbeat of run ``run_id`` (its training ended here)."""
    with _lock:
        lease = _leases.pop(run_id, None)
    if lease is not None:
        lease._done.set()
        if lease._thread.is_alive() and lease._thread is not threading.current_thread():
            lease._thread.join(30)
