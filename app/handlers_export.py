"""Export screen: COCO / VOC buttons; the finished export becomes a download (VOC zipped)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import gradio as gr

from app.errors import shows_user_errors
from app.job_display import job_signature, job_status_markdown, progress_html
from jobs import submit
from jobs.views import JobView, get_job
from services.context import Studio
from services.errors import UserError

logger = logging.getLogger(__name__)


def download_path(job: JobView) -> Path | None:
    """The file to download for a finished export job: the COCO JSON, or a zip of the VOC folder
    (made once, beside it)."""
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
) -> tuple[str, str, str | None, int, tuple | None]:
    """Queue an export as ``fmt`` ("coco" / "voc"); returns (status, progress, download (when it
    already finished), job id, seen)."""
    if not project:
        raise UserError("choose a project first")
    job = submit.submit_export(studio, project, fmt=fmt, source=source or "best")
    path = download_path(job)
    return (
        job_status_markdown(job),
        progress_html(job),
        str(path) if path else None,
        job.id,
        job_signature(job),
    )


def poll_export(studio: Studio, job_id: int | None, seen: tuple | None) -> tuple:
    """Timer tick: (status, progress, download file, seen) of the export started here."""
    if job_id is None:
        return gr.skip(), gr.skip(), gr.skip(), seen
    job = get_job(studio, job_id)
    signature = job_signature(job)
    if signature == seen:
        return gr.skip(), gr.skip(), gr.skip(), seen
    path = download_path(job)
    return job_status_markdown(job), progress_html(job), (str(path) if path else None), signature
