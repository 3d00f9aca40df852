"""Train screen: one "Train on my labels" button, the mode it will use and why, live job status."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.handlers_projects import project_summary
from app.job_display import job_signature, job_status_markdown, loss_svg, progress_html
from jobs import submit
from jobs.views import JobView, list_jobs
from services import train_plan
from services.context import Studio
from services.errors import UserError

logger = logging.getLogger(__name__)

MODEL_KINDS = ("train", "predict")


def latest_model_job(studio: Studio, project: str | None) -> JobView | None:
    """The project's newest training or prediction job."""
    if not project:
        return None
    return next((j for j in list_jobs(studio, project, limit=20) if j.kind in MODEL_KINDS), None)


def plan_markdown(studio: Studio, project: str | None, mode: str) -> str:
    """What pressing the button will do: the mode and the reason, or why it cannot train yet."""
    if not project:
        return "Choose a project first."
    try:
        plan = train_plan.plan_training(studio, project, mode or "auto")
    except UserError as exc:
        return f"⚠ {exc}"
    return f"Will train in **{plan.mode}** mode: {plan.reason}."


def _optional_int(value: float | None, name: str) -> int | None:
    if value is None or value == "" or value == 0:
        return None
    if value < 0 or int(value) != value:
        raise UserError(f"{name} must be a positive whole number")
    return int(value)


def job_outputs(job: JobView | None) -> dict[str, Any]:
    """The training display of a job: status, progress bar, loss chart, cancel button, seen."""
    return {
        "status": job_status_markdown(job),
        "progress": progress_html(job),
        "loss": loss_svg(job),
        "cancel": gr.update(interactive=bool(job and job.can_cancel)),
        "seen": job_signature(job),
    }


@shows_user_errors
def start_training(
    studio: Studio,
    project: str | None,
    mode: str,
    backbone: str | None,
    epochs: float | None,
    image_size: float | None,
    device: str | None = None,
) -> dict[str, Any]:
    """Queue "Train on my labels" and show its first status; the timer follows it from there."""
    if not project:
        raise UserError("choose or create a project first")
    job = submit.submit_train_on_my_labels(
        studio,
        project,
        mode=mode or "auto",
        backbone=backbone or None,
        epochs=_optional_int(epochs, "epochs"),
        image_size=_optional_int(image_size, "image size"),
        device=device or "auto",
    )
    logger.info("queued training job %d for %r", job.id, project)
    return job_outputs(job)


def poll_training(studio: Studio, project: str | None, seen: tuple | None) -> dict[str, Any]:
    """The training display of the project's newest training job, and the project summary;
    nothing when it did not change since ``seen``."""
    job = latest_model_job(studio, project)
    if job_signature(job) == seen:
        return {}
    return {**job_outputs(job), "summary": project_summary(studio, project)}


def show_project_training(studio: Studio, project: str | None, mode: str) -> dict[str, Any]:
    """The Train tab of the chosen project: its plan and its newest job (never another project's)."""
    return {**job_outputs(latest_model_job(studio, project)), "plan": plan_markdown(studio, project, mode)}


@shows_user_errors
def cancel_training(studio: Studio, project: str | None) -> dict[str, Any]:
    """Cancel the project's running or queued training job."""
    job = latest_model_job(studio, project)
    if job is None or not job.active:
        raise UserError("no training job is running")
    return job_outputs(submit.cancel_job(studio, job.id))
