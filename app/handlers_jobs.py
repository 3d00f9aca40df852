"""The one timer that follows background jobs (training, imports, exports) while any is active.

Every finished event makes Gradio re-send the page's component state, and the image editor then
fetches its picture again, so the timer only ticks while a followed job is queued or running.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.handlers_export import poll_export
from app.handlers_import import poll_imports
from app.handlers_train import latest_model_job, poll_training
from jobs.views import get_job
from services.context import Studio


def any_active(
    studio: Studio, project: str | None, import_jobs: list[int] | None, export_job: int | None
) -> bool:
    """Whether a job the page follows is still queued or running."""
    model_job = latest_model_job(studio, project)
    followed = [get_job(studio, i) for i in [*(import_jobs or []), *([export_job] if export_job else [])]]
    return bool(model_job and model_job.active) or any(j.active for j in followed)


def poll_jobs(
    studio: Studio,
    project: str | None,
    train_seen: tuple | None,
    import_jobs: list[int] | None,
    import_seen: tuple | None,
    export_job: int | None,
    export_seen: tuple | None,
) -> dict[str, Any]:
    """Timer tick: what changed of the training (``train_*``), import (``import_*``) and export
    (``export_*``) displays, the project summary, and whether the timer keeps ticking."""
    training = poll_training(studio, project, train_seen)
    out: dict[str, Any] = {f"train_{k}": v for k, v in training.items() if k != "summary"}
    if "summary" in training:
        out["summary"] = training["summary"]
    imports = poll_imports(studio, project, import_jobs, import_seen)
    if imports[0] != gr.skip():
        out.update(import_status=imports[0], import_progress=imports[1], summary=imports[3])
    out["import_seen"] = imports[2]
    out.update({f"export_{k}": v for k, v in poll_export(studio, export_job, export_seen).items()})
    out["timer"] = gr.Timer(active=any_active(studio, project, import_jobs, export_job))
    return out


def start_polling() -> Any:
    """Right after a job was started: tick until the next poll has shown how it stands (a quick
    job may already have finished, and its result still has to be shown)."""
    return gr.Timer(active=True)


def follow_jobs(
    studio: Studio, project: str | None, import_jobs: list[int] | None, export_job: int | None
) -> Any:
    """Start ticking when a followed job is active, e.g. when the page opens or the Train tab is
    shown. Never stops the timer (``gr.skip()``): a job queued by a click while this ran would
    otherwise go unfollowed; :func:`poll_jobs` stops it once nothing is active."""
    return gr.Timer(active=True) if any_active(studio, project, import_jobs, export_job) else gr.skip()
