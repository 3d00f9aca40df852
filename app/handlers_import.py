"""Import screen: upload images or a zip, or name a folder on the server; follow the import jobs."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.handlers_projects import project_summary
from app.job_display import job_signature, job_status_markdown, progress_html
from jobs import submit
from jobs.views import JobView, get_job
from services.context import Studio
from services.errors import UserError
from storage.files import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"


def _paths(files: Sequence[Any] | None) -> list[Path]:
    """Paths of gr.File values (str paths, or objects with ``.name`` / ``.path``)."""
    out = []
    for f in files or []:
        path = f if isinstance(f, str | Path) else getattr(f, "path", None) or getattr(f, "name", None)
        if path:
            out.append(Path(path))
    return out


def stage_uploads(studio: Studio, files: Sequence[Any] | None) -> list[Path]:
    """Copy uploaded files under ``<data dir>/uploads/<id>/`` (they must outlive the browser's
    upload cache until the import job has run): loose images go into one folder, each zip stays
    a zip. Returns what to import: the folder (if any images) and the zips."""
    paths = _paths(files)
    if not paths:
        raise UserError("choose some images or a .zip to upload first")
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    zips = [p for p in paths if p.suffix.lower() == ".zip"]
    others = [p.name for p in paths if p not in images and p not in zips]
    if others:
        raise UserError(f"not an image or a .zip: {', '.join(others[:5])}")
    target = studio.data_dir / UPLOADS_DIR / uuid.uuid4().hex
    sources: list[Path] = []
    if images:
        folder = target / "images"
        folder.mkdir(parents=True)
        for path in images:
            shutil.copyfile(path, folder / path.name)
        sources.append(folder)
    for path in zips:
        target.mkdir(parents=True, exist_ok=True)
        sources.append(Path(shutil.copyfile(path, target / path.name)))
    return sources


def discard_staged_upload(studio: Studio, job: JobView) -> None:
    """Delete the staged copy of an upload once its import job has ended (the images are in the
    store by then, or the import failed and the user uploads again)."""
    if job.active or job.kind != "import":
        return
    uploads = (studio.data_dir / UPLOADS_DIR).resolve()
    source = Path(job.params.get("path", "")).resolve()
    if source.is_relative_to(uploads) and source != uploads:
        staged = uploads / source.relative_to(uploads).parts[0]
        shutil.rmtree(staged, ignore_errors=True)
        logger.debug("removed staged upload %s", staged)


def import_status(jobs: Sequence[JobView]) -> tuple[str, str]:
    """(markdown lines for the jobs, progress bar of the newest)."""
    if not jobs:
        return "No import yet.", progress_html(None)
    return "\n\n".join(job_status_markdown(j) for j in jobs), progress_html(jobs[-1])


@shows_user_errors
def import_uploads(
    studio: Studio, project: str | None, files: Sequence[Any] | None
) -> tuple[str, str, list[int]]:
    """Queue an import of the uploaded images / zips into the chosen project."""
    if not project:
        raise UserError("choose or create a project first")
    jobs = [submit.submit_import(studio, source, project) for source in stage_uploads(studio, files)]
    logger.info("queued import jobs %s into %r", [j.id for j in jobs], project)
    return (*import_status(jobs), [j.id for j in jobs])


def _optional_path(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


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
    """Queue an import of a folder (or .zip) on the server, with optional label files."""
    if not project:
        raise UserError("choose or create a project first")
    if not folder or not folder.strip():
        raise UserError("type the path of a folder or .zip on the server")
    job = submit.submit_import(
        studio,
        folder.strip(),
        project,
        classes_file=_optional_path(classes_file),
        tags_csv=_optional_path(tags_csv),
        masks_dir=_optional_path(masks_dir),
        coco_json=_optional_path(coco_json),
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
    for job in jobs:
        discard_staged_upload(studio, job)
    return (*import_status(jobs), signature, project_summary(studio, project))
