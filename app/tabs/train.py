"""Train screen: one "Train on my labels" button, the mode it will use and why, live job status."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.job_display import job_signature, job_status_markdown, loss_svg, progress_html
from app.polling import follow_jobs, latest_model_job, start_polling
from app.settings import train_defaults
from app.tabs import new_tab
from app.tabs.projects import project_summary
from app.wiring import bind, on
from jobs import submit
from jobs.views import FollowedJobs, JobView, followed_jobs
from services import review, train_plan
from services.context import Studio
from services.errors import UserError
from services.features import prefill_enabled
from services.train_options import MODE_CHOICES, TrainOptions, train_options
from slrnet.config import BACKBONES, DEVICES

logger = logging.getLogger(__name__)


def plan_markdown(
    studio: Studio,
    project: str | None,
    mode: str,
    backbone: str | None = None,
    epochs: float | None = None,
    image_size: float | None = None,
    device: str | None = None,
    minutes: float | None = None,
    continue_model: bool = True,
) -> str:
    """What pressing the button will do: the mode and the reason, the planned epochs, image size
    and estimated duration, or why it cannot train yet."""
    if not project:
        return "Choose a project first."
    try:
        options = _train_options(mode, backbone, epochs, image_size, device, minutes, continue_model)
        preview = train_plan.preview_training(studio, project, options)
    except UserError as exc:
        return f"⚠ {exc}"
    return f"Will train in **{preview.mode}** mode: {preview.reason}.\n\n{_preview_text(preview)}"


def _preview_text(p: train_plan.TrainPlan) -> str:
    text = f"Plan: **{p.epochs} epoch(s)** of {p.images_per_epoch} images at **{p.image_size} px**"
    if p.estimated_s is None:
        text += f" on {p.device}; the duration is measured when it starts"
    else:
        how = {"measured": "measured", "scaled": "from a measured speed", "guessed": "a first guess"}
        text += (f", about **{train_plan.minutes(p.estimated_s)}** of training "
                 f"({p.images_per_s:.1f} images/s, {how.get(p.speed_source, p.speed_source)})")
    text += f", then about {train_plan.minutes(p.predict_s)} to label all {p.predict_images} images"
    text += " (measured)." if p.predict_speed_source == "measured" else " (a first guess)."
    if p.warm_start_from is not None:
        text += f" Continues from model v{p.warm_start_from}."
    return text


def _train_options(mode: str | None, backbone: str | None, epochs: float | None, image_size: float | None,
                   device: str | None, minutes: float | None, continue_model: bool) -> TrainOptions:
    """The Train tab's fields as the options of the preview and of the job."""
    return train_options(mode=mode, backbone=backbone, epochs=epochs, image_size=image_size, device=device,
                         minutes=minutes, continue_model=continue_model)


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
    minutes: float | None = None,
    continue_model: bool = True,
) -> dict[str, Any]:
    """Queue "Train on my labels" and show its first status; the timer follows it from there."""
    if not project:
        raise UserError("choose or create a project first")
    options = _train_options(mode, backbone, epochs, image_size, device, minutes, continue_model)
    job = submit.submit_train_on_my_labels(studio, project, options)
    logger.info("queued training job %d for %r", job.id, project)
    return job_outputs(job)


def prefill_features(studio: Studio, project: str | None, backbone: str | None) -> None:
    """Another backbone was chosen: compute its stored features in the background while the user
    goes on (quietly; a backbone that trains on images ends with nothing to compute)."""
    if not project or not prefill_enabled():
        return
    try:
        submit.submit_features(studio, project, backbone=backbone or None)
    except UserError as exc:
        logger.info("no feature computation for %r: %s", project, exc)


def poll_training(studio: Studio, project: str | None, seen: tuple | None,
                  jobs: FollowedJobs | None = None) -> dict[str, Any]:
    """The training display of the project's newest training job, and the project summary;
    nothing when it did not change since ``seen``. ``jobs``: the poll's, if read."""
    job = (jobs or followed_jobs(studio, project)).model
    if job_signature(job) == seen:
        return {}
    shown = {**job_outputs(job), "summary": project_summary(studio, project)}
    if job is not None and not job.active and _has_model(studio, project):
        shown["warm"] = gr.update(value=True, interactive=True)  # a model now exists to continue from
    return shown


def show_project_training(studio: Studio, project: str | None, mode: str, *options: Any) -> dict[str, Any]:
    """The Train tab of the chosen project: its plan and its newest job (never another project's)."""
    plan = plan_markdown(studio, project, mode, *options)
    return {**job_outputs(latest_model_job(studio, project)), "plan": plan}


