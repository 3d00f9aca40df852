"""What the UI and CLI call to start, cancel and resume background jobs. Torch-free.

Each ``submit_*`` checks what it can at once (a :class:`UserError` for bad input, before anything
is queued), adds a 'queued' job row, puts the job id on the queue and returns the job's
:class:`~jobs.views.JobView`. Poll :func:`jobs.views.get_job` / ``list_jobs`` to follow it.

A project has at most one training or prediction job queued or running at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from jobs import queue, tasks
from jobs.kinds import (
    EXCLUSIVE_KINDS,
    KINDS,
    ExportParams,
    FeaturesParams,
    ImportParams,
    JobParams,
    PredictParams,
    TrainParams,
    job_params,
    kind_of,
)
from jobs.views import JobView, get_job, load_view
from services import training_lock
from services.errors import UserError
from services.exporting import ExportOptions
from services.features import features_available
from services.formats.exporters import get_exporter
from services.import_options import ImportOptions
from services.lookups import resolve_project
from services.train_options import TrainOptions
from services.train_plan import LabelCounts, choose_mode
from storage import jobs as job_rows
from storage.images import ImageFilter, count_images, label_counts
from storage.models import Project
from storage.projects import get_project, get_project_by_name

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.context import Studio

logger = logging.getLogger(__name__)

EXPORTS_DIR = "exports"


def _check_no_active(session: Session, project: Project) -> None:
    """Raise UserError when the project already has an exclusive (training or prediction) job in
    flight."""
    job_rows.lock_project_jobs(session, project.id)
    active = job_rows.active_job(session, project.id, EXCLUSIVE_KINDS)
    if active is not None:
        raise UserError(
            f"a {KINDS[active.kind].noun} job for project {project.name!r} is already {active.status} "
            f"(job {active.id})"
        )
    run = training_lock.live_training(session, project.id)  # e.g. a `launch.py train` elsewhere
    if run is not None:
        raise UserError(training_lock.describe(run, project.name))


def _add_job(session: Session, params: JobParams, project: Project | None, message: str = "queued") -> int:
    """Add the job row of ``params`` (after the exclusivity check its kind calls for); its id."""
    kind = kind_of(params)
    if kind.exclusive and project is not None:
        _check_no_active(session, project)
    job = job_rows.create_job(session, kind.name, project.id if project else None,
                              dataclasses.asdict(params), message=message)
    return job.id


def _enqueue(studio: Studio, kind: str, job_id: int, queued: JobView | None = None) -> JobView:
    """Queue a committed job row; if the queue refuses, fail the job and tell the user. Returns
    ``queued`` (the row as committed) unless the queue ran the job at once (tests)."""
    try:
        tasks.enqueue(kind, job_id)
    except Exception as exc:
        logger.exception("could not queue job %d", job_id)
        reason = f"could not queue the job: {type(exc).__name__}: {exc}"
        with studio.Session.begin() as session:
            job_rows.fail_queued(session, job_id, reason)
        raise UserError(reason) from exc
    if queued is not None and not queue.runs_at_enqueue(KINDS[kind].queue):
        return queued
    return get_job(studio, job_id)


def submit_train_on_my_labels(
    studio: Studio,
    project: str,
    options: TrainOptions | None = None,
    *,
    predict_after: bool = True,
) -> JobView:
    """Queue "Train on my labels" with ``options`` (see :func:`services.training.train`; mode
    auto: chosen from the labels), then predict and publish pseudo-labels of every image, as one
    job (progress 0..0.8 training, 0.8..1 predicting). With ``predict_after=False`` the job only
    trains (the model is not published).
    """
    options = options or TrainOptions()
    queue.bind(studio)
    with studio.Session.begin() as session:  # one transaction: the checks, the job row, its view
        row = resolve_project(session, project)
        if count_images(session, row.id, ImageFilter.ALL) == 0:
            raise UserError(f"project {project!r} has no images; import some first")
        # no labels, or a mode the labels do not allow: refused here
        choose_mode(LabelCounts(*label_counts(session, row.id)), options.mode)
        params = TrainParams(project_id=row.id, options=options, predict_after=predict_after)
        job_id = _add_job(session, params, row, message=f"queued ({options.mode} mode)")
        queued = load_view(session, job_id)
    logger.info("queued training job %d for project %r", job_id, project)
    return _enqueue(studio, "train", job_id, queued)


def submit_predict(
    studio: Studio, project: str, *, run_id: int | None = None, device: str = "auto"
) -> JobView:
    """Queue writing pseudo-labels of every image with a trained model (default: the newest),
    which then becomes the project's current model."""
    queue.bind(studio)
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        job_id = _add_job(session, PredictParams(project_id=row.id, run_id=run_id, device=device), row)
    return _enqueue(studio, "predict", job_id)


