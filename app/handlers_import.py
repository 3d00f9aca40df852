"""Import screen: upload images or a zip, or name a folder on the server; follow the import jobs.

An upload is one import job (all or nothing) whose staged copy the job itself deletes when it
ends; folders on the server only from under ``studio.import_roots``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.handlers_projects import project_summary
from app.job_display import job_signature, job_status_markdown, progress_html
from jobs import submit
from jobs.views import JobView, get_job
from services import importing
from services.context import Studio
from services.errors import UserError
from services.import_sources import check_server_path

logger = logging.getLogger(__name__)


def _paths(files: Sequence[Any] | None) -> list[Path]:
    """Paths of gr.File values (str paths, or objects with ``.name`` / ``.path``)."""
    out = []
    for f in files or []:
        path = f if isinstance(f, str | Path) else getattr(f, "path", None) or getattr(f, "name", None)
        if path:
            out.append(Path(path))
    return out


def import_status(jobs: Sequence[JobView]) -> tuple[str, str]:
    """(markdown lines for the jobs, progress bar of the newest)."""
    if not jobs:
        return "No import yet.", progress_html(None)
    return "\n\n".join(job_status_markdown(j) for j in jobs), progress_html(jobs[-1])


@shows_user_errors
def import_uploads(
    studio: Studio, project: str | None, files: Sequence[Any] | None
) -> tuple[str, str, list[int]]:
    """Queue one import of everything uploaded (images and zips, all or nothing) into the chosen
    project; the job deletes its staged copy of the files when it ends."""
    if not project:
        raise UserError("choose or create a project first")
    staged = importing.stage_upload(studio, _paths(files))
    try:
        job = submit.submit_import(studio, staged, project)
    except BaseException:
        importing.discard_upload(studio, staged)
        raise
    logger.info("queued import job %d into %r", job.id, project)
    return (*import_status([job]), [job.id])


def _server_path(studio: Studio, value: str | None, what: str) -> str | None:
    """A path typed in the UI, if given: resolved, and only under the server's import roots."""
    if not value or not value.strip():
        return None
    return str(check_server_path(studio.import_roots, value, what))


@shows_user_errors
def import_folder(
    studio: Studio,
    project: str | None,
    folder: str,
    classes_file: str | None,
    tags_csv: str | None,
    masks_dir: str | None,
    coco_json: str | None,
) -> tuple[str, str, list[int]]:
    """Queue an import of a folder (or .zip) on the server, with optional label files: only from
    under the server's import roots (``studio.import_roots``; none: the UI hides this)."""
    if not project:
        raise UserError("choose or create a project first")
    if not folder or not folder.strip():
        raise UserError("type the path of a folder or .zip on the server")
    job = submit.submit_import(
        studio,
        _server_path(studio, folder, "folder or .zip"),
        project,
        classes_file=_server_path(studio, classes_file, "class file"),
        tags_csv=_server_path(studio, tags_csv, "tags CSV"),
        masks_dir=_server_path(studio, masks_dir, "masks folder"),
        coco_json=_server_path(studio, coco_json, "COCO file"),
    )
    return (*import_status([job]), [job.id])


def poll_imports(studio: Studio, project: str | None, job_ids: list[int] | None, seen: tuple | None) -> tuple:
    """Timer tick: (status, progress, seen, project summary) of the imports started here;
    skips redrawing when nothing changed."""
    if not job_ids:
        return gr.skip(), gr.skip(), seen, gr.skip()
    jobs = [get_job(studio, i) for i in job_ids]
    signature = tuple(job_signature(j) for j in jobs)
    if signature == seen:
        return gr.skip(), gr.skip(), seen, gr.skip()
    return (*import_status(jobs), signature, project_summary(studio, project))
