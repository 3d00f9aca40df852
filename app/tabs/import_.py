"""Import screen: upload images or a zip, or name a folder on the server; follow the import jobs.

An upload is one import job (all or nothing) whose staged copy the job itself deletes when it
ends; folders on the server only from under ``studio.import_roots``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.job_display import job_signature, job_status_markdown, progress_html
from app.polling import start_polling
from app.tabs import new_tab
from app.tabs.projects import project_summary
from app.wiring import bind
from jobs import submit
from jobs.views import FollowedJobs, JobView, features_line, followed_jobs
from services.context import Studio
from services.errors import UserError
from services.import_options import ImportOptions
from services.import_sources import check_server_path
from services.uploads import discard_upload, stage_upload

logger = logging.getLogger(__name__)

_IMPORT_BUTTONS_JS = (
    "() => { for (const id of ['import-upload', 'import-folder-btn']) { "
    "const b = document.getElementById(id); if (b) b.disabled = %s; } return []; }"
)
DISABLE_IMPORT_JS = _IMPORT_BUTTONS_JS % "true"
# Gradio does not touch a button it already thinks interactive, so what the browser disabled
# the browser enables again
ENABLE_IMPORT_JS = _IMPORT_BUTTONS_JS % "false"


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
    staged = stage_upload(studio, _paths(files))
    try:
        job = submit.submit_import(studio, staged, project)
    except BaseException:
        discard_upload(studio, staged)
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
    label_studio_json: str | None = None,
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
        ImportOptions(
            classes_file=_server_path(studio, classes_file, "class file"),
            tags_csv=_server_path(studio, tags_csv, "tags CSV"),
            masks_dir=_server_path(studio, masks_dir, "masks folder"),
            coco_json=_server_path(studio, coco_json, "COCO file"),
            label_studio_json=_server_path(studio, label_studio_json, "Label Studio export"),
            within=tuple(str(root) for root in studio.import_roots),
        ),
    )
    return (*import_status([job]), [job.id])


def poll_imports(studio: Studio, project: str | None, job_ids: list[int] | None, seen: tuple | None,
                 followed: FollowedJobs | None = None) -> tuple:
    """Timer tick: (status, progress, seen, project summary) of the imports started here;
    skips redrawing when nothing changed. ``followed``: the poll's jobs, if read."""
    if not job_ids:
        return gr.skip(), gr.skip(), seen, gr.skip()
    followed = followed or followed_jobs(studio, project, job_ids)
    jobs = list(followed.imports)
    features = features_line(studio, project, followed)  # the fill an import queues
    signature = (*(job_signature(j) for j in jobs), features)
    if signature == seen:
        return gr.skip(), gr.skip(), seen, gr.skip()
    status, bar = import_status(jobs)
    if features:
        status += f"\n\n{features}"
    return status, bar, signature, project_summary(studio, project)


# --- layout and wiring -------------------------------------------------------------------------


def build(server_folders: bool) -> SimpleNamespace:
    """The Import tab; the server-folder column only when the server has import roots (a web user
    may name paths under them alone), else a line saying how to allow it."""
    with new_tab("import"):
        with gr.Row():
            with gr.Column():
                uploads = gr.File(
                    label="Images or .zip files",
                    file_count="multiple",
                    file_types=["image", ".zip"],
                    elem_id="upload-files",
                )
                upload_btn = gr.Button("Import uploaded files", variant="primary", elem_id="import-upload")
            with gr.Column(visible=server_folders, elem_id="import-folder-column"):
                folder = gr.Textbox(
                    label="…or a folder / .zip on the server",
                    placeholder="/data/photos",
                    elem_id="import-folder",
                )
                with gr.Accordion("Labels to import with it (optional)", open=False):
                    classes_file = gr.Textbox(label="Class file (one name per line)")
                    tags_csv = gr.Textbox(label="Tags CSV (image,tags with ; between tags)")
                    masks_dir = gr.Textbox(label="Masks folder (PNG class indices, 255 = unknown)")
                    coco_json = gr.Textbox(label="COCO instances JSON")
                    label_studio_json = gr.Textbox(label="Label Studio JSON export (tasks with annotations)")
                folder_btn = gr.Button("Import folder", elem_id="import-folder-btn")
        if not server_folders:
            gr.Markdown(
                "To import a folder already on the server, start it with `--import-root DIR` "
                "(or `$SLRNET_IMPORT_ROOTS`); only paths under those folders can be named here.",
                elem_id="import-folder-hint",
            )
        status = gr.Markdown("No import yet.", elem_id="import-status")
        progress = gr.HTML(elem_id="import-progress")
        jobs = gr.State([])
        seen = gr.State(None)
    return SimpleNamespace(**locals())


def wire(studio: Studio, ui: SimpleNamespace) -> None:
    imp = ui.imp
    outputs = [imp.status, imp.progress, imp.jobs]
    for button, fn, inputs in (
        (imp.upload_btn, import_uploads, [ui.project, imp.uploads]),
        (
            imp.folder_btn,
            import_folder,
            [ui.project, imp.folder, imp.classes_file, imp.tags_csv, imp.masks_dir, imp.coco_json,
             imp.label_studio_json],
        ),
    ):
        # one click, one import: the buttons are disabled at once (in the browser) until it is queued,
        # and the uploaded files are cleared once their import is queued
        queued = button.click(None, None, None, js=DISABLE_IMPORT_JS).then(bind(fn, studio), inputs, outputs)
        queued.success(start_polling, None, [ui.timer])
        if button is imp.upload_btn:
            queued.success(lambda: None, None, [imp.uploads])
        queued.then(None, None, None, js=ENABLE_IMPORT_JS)
