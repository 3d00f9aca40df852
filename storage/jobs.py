"""Repository functions for the ``jobs`` table: what the UI polls and what workers update.

Every function takes a session and never commits. Writes that a worker makes while it holds a job
are conditional on ``status == 'running'`` and ``worker == <its name>``, so a worker that lost the
job (marked interrupted by a recovery sweep, say) cannot overwrite what happened since.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.db import lock_project
from storage.models import Job, utcnow

ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled", "interrupted")


def create_job(
    session: Session, kind: str, project_id: int | None, params: dict[str, Any], message: str = "queued"
) -> Job:
    """Add a queued job row and flush it, so its id is known."""
    job = Job(kind=kind, project_id=project_id, params=params, status="queued", message=message)
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(
    session: Session,
    project_id: int | None = None,
    statuses: Iterable[str] | None = None,
    limit: int | None = 50,
) -> list[Job]:
    """Jobs, newest first, optionally of one project and/or in the given statuses."""
    stmt = select(Job).order_by(Job.id.desc())
    if project_id is not None:
        stmt = stmt.where(Job.project_id == project_id)
    if statuses is not None:
        stmt = stmt.where(Job.status.in_(list(statuses)))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def active_job(session: Session, project_id: int, kinds: Iterable[str]) -> Job | None:
    """The oldest queued or running job of the project among ``kinds``, if any."""
    stmt = (
        select(Job)
        .where(Job.project_id == project_id, Job.kind.in_(list(kinds)), Job.status.in_(ACTIVE_STATUSES))
        .order_by(Job.id)
        .limit(1)
    )
    return session.scalars(stmt).first()


def any_active_job(session: Session, kinds: Iterable[str]) -> Job | None:
    """The oldest queued or running job among ``kinds`` of any project, if any."""
    stmt = (select(Job).where(Job.kind.in_(list(kinds)), Job.status.in_(ACTIVE_STATUSES))
            .order_by(Job.id).limit(1))
    return session.scalars(stmt).first()


def lock_project_jobs(session: Session, project_id: int) -> None:
    """Serialize job submissions of a project until the caller's transaction ends (see
    :func:`storage.db.lock_project`); call it first in the transaction that checks, then adds."""
    lock_project(session, project_id)


def queued_before(session: Session, cutoff: datetime) -> list[Job]:
    """Jobs still queued (not cancelled) that were created before ``cutoff``, oldest first."""
    return list(session.scalars(
        select(Job).where(Job.status == "queued", Job.cancel_requested.is_(False), Job.created_at < cutoff)
        .order_by(Job.id)))


def set_queued_message(session: Session, job_id: int, message: str) -> bool:
    """Change the message of a job that is still queued; False if it is not."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(message=message)
                          .execution_options(synchronize_session=False))
    return res.rowcount == 1


def running_jobs(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == "running").order_by(Job.id)))


def claim_job(session: Session, job_id: int, worker: str, message: str = "starting") -> bool:
    """Mark a queued, not-cancelled job as running on ``worker``; False if it was not claimable."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
        .values(
            status="running",
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            message=message,
            error=None,
            finished_at=None,
        )
    )
    return result.rowcount == 1


def report_progress(
    session: Session, job_id: int, worker: str, progress: float, message: str, metrics: dict[str, Any]
) -> bool:
    """Store progress of a job this worker holds; False if it no longer holds it."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.worker == worker)
        .values(progress=progress, message=message, metrics=metrics, heartbeat_at=utcnow())
    )
    return result.rowcount == 1


def heartbeat(session: Session, job_id: int, worker: str) -> bool:
    """Refresh the heartbeat of a job this worker holds; False if it no longer holds it."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.worker == worker)
        .values(heartbeat_at=utcnow())
    )
    return result.rowcount == 1


def is_cancel_requested(session: Session, job_id: int) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish_job(
    session: Session,
    job_id: int,
    worker: str,
    status: str,
    message: str,
    *,
    progress: float | None = None,
    metrics: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Move a job this worker holds to a final status; False if it no longer holds it."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"not a final job status: {status!r}")
    values: dict[str, Any] = {"status": status, "message": message, "error": error, "finished_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    if metrics is not None:
        values["metrics"] = metrics
    if result is not None:
        values["result"] = result
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.status == "running", Job.worker == worker).values(**values)
    )
    return res.rowcount == 1


def set_job_project(session: Session, job_id: int, project_id: int) -> None:
    """Attach a job to a project (an import job learns its project's id when it creates it)."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.project_id.is_(None)).values(project_id=project_id)
    )


def cancel_queued(session: Session, job_id: int) -> bool:
    """Cancel a job that no worker has started; False if it is no longer queued."""
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, message="cancelled", finished_at=utcnow())
    )
    return res.rowcount == 1


def fail_queued(session: Session, job_id: int, error: str) -> bool:
    """Fail a job that never reached a worker (e.g. the queue was unreachable)."""
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="failed", message="failed", error=error, finished_at=utcnow())
    )
    return res.rowcount == 1


def request_cancel(session: Session, job_id: int) -> bool:
    """Ask the worker running a job to stop; False if it is not running."""
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(cancel_requested=True, message="cancelling…")
    )
    return res.rowcount == 1


def mark_interrupted(session: Session, job_id: int, message: str, *,
                     seen_before: datetime | None = None) -> bool:
    """Mark a running job whose worker is gone as interrupted; False if it is not running (or,
    with ``seen_before``, if its heartbeat is not older than that any more)."""
    condition = (Job.id == job_id) & (Job.status == "running")
    if seen_before is not None:
        condition &= Job.heartbeat_at.is_(None) | (Job.heartbeat_at < seen_before)
    res = session.execute(
        update(Job).where(condition).values(status="interrupted", message=message, finished_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return res.rowcount == 1


def requeue_job(session: Session, job_id: int, message: str) -> bool:
    """Put an interrupted job back in the queued state; False if it is not interrupted."""
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "interrupted")
        .values(
            status="queued",
            message=message,
            cancel_requested=False,
            error=None,
            worker=None,
            finished_at=None,
            heartbeat_at=None,
        )
    )
    return res.rowcount == 1


def stale_before(jobs: Iterable[Job], cutoff: datetime) -> list[Job]:
    """Those of ``jobs`` whose last sign of life (heartbeat, else start) is before ``cutoff``."""
    out = []
    for job in jobs:
        seen = job.heartbeat_at or job.started_at or job.created_at
        if seen is not None and as_utc(seen) < as_utc(cutoff):
            out.append(job)
    return out


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite hands back naive ones; all we store is UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
