"""Training runs (model versions): repository functions. The caller owns the session and commits.

A run goes ``running`` -> ``trained`` (final checkpoint written, version assigned) -> ``published``
(pseudo-labels of every image written); or ends ``failed`` / ``cancelled`` / ``interrupted``. Only
the latest published run is the project's current model. A project has at most one ``running``
run (a unique index); its ``owner`` keeps ``heartbeat_at`` fresh (:func:`heartbeat_run`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.models import TrainingRun, utcnow

RESUMABLE_STATUSES = ("interrupted",)  # a 'running' run is someone's until its owner is gone


def create_run(session: Session, project_id: int, *, mode: str, backbone: str, config: dict[str, Any],
               job_id: int | None = None, owner: str | None = None) -> TrainingRun:
    """A new running run (``owner``: ``host:pid`` of the process training it). The project must
    have no running run: the unique index refuses a second one at flush."""
    now = utcnow()
    run = TrainingRun(project_id=project_id, mode=mode, backbone=backbone, config=config, metrics={},
                      status="running", epoch=0, job_id=job_id, owner=owner, heartbeat_at=now)
    session.add(run)
    session.flush()
    return run


def running_run(session: Session, project_id: int) -> TrainingRun | None:
    """The project's running run (there is at most one), if any."""
    stmt = select(TrainingRun).where(TrainingRun.project_id == project_id, TrainingRun.status == "running")
    return session.scalars(stmt.limit(1)).first()


def claim_run(session: Session, run: TrainingRun, owner: str, job_id: int | None = None) -> None:
    """Make a stopped run running again, owned by ``owner`` (resume)."""
    run.status = "running"
    run.owner = owner
    run.heartbeat_at = utcnow()
    run.finished_at = None
    run.job_id = job_id or run.job_id
    session.flush()


def heartbeat_run(session: Session, run_id: int, owner: str) -> bool:
    """Refresh the heartbeat of a running run ``owner`` holds; False if it no longer holds it."""
    result = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == "running", TrainingRun.owner == owner)
        .values(heartbeat_at=utcnow())
    )
    return result.rowcount == 1


def get_run(session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def latest_run_of_job(session: Session, job_id: int) -> TrainingRun | None:
    """The newest training run a job started, if any."""
    stmt = select(TrainingRun).where(TrainingRun.job_id == job_id).order_by(TrainingRun.id.desc()).limit(1)
    return session.scalars(stmt).first()


def set_checkpoint_path(session: Session, run: TrainingRun, path: str) -> None:
    run.checkpoint_path = path
    session.flush()


def record_epoch(session: Session, run: TrainingRun, epoch: int, metrics: dict[str, Any]) -> None:
    """``epoch`` completed epochs; ``metrics`` replaces the run's metrics dict."""
    run.epoch = epoch
    run.metrics = dict(metrics)
    session.flush()


def next_version(session: Session, project_id: int) -> int:
    current = session.scalar(
        select(func.max(TrainingRun.version)).where(TrainingRun.project_id == project_id)
    )
    return (current or 0) + 1


def mark_trained(session: Session, run: TrainingRun) -> int:
    """Final checkpoint written: the run becomes the project's next model version (returned)."""
    if run.version is None:
        run.version = next_version(session, run.project_id)
    run.status = "trained"
    run.finished_at = utcnow()
    session.flush()
    return run.version


def mark_published(session: Session, run: TrainingRun) -> None:
    """Pseudo-labels of every image are written: the run becomes the current model."""
    if run.status not in ("trained", "published"):
        raise ValueError(f"run {run.id} is {run.status}; only a trained run can be published")
    run.status = "published"
    run.published_at = utcnow()
    session.flush()


def mark_ended(session: Session, run: TrainingRun, status: str, error: str | None = None) -> None:
    """``failed``, ``cancelled`` or ``interrupted``; an ``error`` goes into the metrics."""
    if status not in ("failed", "cancelled", "interrupted"):
        raise ValueError(f"not an end status: {status!r}")
    run.status = status
    run.finished_at = utcnow()
    if error:
        run.metrics = {**run.metrics, "error": error}
    session.flush()


def latest_published_run(session: Session, project_id: int) -> TrainingRun | None:
    """The project's current model: the most recently published run (as ``labels.current_run_id``)."""
    stmt = (
        select(TrainingRun)
        .where(TrainingRun.project_id == project_id, TrainingRun.status == "published")
        .order_by(TrainingRun.published_at.desc().nulls_last(), TrainingRun.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def latest_trained_run(session: Session, project_id: int) -> TrainingRun | None:
    """The newest run with a final checkpoint (trained or published): what ``predict`` uses."""
    stmt = (
        select(TrainingRun)
        .where(TrainingRun.project_id == project_id, TrainingRun.status.in_(("trained", "published")))
        .order_by(TrainingRun.version.desc(), TrainingRun.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def latest_resumable_run(session: Session, project_id: int) -> TrainingRun | None:
    """The newest run that stopped mid-way (crash or interrupted worker) and has a checkpoint."""
    stmt = (
        select(TrainingRun)
        .where(
            TrainingRun.project_id == project_id,
            TrainingRun.status.in_(RESUMABLE_STATUSES),
            TrainingRun.checkpoint_path.is_not(None),
        )
        .order_by(TrainingRun.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def latest_trained_runs(session: Session, project_id: int, limit: int = 10) -> list[TrainingRun]:
    """The project's newest runs that finished training (``trained`` or ``published``), newest first."""
    stmt = (
        select(TrainingRun)
        .where(TrainingRun.project_id == project_id, TrainingRun.status.in_(("trained", "published")))
        .order_by(TrainingRun.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