def submit_import(studio: Studio, path: str | Path, project: str,
                  options: ImportOptions | None = None) -> JobView:
    """Queue an import of a folder or .zip of images (and labels) into ``project``, created if
    missing (see :func:`services.importing.import_dataset`; ``options.within``: the folders every
    file read must resolve under). The files must stay where they are until the job has run; the
    app's own consumer runs imports."""
    source = Path(path).expanduser().absolute()
    if not source.exists():
        raise UserError(f"import path {source} does not exist")
    project = project.strip()
    if not project:
        raise UserError("a project name must have 1 to 200 characters")
    options = (options or ImportOptions()).absolute()
    queue.bind(studio)
    with studio.Session.begin() as session:
        row = get_project_by_name(session, project)
        job_id = _add_job(session, ImportParams(project=project, path=str(source), options=options), row)
    return _enqueue(studio, "import", job_id)


def _path_or_none(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "project"


def submit_export(
    studio: Studio,
    project: str,
    out: str | Path | None = None,
    options: ExportOptions | None = None,
) -> JobView:
    """Queue an export of the project's labels (see :func:`services.exporting.export_project`).

    ``out`` defaults to ``<data dir>/exports/<project>-<fmt>-<job id>`` plus the format's suffix
    (``.json`` for COCO, none for VOC's folder); the job's ``result['out']`` says where it went.
    """
    options = options or ExportOptions()
    fmt, exporter = options.fmt, get_exporter(options.fmt)
    queue.bind(studio)
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        params = ExportParams(project_id=row.id, out="", options=options)
        job_id = _add_job(session, params, row)
        if out is None:
            folder = studio.data_dir / EXPORTS_DIR
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{_safe_name(row.name)}-{fmt}-{job_id}"
            out = folder / exporter.default_name(stem)
        params = dataclasses.replace(params, out=str(Path(out).expanduser().absolute()))
        job_rows.get_job(session, job_id).params = dataclasses.asdict(params)
    return _enqueue(studio, "export", job_id)


def submit_features(
    studio: Studio, project: int | str, *, device: str = "auto", backbone: str | None = None,
    image_size: int | None = None,
) -> JobView | None:
    """Queue the computation of the stored features the project's images miss (see
    :func:`services.features.fill_project`; it makes way for training and prediction jobs). A
    features job of the project with the same settings already queued or running is returned
    instead of a second one; None when this installation cannot compute features."""
    if not features_available():
        return None
    queue.bind(studio)
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        job_rows.lock_project_jobs(session, row.id)
        params = FeaturesParams(project_id=row.id, device=device, backbone=backbone, image_size=image_size)
        for active in job_rows.list_jobs(session, row.id, job_rows.ACTIVE_STATUSES, limit=None):
            if active.kind == "features" and job_params(active) == params:
                return load_view(session, active.id)
        job_id = _add_job(session, params, row)
    return _enqueue(studio, "features", job_id)


def cancel_job(studio: Studio, job_id: int) -> JobView:
    """Cancel a job: a queued one at once, a running one at its next step (it ends 'cancelled',
    and the project's current model stays as it was). Cancelling twice is harmless."""
    with studio.Session.begin() as session:
        view = load_view(session, job_id)
        if view.status == "queued":
            job_rows.cancel_queued(session, job_id)
        elif view.status == "running":
            if not view.cancel_requested:
                job_rows.request_cancel(session, job_id)
        else:
            raise UserError(f"job {job_id} has already ended ({view.status})")
        session.expire_all()
        # read back in the same transaction: a progress report landing after it must not make
        # the answer to this click look as if the cancel had not been taken
        view = load_view(session, job_id)
    logger.info("cancel requested for job %d", job_id)
    return view


def resume_job(studio: Studio, job_id: int) -> JobView:
    """Queue an interrupted job again. Training continues from its last checkpoint (a run that had
    finished training only predicts); other kinds start over."""
    queue.bind(studio)
    with studio.Session.begin() as session:
        job = job_rows.get_job(session, job_id)
        if job is None:
            raise UserError(f"no job with id {job_id}")
        if job.status != "interrupted":
            raise UserError(f"job {job_id} is {job.status}; only an interrupted job can be resumed")
        kind = job.kind
        if KINDS[kind].exclusive and job.project_id is not None:
            row = get_project(session, job.project_id)
            if row is not None:
                _check_no_active(session, row)
        job_rows.requeue_job(session, job_id, "queued (resuming)")
    logger.info("resuming job %d", job_id)
    return _enqueue(studio, kind, job_id)
