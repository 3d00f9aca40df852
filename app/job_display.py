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


CHART_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
CHART_W, CHART_H, CHART_PAD = 640, 240, 36


LEGEND_CHAR_W, LEGEND_GAP, LEGEND_ROW_H = 6.5, 14, 14  # px at font-size 11 (a generous average)


def legend_places(terms: list[str]) -> list[tuple[float, int]]:
    """(x, baseline y) of each legend entry: left to right by its text's width, wrapping onto a
    second row above the plot when the chart is too narrow (entries never overlap)."""
    start, right = CHART_PAD + 8, CHART_W - 8
    x, y, places = float(start), 14, []
    for term in terms:
        width = LEGEND_CHAR_W * (len(term) + 2)
        if x > start and x + width > right:
            x, y = float(start), y + LEGEND_ROW_H
        places.append((x, y))
        x += width + LEGEND_GAP
    return places


def loss_svg(job: JobView | None) -> str:
    """The job's loss curve as an inline SVG line chart, one path per loss term with a legend.

    Plain SVG drawn on the server: it shows the moment the poll delivers it, whichever tab is
    visible (the Vega plot drew nothing while its tab was hidden or its data arrived empty)."""
    frame = loss_frame(job)
    if frame.empty:
        return '<div class="loss-chart empty">No loss values yet.</div>'
    x0, x1 = float(frame["x"].min()), float(frame["x"].max())
    y0, y1 = min(0.0, float(frame["loss"].min())), float(frame["loss"].max())
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    width, height = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD

    def point(x: float, y: float) -> str:
        px = CHART_PAD + (x - x0) / (x1 - x0) * width
        py = CHART_PAD + (1 - (y - y0) / (y1 - y0)) * height
        return f"{px:.1f},{py:.1f}"

    paths, legend = [], []
    groups = list(frame.groupby("term", sort=False))
    places = legend_places([str(term) for term, _ in groups])
    for k, (term, rows) in enumerate(groups):
        color = CHART_COLORS[k % len(CHART_COLORS)]
        points = [point(x, y) for x, y in zip(rows["x"], rows["loss"], strict=True)]
        d = "M" + " L".join(points) if len(points) > 1 else f"M{points[0]} l1,0"
        paths.append(
            f'<path class="loss-line" data-term="{html.escape(str(term))}" d="{d}" fill="none" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        legend.append(
            f'<text x="{places[k][0]:.0f}" y="{places[k][1]}" fill="{color}" font-size="11">'
            f"■ {html.escape(str(term))}</text>"
        )
    left, right, top, bottom = CHART_PAD, CHART_PAD + width, CHART_PAD, CHART_PAD + height
    axes = (
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#888"/>'
        f'<text x="4" y="{top + 4}" font-size="11" fill="#666">{y1:.3g}</text>'
        f'<text x="4" y="{bottom}" font-size="11" fill="#666">{y0:.3g}</text>'
        f'<text x="{right - 60}" y="{CHART_H - 8}" font-size="11" fill="#666">step {x1:.0f}</text>'
    )
    return (
        f'<svg class="loss-chart" viewBox="0 0 {CHART_W} {CHART_H}" width="100%" role="img" '
        f'aria-label="loss curve">{axes}{"".join(paths)}{"".join(legend)}</svg>'
    )
