"""How a background job looks in the UI: status line, progress bar, ETA and loss curve."""

from __future__ import annotations

import html

import pandas as pd

from jobs.views import JobView

CURVE_AXES = ("fraction", "epoch", "step")


def format_eta(seconds: float | None) -> str:
    """``"about 3 min left"``-style text; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


def job_status_markdown(job: JobView | None) -> str:
    """Status, message, error and ETA of a job in one or two lines of markdown."""
    if job is None:
        return "No job yet."
    lines = [f"**{job.title}** (job {job.id}): {job.status}"]
    if job.cancel_requested and job.active:
        lines[0] += ", cancelling…"
    if job.message:
        lines.append(html.escape(job.message))
    if job.error and job.status == "failed":
        lines.append(f"Error: {html.escape(job.error)}")
    eta = format_eta(job.eta_s)
    if eta:
        lines.append(eta)
    return "  \n".join(lines)


def progress_html(job: JobView | None) -> str:
    """A progress bar (plain HTML, so it shows in any theme)."""
    fraction = 0.0 if job is None else min(max(job.progress, 0.0), 1.0)
    state = "idle" if job is None else job.status
    return (
        f'<div class="job-progress {state}" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        f'aria-valuenow="{fraction * 100:.0f}"><div class="job-progress-fill" '
        f'style="width:{fraction * 100:.1f}%"></div><span>{fraction:.0%}</span></div>'
    )


def loss_frame(job: JobView | None) -> pd.DataFrame:
    """The job's loss curve in long form: columns ``x`` (step, else job fraction), ``loss``, ``term``."""
    rows = []
    for i, point in enumerate(job.loss_curve if job is not None else []):
        x = point.get("step", point.get("fraction", i))
        for term, value in point.items():
            if term not in CURVE_AXES and isinstance(value, int | float):
                rows.append({"x": float(x), "loss": float(f"{value:.4g}"), "term": term})
    frame = pd.DataFrame(rows, columns=["x", "loss", "term"])
    # typed even when empty: the plot infers its axes from the first value it gets
    return frame.astype({"x": "float64", "loss": "float64", "term": "str"})


def job_signature(job: JobView | None) -> tuple | None:
    """What changes when a job's display must change (to skip redrawing on every poll)."""
    if job is None:
        return None
    return (
        job.id,
        job.status,
        round(job.progress, 3),
        job.message,
        len(job.loss_curve),
        job.cancel_requested,
    )
