"""Train screen: one "Train on my labels" button, the mode it will use and why, live job status."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.handlers_projects import project_summary
from app.job_display import job_signature, job_status_markdown, loss_frame, progress_html
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


def job_outputs(job: JobView | None) -> tuple[str, str, Any, Any]:
    """(status markdown, progress bar, loss plot value, cancel button update) of a job."""
    return (
        job_status_markdown(job),
        progress_html(job),
        loss_frame(job),
        gr.update(interactive=bool(job and job.can_cancel)),
    )


@shows_user_errors
def start_training(
    studio: Studio,
    project: str | None,
    mode: str,
    backbone: str | None,
    epochs: float | None,
    image_size: float | None,
    device: str | None = None,
) -> tuple[str, str, Any, Any, tuple | None]:
    """Queue "Train on my labels" and show its first status; the timer follows it from there."""
    if not project:
        raise UserError("choose or create a project first")
    plan = train_plan.plan_training(studio, project, mode or "auto")
    job = submit.submit_train_on_my_labels(
        studio,
        project,
        mode=mode or "auto",
        backbone=backbone or None,
        epochs=_optional_int(epochs, "epochs"),
        image_size=_optional_int(image_size, "image size"),
        device=device or "auto",
    )
    logger.info("queued training job %d for %r in %s mode", job.id, project, plan.mode)
    return (*job_outputs(job), job_signature(job))


def poll_training(studio: Studio, project: str | None, seen: tuple | None) -> tuple:
    """Timer tick: (job display..., seen, project summary), redrawn only when the newest
    training job of the project changed."""
    job = latest_model_job(studio, project)
    signature = job_signature(job)
    if signature == seen:
        return (gr.skip(),) * 6
    return (*job_outputs(job), signature, project_summary(studio, project))


@shows_user_errors
def cancel_training(studio: Studio, project: str | None) -> tuple[str, str, Any, Any, tuple | None]:
    """Cancel the project's running or queued training job."""
    job = latest_model_job(studio, project)
    if job is None or not job.active:
        raise UserError("no training job is running")
    job = submit.cancel_job(studio, job.id)
    return (*job_outputs(job), job_signature(job))