def choose_project_training(studio: Studio, project: str | None, mode: str, *options: Any) -> dict[str, Any]:
    """Another project chosen: as :func:`show_project_training`, with "Continue from the current
    model" ticked exactly when the project has a current model."""
    has_model = bool(project) and _has_model(studio, project)
    options = (*options[:5], has_model) if len(options) == 6 else options
    shown = show_project_training(studio, project, mode, *options)
    return {**shown, "warm": gr.update(value=has_model, interactive=has_model)}


def _has_model(studio: Studio, project: str) -> bool:
    try:
        return review.current_model(studio, project) is not None
    except UserError:
        return False


@shows_user_errors
def cancel_training(studio: Studio, project: str | None) -> dict[str, Any]:
    """Cancel the project's running or queued training job."""
    job = latest_model_job(studio, project)
    if job is None or not job.active:
        raise UserError("no training job is running")
    return job_outputs(submit.cancel_job(studio, job.id))


# --- layout and wiring -------------------------------------------------------------------------


def build() -> SimpleNamespace:
    defaults = train_defaults()
    with new_tab("train") as tab:
        plan = gr.Markdown(elem_id="train-plan")
        with gr.Row():
            train_btn = gr.Button("Train on my labels", variant="primary", elem_id="train-btn")
            cancel = gr.Button("Cancel", variant="stop", interactive=False, elem_id="cancel-btn")
        with gr.Accordion("Options", open=False), gr.Row():
            mode = gr.Radio(choices=list(MODE_CHOICES), value=defaults.mode, label="Mode")
            backbone = gr.Dropdown(
                choices=[("default", ""), *[(b, b) for b in BACKBONES]],
                value=defaults.backbone or "",
                label="Backbone",
            )
            epochs = gr.Number(
                value=defaults.epochs, label="Epochs (empty: default)",
                placeholder="default: sized to the minutes", precision=0, elem_id="train-epochs",
            )
            image_size = gr.Number(
                value=defaults.image_size, label="Image size (empty: default)",
                placeholder=f"default: {train_plan.CPU_IMAGE_SIZE} (CPU), {train_plan.GPU_IMAGE_SIZE} (GPU)",
                precision=0, elem_id="train-image-size",
            )
            device = gr.Radio(choices=list(DEVICES), value=defaults.device, label="Device")
        with gr.Row():
            # empty shows the default as a placeholder (a value would be sent as a chosen budget,
            # and a warm start's shorter default round would be lost)
            minutes = gr.Number(
                value=defaults.budget_s / 60 if defaults.budget_s else None,
                label="Minutes of training (empty: default)",
                placeholder=f"default: {train_plan.CPU_TRAIN_BUDGET_S / 60:g} on a CPU, half when continuing",
                elem_id="train-minutes",
            )
            warm = gr.Checkbox(
                value=False, interactive=False, label="Continue from the current model", elem_id="train-warm"
            )
        status = gr.Markdown("No job yet.", elem_id="train-status")
        progress = gr.HTML(elem_id="train-progress")
        loss = gr.HTML(elem_id="loss-plot")
        seen = gr.State(None)
    del defaults
    return SimpleNamespace(**locals())


def views(ui: SimpleNamespace) -> dict[str, Any]:
    """The views this tab's handlers update, by name."""
    t = ui.train
    return {
        "status": t.status,
        "progress": t.progress,
        "loss": t.loss,
        "cancel": t.cancel,
        "seen": t.seen,
        "plan": t.plan,
        "warm": t.warm,
        "summary": ui.summary,
    }


def wire(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    t = ui.train
    options = inputs(ui)
    for option in options[1:]:
        option.change(bind(plan_markdown, studio), options, [t.plan], show_progress="hidden")
    t.backbone.change(bind(prefill_features, studio), [ui.project, t.backbone], None, show_progress="hidden")
    started = on(t.train_btn.click, start_training, options, views.train, studio)
    started.success(start_polling, None, [ui.timer])
    on(t.cancel.click, cancel_training, [ui.project], views.train, studio)
    shown = on(t.tab.select, show_project_training, options, views.train, studio)
    shown.then(bind(follow_jobs, studio), ui.followed, [ui.timer])


def inputs(ui: SimpleNamespace) -> list[Any]:
    """The project and the Train tab's options, in the order the train handlers take them."""
    t = ui.train
    return [ui.project, t.mode, t.backbone, t.epochs, t.image_size, t.device, t.minutes, t.warm]
