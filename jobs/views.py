"""Jobs as the UI and CLI see them: plain frozen records read from the ``jobs`` table.

Torch-free; safe to poll from UI handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobs.kinds import job_title
from services.errors import UserError
from services.features import feature_status
from services.lookups import resolve_project
from storage import jobs as job_rows
from storage.models import Job
from storage.projects import get_project

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.context import Studio

@dataclass(frozen=True)
class JobView:
    """One job, for display.

    ``metrics`` may hold ``loss_curve`` (points with ``fraction`` of the job, ``epoch``, ``step``
    counted from the start of training, ``total`` and the other loss terms), ``eta_s``, ``phase``
    ("training" / "predicting"), ``mode``, ``run_id``, ``version``. ``result`` is what the job
    produced (``run_id``, ``version``, ``images`` for training; ``out`` for an export) with
    ``summary``, one line, which is also the final ``message``.
    """

    id: int
    kind: str  # import | train | predict | export | features
    title: str  # e.g. "Train on my labels" (see jobs.kinds.KINDS)
    project: str | None  # project name
    status: str  # queued | running | succeeded | failed | cancelled | interrupted
    progress: float  # 0..1
    message: str  # what it is doing now, or how it ended
    error: str | None  # why it failed, readable
    params: dict[str, Any]
    metrics: dict[str, Any]
    result: dict[str, Any]
    cancel_requested: bool
    worker: str | None  # host:pid of the worker running it
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in job_rows.ACTIVE_STATUSES

    @property
    def can_cancel(self) -> bool:
        return self.active and not self.cancel_requested

    @property
    def can_resume(self) -> bool:
        """Interrupted (its worker died or shut down): :func:`jobs.submit.resume_job` continues it."""
        return self.status == "interrupted"

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds to completion while running."""
        value = self.metrics.get("eta_s")
        return float(value) if self.status == "running" and value is not None else None

    @property
    def loss_curve(self) -> list[dict[str, Any]]:
        return list(self.metrics.get("loss_curve", []))


def job_view(job: Job, project: str | None) -> JobView:
    return JobView(
        id=job.id,
        kind=job.kind,
        title=job_title(job),
        project=project if project is not None else job.params.get("project"),
        status=job.status,
        progress=float(job.progress or 0.0),
        message=job.message or "",
        error=job.error,
        params=dict(job.params or {}),
        metrics=dict(job.metrics or {}),
        result=dict(job.result or {}),
        cancel_requested=bool(job.cancel_requested),
        worker=job.worker,
        created_at=_utc(job.created_at),
        started_at=_utc(job.started_at),
        finished_at=_utc(job.finished_at),
        heartbeat_at=_utc(job.heartbeat_at),
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else job_rows.as_utc(value)


def load_view(session: Session, job_id: int) -> JobView:
    job = job_rows.get_job(session, job_id)
    if job is None:
        raise UserError(f"no job with id {job_id}")
    project = get_project(session, job.project_id) if job.project_id is not None else None
    return job_view(job, project.name if project else None)


def get_job(studio: Studio, job_id: int) -> JobView:
    """One job; :class:`UserError` if there is none with this id."""
    with studio.Session.begin() as session:
        return load_view(session, job_id)


def list_jobs(
    studio: Studio, project: str | None = None, *, active_only: bool = False, limit: int = 50
) -> list[JobView]:
    """Jobs, newest first: all, or one project's; only queued/running ones with ``active_only``."""
    with studio.Session.begin() as session:
        project_id = None
        if project is not None:
            row = resolve_project(session, project)
            project_id = row.id
        statuses = job_rows.ACTIVE_STATUSES if active_only else None
        return _views(session, job_rows.list_jobs(session, project_id, statuses, limit))


def _views(session: Session, jobs: list[Job]) -> list[JobView]:
    names: dict[int, str | None] = {}
    for job in jobs:
        if job.project_id is not None and job.project_id not in names:
            row = get_project(session, job.project_id)
            names[job.project_id] = row.name if row else None
    return [job_view(job, names.get(job.project_id)) for job in jobs]


MODEL_KINDS = ("train", "predict")
RECENT = 20  # the newest jobs of a project a poll looks through


@dataclass(frozen=True)
class FollowedJobs:
    """What a page follows, read together once per poll (:func:`followed_jobs`)."""

    model: JobView | None  # the project's newest training or prediction job
    imports: tuple[JobView, ...]  # the imports started on the page
    export: JobView | None  # the export started on the page
    features: tuple[JobView, ...]  # the project's feature fills among its newest jobs, newest first

    @property
    def active(self) -> bool:
        """Whether any is queued or running (the feature fills only while imports are followed:
        an import queues them)."""
        fills = self.features if self.imports else ()
        return any(j is not None and j.active for j in (self.model, *self.imports, self.export, *fills))


def followed_jobs(studio: Studio, project: str | None, import_ids: list[int] | None = None,
                  export_id: int | None = None) -> FollowedJobs:
    """The jobs a page follows, in one transaction: the project's newest ones (its model job and
    feature fills among them) and the imports and export it started (ids gone are left out)."""
    with studio.Session.begin() as session:
        recent: list[JobView] = []
        if project:
            recent = _views(session, job_rows.list_jobs(session, resolve_project(session, project).id,
                                                          None, RECENT))
        by_id = {j.id: j for j in recent}
        wanted = [i for i in [*(import_ids or []), *([export_id] if export_id is not None else [])]
                  if i not in by_id]
        rows = [job for job in (job_rows.get_job(session, i) for i in wanted) if job is not None]
        by_id.update((j.id, j) for j in _views(session, rows))
    return FollowedJobs(
        model=next((j for j in recent if j.kind in MODEL_KINDS), None),
        imports=tuple(by_id[i] for i in import_ids or [] if i in by_id),
        export=by_id.get(export_id) if export_id is not None else None,
        features=tuple(j for j in recent if j.kind == "features"),
    )



def features_line(studio: Studio, project: str | None, jobs: FollowedJobs | None = None) -> str | None:
    """One line on the project's stored features for the spec its newest ``features`` job fills,
    e.g. "features: 120/334 images ready, 85.0 MB (store 1.2 GB of 4.1 GB), computing"; None
    without such a job. Torch-free: counts files in the store. ``jobs``: the poll's, if read."""
    if not project:
        return None
    job = next(iter((jobs or followed_jobs(studio, project)).features), None)
    spec_key = job and (job.result.get("spec_key") or job.metrics.get("spec_key"))
    if not spec_key:
        return "features: waiting to be computed" if job is not None and job.active else None
    line = feature_status(studio, project, spec_key).line()
    if job.active:
        return f"{line}, computing"
    paused = job.result.get("paused")
    return f"{line}; the rest is computed when training needs it" if paused else line
