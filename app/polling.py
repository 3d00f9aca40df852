"""The one timer that follows background jobs (training, imports, exports) while any is active.

Every finished event makes Gradio re-send the page's component state, and the image editor then
fetches its picture again, so the timer only ticks while a followed job is queued or running.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from jobs.views import JobView, followed_jobs
from services.context import Studio


def latest_model_job(studio: Studio, project: str | None) -> JobView | None:
    """The project's newest training or prediction job."""
    return followed_jobs(studio, project).model


def any_active(
    studio: Studio, project: str | None, import_jobs: list[int] | None, export_job: int | None
) -> bool:
    """Whether a job the page follows is still queued or running (with imports followed: the
    feature computation they queue too)."""
    return followed_jobs(studio, project, import_jobs, export_job).active


def start_polling() -> Any:
    """Right after a job was started: tick until the next poll has shown how it stands (a quick
    job may already have finished, and its result still has to be shown)."""
    return gr.Timer(active=True)


def follow_jobs(
    studio: Studio, project: str | None, import_jobs: list[int] | None, export_job: int | None
) -> Any:
    """Start ticking when a followed job is active, e.g. when the page opens or the Train tab is
    shown. Never stops the timer (``gr.skip()``): a job queued by a click while this ran would
    otherwise go unfollowed; :func:`app.ui.poll_jobs` stops it once nothing is active."""
    return gr.Timer(active=True) if any_active(studio, project, import_jobs, export_job) else gr.skip()
