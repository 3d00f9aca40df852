"""What each kind of job runs: the job row's params in, a service call, a result dict out.

Each function has the :data:`jobs.runner.JobService` signature. The services that need torch are
imported when a job runs, never when this module is imported (the UI imports it indirectly).

A ``train`` job with ``predict_after`` (the UI's "Train on my labels") is one job with two phases:
training reports progress 0..``TRAIN_SHARE``, predicting the pseudo-labels of every image
``TRAIN_SHARE``..1. The new model becomes current only when the predict phase publishes it, so a
job that is cancelled, fails or is interrupted never shows a half-finished model's labels.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from services.progress import ProgressFn, StopFn
from storage import jobs as job_rows
from storage.models import Job

if TYPE_CHECKING:
    from services.context import Studio

TRAIN_SHARE = 0.8
TRAIN_OPTIONS = ("mode", "backbone", "epochs", "image_size", "device", "seed",
                 "train_overrides", "model_overrides")


def _service(name: str) -> ModuleType:
    """A service module, imported on first use (``services.training`` pulls in torch)."""
    return importlib.import_module(name)


def phase_progress(progress: ProgressFn, start: float, end: float, phase: str) -> ProgressFn:
    """A progress callback mapping a phase's 0..1 onto ``start..end`` of the job, tagged with the phase."""

    def report(fraction: float, message: str, metrics: dict[str, Any] | None = None) -> None:
        progress(start + (end - start) * fraction, f"{phase}: {message}", {**(metrics or {}), "phase": phase})

    return report


def run_train(studio: Studio, job: Job, progress: ProgressFn, should_stop: StopFn) -> dict[str, Any]:
    """Train on the project's labels (auto mode by default); with ``predict_after``, then predict."""
    training = _service("services.training")
    params = job.params
    project = params["project"]
    predict_after = bool(params.get("predict_after", True))
    options = {k: v for k, v in params.get("options", {}).items() if k in TRAIN_OPTIONS}
    train_end = TRAIN_SHARE if predict_after else 1.0
    result: dict[str, Any] = {}

    with studio.Session.begin() as session:
        earlier = job_rows.latest_run_of_job(session, job.id)
        trained = earlier is not None and earlier.status in ("trained", "published")
        run_id, version = (earlier.id, earlier.version) if trained else (None, None)
    if trained:
        # An earlier attempt of this job finished training and was interrupted while predicting.
        progress(train_end, f"model version {version} already trained; predicting", {"run_id": run_id})
    else:
        trained_run = training.train(
            studio, project, **options, resume=True, job_id=job.id,
            progress=phase_progress(progress, 0.0, train_end, "training"), should_stop=should_stop,
        )
        run_id, version = trained_run.run_id, trained_run.version
        result.update(mode=trained_run.mode, mode_reason=trained_run.reason, epochs=trained_run.epochs,
                      resumed_from_epoch=trained_run.resumed_from_epoch)
    result.update(run_id=run_id, version=version)
    if not predict_after:
        result["summary"] = f"model version {version} trained; run predict to publish its pseudo-labels"
        return result

    predicted = training.predict(
        studio, project, run_id=run_id, device=options.get("device", "auto"), job_id=job.id,
        progress=phase_progress(progress, train_end, 1.0, "predicting"), should_stop=should_stop,
    )
    result.update(images=predicted.images, mean_score=predicted.mean_score)
    result["summary"] = (f"model version {version} trained and published: pseudo-labels for "
                         f"{predicted.images} images (mean confidence {predicted.mean_score:.2f})")
    return result


def run_predict(studio: Studio, job: Job, progress: ProgressFn, should_stop: StopFn) -> dict[str, Any]:
    """Pseudo-labels of every image with a trained model (default: the newest), then publish it."""
    training = _service("services.training")
    params = job.params
    predicted = training.predict(
        studio, params["project"], run_id=params.get("run_id"), device=params.get("device", "auto"),
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
    """Export the project's labels to ``params['out']``."""
    exporting = _service("services.exporting")
    params = job.params
    report = exporting.export_project(
        studio, params["project"], params["out"], fmt=params.get("fmt", "coco"),
        source=params.get("source", "best"), palette=bool(params.get("palette", False)),
        progress=progress, should_stop=should_stop,
    )
    return {**report.as_dict(), "summary": report.summary()}


IMPORT_OPTIONS = ("classes_file", "has_background", "tags_csv", "masks_dir", "coco_json", "max_pixels")


def run_import(studio: Studio, job: Job, progress: ProgressFn, should_stop: StopFn) -> dict[str, Any]:
    """Import ``params['path']`` (a folder or .zip) into the project, creating it if needed."""
    importing = _service("services.importing")
    params = job.params
    options = {k: v for k, v in params.get("options", {}).items() if k in IMPORT_OPTIONS}
    report = importing.import_dataset(
        studio, params["path"], project=params["project"], **options,
        progress=progress, should_stop=should_stop,
    )
    if report.project_id:
        with studio.Session.begin() as session:
            job_rows.set_job_project(session, job.id, report.project_id)
    return {**dataclasses.asdict(report), "summary": report.summary()}


JOB_SERVICES = {
    "import": run_import,
    "train": run_train,
    "predict": run_predict,
    "export": run_export,
}
