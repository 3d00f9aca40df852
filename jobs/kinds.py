"""The kinds of background job, in ONE table: each kind's typed parameters, queue, service, title
and whether it is exclusive (at most one exclusive job per project queued or running at a time).

A job row's ``params`` column holds its kind's parameter dataclass as :func:`dataclasses.asdict`
gives it; :func:`job_params` reads it back. The services that need torch are imported when a job
runs, never when this module is imported (the UI imports it indirectly).

A ``train`` job with ``predict_after`` (the UI's "Train on my labels") is one job with two phases:
training reports progress 0..``TRAIN_SHARE``, predicting the pseudo-labels of every image
``TRAIN_SHARE``..1. The new model becomes current only when the predict phase publishes it, so a
job that is cancelled, fails or is interrupted never shows a half-finished model's labels.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from jobs.runner import JobService
from services.errors import UserError
from services.exporting import ExportOptions
from services.import_options import ImportOptions
from services.progress import ProgressFn, StopFn
from services.train_options import TrainOptions
from storage import jobs as job_rows
from storage import runs as run_rows
from storage.models import Job

if TYPE_CHECKING:
    from services.context import Studio

logger = logging.getLogger(__name__)

TRAIN_SHARE = 0.8
QUEUE_NAMES = ("compute", "local")  # see jobs.queue


# --- typed parameters, one frozen dataclass per kind --------------------------------------------


@dataclass(frozen=True)
class TrainParams:
    project_id: int
    options: TrainOptions = field(default_factory=TrainOptions)
    predict_after: bool = True  # then predict and publish ("Train on my labels")


@dataclass(frozen=True)
class PredictParams:
    project_id: int
    run_id: int | None = None  # None: the newest trained run
    device: str = "auto"


@dataclass(frozen=True)
class ImportParams:
    project: str  # by name: the import creates it when missing
    path: str  # absolute
    options: ImportOptions = field(default_factory=ImportOptions)


@dataclass(frozen=True)
class ExportParams:
    project_id: int
    out: str  # absolute
    options: ExportOptions = field(default_factory=ExportOptions)


@dataclass(frozen=True)
class FeaturesParams:
    """What :func:`services.features.fill_project` fills: the project's images' features for
    ``backbone`` at ``image_size`` (None: the extractor's defaults)."""

    project_id: int
    device: str = "auto"
    backbone: str | None = None
    image_size: int | None = None


JobParams = TrainParams | PredictParams | ImportParams | ExportParams | FeaturesParams


def _from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """``cls`` built from an ``asdict`` dict; unknown keys are dropped, nested dataclasses rebuilt."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
            value = _from_dict(hints[f.name], value)
        values[f.name] = value
    for f in dataclasses.fields(cls):  # options written flat by an older version: gathered
        if f.name not in data and dataclasses.is_dataclass(hints[f.name]):
            flat = {g.name: data[g.name] for g in dataclasses.fields(hints[f.name]) if g.name in data}
            if flat:
                values[f.name] = _from_dict(hints[f.name], flat)
    return cls(**values)


def job_params(job: Job) -> Any:
    """The job row's parameters as its kind's dataclass (``project_id`` from the row when a row
    written before the parameters carried it lacks it)."""
    kind = KINDS[job.kind]
    data = dict(job.params or {})
    if "project_id" in {f.name for f in dataclasses.fields(kind.params)} and data.get("project_id") is None:
        data["project_id"] = job.project_id
    return _from_dict(kind.params, data)


# --- what each kind runs: the job row in, a service call, a result dict out ----------------------


def _service(name: str) -> ModuleType:
    """A service module, imported on first use (the training and publishing services pull in torch)."""
    return importlib.import_module(name)


def phase_progress(progress: ProgressFn, start: float, end: float, phase: str) -> ProgressFn:
    """A progress callback mapping a phase's 0..1 onto ``start..end`` of the job, tagged with the phase."""

    def report(fraction: float, message: str, metrics: dict[str, Any] | None = None) -> None:
        progress(start + (end - start) * fraction, f"{phase}: {message}", {**(metrics or {}), "phase": phase})

    return report


def run_train(studio: Studio, job: Job, progress: ProgressFn, should_stop: StopFn) -> dict[str, Any]:
    """Train on the project's labels (auto mode by default); with ``predict_after``, then predict."""
    training = _service("services.training")
    params: TrainParams = job_params(job)
    train_end = TRAIN_SHARE if params.predict_after else 1.0
    result: dict[str, Any] = {}

    with studio.Session.begin() as session:
        earlier = run_rows.latest_run_of_job(session, job.id)
        trained = earlier is not None and earlier.status in ("trained", "published")
        run_id, version = (earlier.id, earlier.version) if trained else (None, None)
    if trained:
        # An earlier attempt of this job finished training and was interrupted while predicting.
        progress(train_end, f"model version {version} already trained; predicting", {"run_id": run_id})
    else:
        trained_run = training.train(
            studio, params.project_id, params.options, resume=True, job_id=job.id,
            progress=phase_progress(progress, 0.0, train_end, "training"), should_stop=should_stop,
        )
        run_id, version = trained_run.run_id, trained_run.version
        result.update(mode=trained_run.mode, mode_reason=trained_run.reason, epochs=trained_run.epochs,
                      resumed_from_epoch=trained_run.resumed_from_epoch)
    result.update(run_id=run_id, version=version)
    if not params.predict_after:
        result["summary"] = f"model version {version} trained; run predict to publish its pseudo-labels"
        return result

    predicted = _service("services.publishing").predict(
        studio, params.project_id, run_id=run_id, device=params.options.device, job_id=job.id,
        progress=phase_progress(progress, train_end, 1.0, "predicting"), should_stop=should_stop,
    )
    result.update(images=predicted.images, mean_score=predicted.mean_score)
    result["summary"] = (f"model version {version} trained and published: pseudo-labels for "
                         f"{predicted.images} images (mean confidence {predicted.mean_score:.2f})")
    return result


def run_predict(studio: Studio, job: Job, progress: ProgressFn, should_stop: StopFn) -> dict[str, Any]:
    """Pseudo-labels of every image with a trained model (default: the newest), then publish it."""
    publishing = _service("services.publishing")
    params: PredictParams = job_params(job)
    predicted = publishing.predict(
        studio, params.project_id, run_id=params.run_id, device=params.device,
        job_id=job.id, progress=progress, should_stop=should_stop,
    )
    return {
        "run_id": predicted.run_id,
        "version": predicted.version,
        "images": predicted.images,
        "mean_score": predicted.mean_score,
        "summary": f"model version {predicted.version} published: "
                   f"pseudo-labels for {predicted.images} images",
    }


def run_export(studio: Studio, job: Job, progress: ProgressFn, should_stop: StopFn) -> dict[str, Any]:
    """Export the project's labels to ``params.out``."""
    exporting = _service("services.exporting")
    params: ExportParams = job_params(job)
    report = exporting.export_project(
        studio, params.project_id, params.out, params.options, progress=progress, should_stop=should_stop,
    )
    return {**report.as_dict(), "summary": report.summary()}


def run_import(studio: Studio, job: Job, progress: ProgressFn, should_stop: StopFn) -> dict[str, Any]:
    """Import ``params.path`` (a folder or .zip) into the project, creating it if needed."""
    importing = _service("services.importing")
    params: ImportParams = job_params(job)
    report = importing.import_dataset(
        studio, params.path, params.options, project=params.project,
        progress=progress, should_stop=should_stop,
    )
    if report.project_id:
        with studio.Session.begin() as session:
            job_rows.set_job_project(session, job.id, report.project_id)
        if report.images_added:
            _fill_features_after(studio, report.project_id)
    return {**dataclasses.asdict(report), "summary": report.summary()}


def _fill_features_after(studio: Studio, project_id: int) -> None:
    """Queue the background fill of the project's features (never fails the import)."""
    from jobs.submit import submit_features
    from services.features import prefill_enabled

    if not prefill_enabled():
        return
    try:
        submit_features(studio, project_id)
    except Exception:
        logger.exception("could not queue the feature computation of project %d", project_id)


PAUSE_CHECK_S = 1.0  # how often a fill looks for training or predict jobs to make way for


def training_waits(studio: Studio) -> Callable[[], str | None]:
    """A fill's ``should_pause``: a reason once a training or prediction job of any project is
    queued or running (they share the CPU, and compute the features they miss themselves),
    looked up at most every ``PAUSE_CHECK_S``."""
    last = [float("-inf"), None]

    def check() -> str | None:
        now = time.monotonic()
        if now - last[0] >= PAUSE_CHECK_S:
            with studio.Session.begin() as session:
                job = job_rows.any_active_job(session, EXCLUSIVE_KINDS)
                last[1] = None if job is None else (
                    f"a {KINDS[job.kind].noun} job (job {job.id}) is {job.status}; it computes the "
                    f"features it needs")
            last[0] = now
        return last[1]

    return check


def run_features(studio: Studio, job: Job, progress: ProgressFn, should_stop: StopFn) -> dict[str, Any]:
    """Compute the stored features the project's images miss; makes way for training / predict."""
    features = _service("services.features")
    params: FeaturesParams = job_params(job)
    try:
        spec = features.feature_spec(params.backbone, params.image_size)
    except UserError as exc:  # e.g. a backbone chosen in the Train tab that trains on images
        return {"summary": f"nothing to compute: {exc}"}
    report = features.fill_project(studio, params.project_id, spec, device=params.device, progress=progress,
                                   should_stop=should_stop, should_pause=training_waits(studio))
    result = dataclasses.asdict(report)
    result["unreadable"] = report.unreadable[:20]
    return {**result, "summary": report.summary()}


# --- the table ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobKind:
    name: str
    params: type  # the frozen dataclass of its parameters
    queue: str  # one of QUEUE_NAMES
    service: JobService
    title: Callable[[Any], str]  # params -> what the UI calls the job
    noun: str  # "a <noun> job for project ... is already running"
    exclusive: bool = False  # at most one exclusive job per project queued or running


KINDS: dict[str, JobKind] = {kind.name: kind for kind in (
    JobKind("import", ImportParams, "local", run_import, lambda p: "Import", "import"),
    JobKind("train", TrainParams, "compute", run_train,
            lambda p: "Train on my labels" if p.predict_after else "Train", "training", exclusive=True),
    JobKind("predict", PredictParams, "compute", run_predict, lambda p: "Predict pseudo-labels",
            "prediction", exclusive=True),
    JobKind("export", ExportParams, "local", run_export, lambda p: f"Export ({p.options.fmt})", "export"),
    JobKind("features", FeaturesParams, "compute", run_features, lambda p: "Compute features",
            "feature computation"),
)}
EXCLUSIVE_KINDS = tuple(name for name, kind in KINDS.items() if kind.exclusive)


def kind_of(params: JobParams) -> JobKind:
    """The kind whose parameters ``params`` are."""
    return next(kind for kind in KINDS.values() if isinstance(params, kind.params))


def job_title(job: Job) -> str:
    """What the UI calls the job, e.g. "Train on my labels" or "Export (voc)"."""
    kind = KINDS.get(job.kind)
    if kind is None:
        return job.kind
    try:
        return kind.title(job_params(job))
    except (TypeError, ValueError):  # a row this version cannot read
        return job.kind
