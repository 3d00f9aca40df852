"""Export screen: COCO / VOC / Label Studio buttons; the finished export becomes a download (VOC
zipped)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.job_display import job_signature, job_status_markdown, progress_html
from app.polling import start_polling
from app.tabs import new_tab
from app.wiring import on
from jobs import submit
from jobs.views import FollowedJobs, JobView, followed_jobs
from services.context import Studio
from services.errors import UserError
from services.exporting import ExportOptions
from services.formats.exporters import EXPORTERS

logger = logging.getLogger(__name__)


def download_paths(job: JobView) -> list[str] | None:
    """The files to download for a finished export job: the COCO JSON and its ``_results.json``
    (the same regions as COCO results, with scores), or a zip of the VOC folder."""
    path = download_path(job)
    if path is None:
        return None
    options = job.params.get("options") or job.params  # flat in rows of an older version
    exporter = EXPORTERS.get(str(options.get("fmt")))
    beside = exporter.beside(path) if exporter is not None and not exporter.folder else []
    return [str(f) for f in (path, *beside) if f.is_file()]


def download_path(job: JobView) -> Path | None:
    """The main file to download for a finished export job: the COCO JSON, or a zip of the VOC
    folder (made once, beside it)."""
    if job.status != "succeeded":
        return None
    out = Path(job.result.get("out") or job.params.get("out", ""))
    if out.is_file():
        return out
    if out.is_dir():
        archive = out.with_suffix(".zip")
        if not archive.is_file():
            tmp = Path(shutil.make_archive(str(out.with_name(f".{out.name}.tmp")), "zip", root_dir=out))
            tmp.replace(archive)
            logger.info("zipped export %s", archive)
        return archive
    logger.warning("export job %d succeeded but %s is missing", job.id, out)
    return None


@shows_user_errors
def start_export(
    studio: Studio, fmt: str, project: str | None, source: str
) -> dict[str, Any]:
    """Queue an export as ``fmt`` ("coco" / "voc" / "label-studio"); the download shows once it has
    finished."""
    if not project:
        raise UserError("choose a project first")
    job = submit.submit_export(studio, project, options=ExportOptions(fmt=fmt, source=source or "best"))
    return {
        "status": job_status_markdown(job),
        "progress": progress_html(job),
        "download": download_paths(job),
        "job": job.id,
        "seen": job_signature(job),
    }


def poll_export(studio: Studio, job_id: int | None, seen: tuple | None,
                followed: FollowedJobs | None = None) -> dict[str, Any]:
    """Timer tick: the status, progress and download of the export started here, when changed.
    ``followed``: the poll's jobs, if read."""
    if job_id is None:
        return {}
    job = (followed or followed_jobs(studio, None, export_id=job_id)).export
    if job is None:
        return {}
    signature = job_signature(job)
    if signature == seen:
        return {}
    return {
        "status": job_status_markdown(job),
        "progress": progress_html(job),
        "download": download_paths(job),
        "seen": signature,
    }


# --- layout and wiring -------------------------------------------------------------------------


def build() -> SimpleNamespace:
    with new_tab("export"):
        source = gr.Radio(
            choices=[
                ("masks, else pseudo-labels", "best"),
                ("masks only", "human"),
                ("pseudo-labels only", "model"),
            ],
            value="best",
            label="Labels to export",
            elem_id="export-source",
        )
        with gr.Row():
            coco_btn = gr.Button("Export COCO (JSON, RLE masks)", variant="primary", elem_id="export-coco")
            voc_btn = gr.Button("Export VOC (zip of PNGs)", elem_id="export-voc")
            label_studio_btn = gr.Button("Export Label Studio (tasks JSON)", elem_id="export-label-studio")
        status = gr.Markdown(elem_id="export-status")
        progress = gr.HTML(elem_id="export-progress")
        download = gr.File(label="Download", interactive=False, file_count="multiple", elem_id="download")
        job = gr.State(None)
        seen = gr.State(None)
    return SimpleNamespace(**locals())


def wire(studio: Studio, ui: SimpleNamespace) -> None:
    e = ui.export
    outputs = {
        "status": e.status,
        "progress": e.progress,
        "download": e.download,
        "job": e.job,
        "seen": e.seen,
    }
    for button, fmt in ((e.coco_btn, "coco"), (e.voc_btn, "voc"), (e.label_studio_btn, "label-studio")):
        started = on(
            button.click, start_export, [ui.project, e.source], outputs, studio, fmt
        )
        started.success(start_polling, None, [ui.timer])
