"""The SLRNet Studio web app: ``build_ui(studio)`` makes the Blocks, ``launch(...)`` serves them.

Screens (tabs): Projects, Import, Browse, Tag, Paint, Train, Review, Export, each laid out by its
own ``_build_<tab>`` function and wired by ``_wire_<tab>``. Handlers live in ``app/handlers_*.py``
as top-level functions of the studio and the inputs that return dicts of updates keyed by view
names; :func:`_on` maps those names to this page's components. Per-user state (the chosen image,
the open paint session, the jobs being followed, the review cache) lives in ``gr.State``; the
chosen project and tab are kept in the browser's localStorage so a reload comes back to them.
The mask painter is our own canvas editor (app/static/painter.js), fed through hidden textboxes.
Torch-free.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app import (
    handlers_browse,
    handlers_export,
    handlers_import,
    handlers_jobs,
    handlers_paint,
    handlers_projects,
    handlers_review,
    handlers_tag,
    handlers_train,
)
from app.settings import BACKBONES, DEVICES, TRAIN_MODES, parse_auth, train_defaults
from app.theme import CSS, SHORTCUTS_JS
from jobs.submit import EXPORTS_DIR
from services.context import Studio

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
DEFAULT_CLASS_LINES = "person\ndog\ncat"
STATIC_DIR = Path(__file__).with_name("static")
PAINTER_HELP = (
    "**Keys:** 1–9 pick a class (shown on its button), U unknown · B brush · E eraser · R superpixel · "
    "F relabel region · [ ] brush size · Ctrl+Z / Ctrl+Shift+Z undo / redo · wheel zoom · "
    "space- or middle-drag pan · 0 fit. The eraser removes paint (the pixel keeps its starting "
    "label); **unknown** marks pixels to ignore."
)
# The Save buttons of the painter send what the canvas holds instead of the hidden textbox.
PAINT_PAYLOAD_JS = (
    "(...args) => { args[2] = window.slrPainter ? window.slrPainter.payload() : ''; return args; }"
)
REMEMBER_PROJECT_JS = (
    "(project) => { try { localStorage.setItem('slrnet.project', project || ''); } catch (e) {} }"
)
RESTORE_JS = (
    "(project, tab) => { try { return [localStorage.getItem('slrnet.project') || project, "
    "localStorage.getItem('slrnet.tab') || tab]; } catch (e) { return [project, tab]; } }"
)
_IMPORT_BUTTONS_JS = (
    "() => { for (const id of ['import-upload', 'import-folder-btn']) { "
    "const b = document.getElementById(id); if (b) b.disabled = %s; } return []; }"
)
DISABLE_IMPORT_JS = _IMPORT_BUTTONS_JS % "true"
# Gradio does not touch a button it already thinks interactive, so what the browser disabled
# the browser enables again
ENABLE_IMPORT_JS = _IMPORT_BUTTONS_JS % "false"


def _bind(fn: Any, *args: Any) -> Any:
    """``fn`` with leading arguments bound, keeping its name for Gradio's API page."""
    bound = functools.partial(fn, *args)
    bound.__name__ = fn.__name__
    return bound


def _on(
    event: Callable[..., Any],
    fn: Callable[..., Mapping[str, Any]],
    inputs: list[Any] | None,
    outputs: Mapping[str, Any],
    *bound: Any,
    **options: Any,
) -> Any:
    """Wire ``event`` to a handler returning ``{view name: update}``: the names are looked up in
    ``outputs`` (names it lacks are not shown by this event)."""

    def run(*args: Any) -> dict[Any, Any]:
        result = fn(*bound, *args)
        return {outputs[name]: value for name, value in result.items() if name in outputs}

    run.__name__ = getattr(fn, "__name__", "handler")
    return event(run, inputs, list(outputs.values()), **options)


# --- layout: one builder per tab ---------------------------------------------------------------


def _build_projects() -> SimpleNamespace:
    with gr.Tab("Projects", id="projects", elem_id="tab-projects"):
        with gr.Row():
            with gr.Column():
                gr.Markdown("### New project")
                name = gr.Textbox(label="Name", elem_id="new-project-name")
                classes = gr.Textbox(
                    label="Classes, one per line (optionally with a colour: cat #ff8800)",
                    value=DEFAULT_CLASS_LINES,
                    lines=6,
                    elem_id="new-project-classes",
                )
                background = gr.Checkbox(
                    label="Add a background class (index 0)", value=True, elem_id="new-project-bg"
                )
                create = gr.Button("Create project", variant="primary", elem_id="create-project")
            with gr.Column():
                gr.Markdown("### Classes of the chosen project")
                classes_text = gr.Textbox(
                    label="name #rrggbb, in label-value order", lines=8, elem_id="classes-text"
                )
                swatches = gr.HTML(elem_id="class-swatches")
                save = gr.Button("Save classes", elem_id="save-classes")
        status = gr.Markdown(elem_id="projects-status")
    return SimpleNamespace(**locals())


def _build_import(server_folders: bool) -> SimpleNamespace:
    """The Import tab; the server-folder column only when the server has import roots (a web user
    may name paths under them alone), else a line saying how to allow it."""
    with gr.Tab("Import", id="import", elem_id="tab-import"):
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


def _build_browse() -> SimpleNamespace:
    with gr.Tab("Browse", id="browse", elem_id="tab-browse") as tab:
        image_filter = gr.Radio(
            choices=list(handlers_browse.FILTERS), value="all", label="Show", elem_id="browse-filter"
        )
        gallery = gr.Gallery(
            columns=8,
            height=560,
            allow_preview=False,
            object_fit="cover",
            format="jpeg",
            elem_id="gallery",
            show_label=False,
        )
        with gr.Row():
            prev_btn = gr.Button("◀ Previous page", size="sm", elem_id="prev-page")
            page_label = gr.Markdown(elem_id="page-label")
            next_btn = gr.Button("Next page ▶", size="sm", elem_id="next-page")
        page = gr.Number(value=0, visible=False, precision=0)
        page_ids = gr.State([])
        info = gr.Markdown(elem_id="browse-info")
        with gr.Row():
            to_tag = gr.Button("Tag it", size="sm", elem_id="to-tag")
            to_paint = gr.Button("Paint it", size="sm", elem_id="to-paint")
            to_review = gr.Button("Review it", size="sm", elem_id="to-review")
    return SimpleNamespace(**locals())


def _build_tag() -> SimpleNamespace:
    with gr.Tab("Tag", id="tag", elem_id="tab-tag") as tab, gr.Row():
        picture = gr.Image(
            type="filepath", interactive=False, show_label=False, height=520, scale=3, elem_id="tag-picture"
        )
        with gr.Column(scale=2, elem_id="tag-view"):
            title = gr.Markdown(elem_id="tag-title")
            with gr.Row():
                save_next = gr.Button(
                    "Save & next untagged (Enter)", variant="primary", elem_id="tag-save-next"
                )
            with gr.Row():
                previous = gr.Button("◀ Previous (p)", size="sm", elem_id="tag-previous")
                save = gr.Button("Save (s)", size="sm", elem_id="tag-save")
                skip = gr.Button("Skip to next untagged (n)", size="sm", elem_id="tag-next")
            search = gr.Textbox(
                placeholder="Search classes…", show_label=False, container=False, elem_id="tag-search"
            )
            classes = gr.CheckboxGroup(label="Classes in this image (keys 1–9 toggle)", elem_id="tag-classes")
            status = gr.Markdown(elem_id="tag-status")
    return SimpleNamespace(**locals())


def _build_paint() -> SimpleNamespace:
    with gr.Tab("Paint", id="paint", elem_id="tab-paint") as tab:
        title = gr.Markdown(elem_id="paint-title")
        with gr.Row():
            with gr.Column(scale=4):
                gr.HTML('<div id="painter"></div>', elem_id="painter-host")
            with gr.Column(scale=1, min_width=230):
                start = gr.Radio(
                    choices=list(handlers_paint.START_CHOICES),
                    value=handlers_paint.START_MASK,
                    label="Start from",
                    elem_id="paint-start",
                )
                rest_background = gr.Checkbox(
                    label="Unpainted pixels are background (this image)", value=False, elem_id="paint-rest-bg"
                )
                save = gr.Button("Save mask", variant="primary", elem_id="paint-save")
                save_next = gr.Button("Save & next without mask", elem_id="paint-save-next")
                next_btn = gr.Button("Next image without mask", elem_id="paint-next")
                clear = gr.Button("Clear mask", variant="stop", size="sm", elem_id="paint-clear")
                status = gr.Markdown(elem_id="paint-status")
                gr.Markdown(PAINTER_HELP)
        # what the canvas editor reads (JSON document of the image) and what Save sends
        load = gr.Textbox(elem_id="paint-load", elem_classes=["slr-exchange"], show_label=False)
        payload = gr.Textbox(elem_id="paint-payload", elem_classes=["slr-exchange"], show_label=False)
        session = gr.State(None)
    return SimpleNamespace(**locals())


def _build_train() -> SimpleNamespace:
    defaults = train_defaults()
    with gr.Tab("Train", id="train", elem_id="tab-train") as tab:
        plan = gr.Markdown(elem_id="train-plan")
        with gr.Row():
            train_btn = gr.Button("Train on my labels", variant="primary", elem_id="train-btn")
            cancel = gr.Button("Cancel", variant="stop", interactive=False, elem_id="cancel-btn")
        with gr.Accordion("Options", open=False), gr.Row():
            mode = gr.Radio(choices=list(TRAIN_MODES), value=defaults.mode, label="Mode")
            backbone = gr.Dropdown(
                choices=[("default", ""), *[(b, b) for b in BACKBONES]],
                value=defaults.backbone or "",
                label="Backbone",
            )
            epochs = gr.Number(value=defaults.epochs, label="Epochs (empty: default)", precision=0)
            image_size = gr.Number(
                value=defaults.image_size, label="Image size (empty: default)", precision=0
            )
            device = gr.Radio(choices=list(DEVICES), value=defaults.device, label="Device")
        with gr.Row():
            minutes = gr.Number(
                value=defaults.minutes, label="Minutes of training (empty: default)", minimum=0,
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


def _build_review() -> SimpleNamespace:
    with gr.Tab("Review", id="review", elem_id="tab-review") as tab:
        title = gr.Markdown(elem_id="review-title")
        with gr.Row():
            picture = gr.Image(
                type="numpy",
                format="png",
                interactive=False,
                show_label=False,
                height=560,
                scale=3,
                elem_id="review-picture",
            )
            with gr.Column(scale=1, min_width=240):
                with gr.Row():
                    previous = gr.Button("◀ Previous", size="sm", elem_id="review-previous")
                    next_btn = gr.Button("Next ▶", size="sm", elem_id="review-next")
                opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity")
                legend = gr.HTML(elem_id="legend")
                accept = gr.Button("Accept as mask", variant="primary", elem_id="accept-btn")
                correct = gr.Button("Correct in editor", elem_id="correct-btn")
                suggest = gr.Button("Suggest next image to label", elem_id="suggest-btn")
                status = gr.Markdown(elem_id="review-status")
        cache = gr.State(None)
    return SimpleNamespace(**locals())


def _build_export() -> SimpleNamespace:
    with gr.Tab("Export", id="export", elem_id="tab-export"):
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
        status = gr.Markdown(elem_id="export-status")
        progress = gr.HTML(elem_id="export-progress")
        download = gr.File(label="Download", interactive=False, file_count="multiple", elem_id="download")
        job = gr.State(None)
        seen = gr.State(None)
    return SimpleNamespace(**locals())


# --- wiring --------------------------------------------------------------------------------------


def _views(ui: SimpleNamespace) -> SimpleNamespace:
    """The output maps handlers' view names are looked up in."""
    tag, paint, review = ui.tag, ui.paint, ui.review
    return SimpleNamespace(
        tag={
            "current_image": ui.current_image,
            "picture": tag.picture,
            "title": tag.title,
            "classes": tag.classes,
            "status": tag.status,
        },
        paint={
            "load": paint.load,
            "title": paint.title,
            "session": paint.session,
            "rest_background": paint.rest_background,
            "start": paint.start,
            "current_image": ui.current_image,
            "status": paint.status,
        },
        review={
            "current_image": ui.current_image,
            "picture": review.picture,
            "legend": review.legend,
            "title": review.title,
            "cache": review.cache,
            "status": review.status,
        },
        browse={
            "gallery": ui.browse.gallery,
            "page_ids": ui.browse.page_ids,
            "page_label": ui.browse.page_label,
            "page": ui.browse.page,
            "filter": ui.browse.image_filter,
        },
        train={
            "status": ui.train.status,
            "progress": ui.train.progress,
            "loss": ui.train.loss,
            "cancel": ui.train.cancel,
            "seen": ui.train.seen,
            "plan": ui.train.plan,
            "warm": ui.train.warm,
            "summary": ui.summary,
        },
    )


def _wire_projects(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.projects
    _on(
        p.create.click,
        handlers_projects.create_project,
        [p.name, p.classes, p.background],
        {"project": ui.project, "status": p.status},
        studio,
    )
    _on(
        p.save.click,
        handlers_projects.save_classes,
        [ui.project, p.classes_text],
        {"classes_text": p.classes_text, "swatches": p.swatches, "status": p.status},
        studio,
    )


def _wire_import(studio: Studio, ui: SimpleNamespace) -> None:
    imp = ui.imp
    outputs = [imp.status, imp.progress, imp.jobs]
    for button, fn, inputs in (
        (imp.upload_btn, handlers_import.import_uploads, [ui.project, imp.uploads]),
        (
            imp.folder_btn,
            handlers_import.import_folder,
            [ui.project, imp.folder, imp.classes_file, imp.tags_csv, imp.masks_dir, imp.coco_json],
        ),
    ):
        # one click, one import: the buttons are disabled at once (in the browser) until it is queued,
        # and the uploaded files are cleared once their import is queued
        queued = button.click(None, None, None, js=DISABLE_IMPORT_JS).then(_bind(fn, studio), inputs, outputs)
        queued.success(handlers_jobs.start_polling, None, [ui.timer])
        if button is imp.upload_btn:
            queued.success(lambda: None, None, [imp.uploads])
        queued.then(None, None, None, js=ENABLE_IMPORT_JS)


def _wire_browse(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    b = ui.browse
    show = [ui.project, b.image_filter, b.page]
    _on(b.image_filter.input, lambda *a: handlers_browse.show_page(studio, a[0], a[1], 0), show, views.browse)
    for button, step in ((b.prev_btn, -1), (b.next_btn, 1)):
        _on(
            button.click,
            lambda *a, s=step: handlers_browse.show_page(
                studio, a[0], a[1], handlers_browse.page_step(a[2], s)
            ),
            show,
            views.browse,
        )
    b.gallery.select(handlers_browse.select_image, [b.page_ids], [ui.current_image]).then(
        _bind(handlers_browse.describe_image, studio), [ui.current_image], [b.info]
    )
    _on(b.tab.select, handlers_browse.show_page, show, views.browse, studio)
    _on(
        b.to_tag.click(lambda: gr.Tabs(selected="tag"), None, [ui.tabs]).then,
        handlers_tag.show,
        [ui.project, ui.current_image],
        views.tag,
        studio,
    )
    _open_paint(studio, ui, views, b.to_paint.click)
    _on(
        b.to_review.click(lambda: gr.Tabs(selected="review"), None, [ui.tabs]).then,
        handlers_review.show,
        [ui.project, ui.current_image, ui.review.opacity],
        views.review,
        studio,
    )


def _open_paint(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace, trigger: Any) -> None:
    """``trigger``: show the Paint tab in its loading state, then open the chosen image there."""
    p = ui.paint
    loading = trigger(lambda: gr.Tabs(selected="paint"), None, [ui.tabs])
    loading = _on(loading.then, handlers_paint.loading_view, None, views.paint)
    _on(
        loading.then, handlers_paint.load_editor, [ui.project, ui.current_image, p.start], views.paint, studio
    )


def _wire_tag(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    t = ui.tag
    inputs = [ui.project, ui.current_image, t.classes]
    saved = _on(
        t.save_next.click, lambda *a: handlers_tag.save(studio, *a, move="next_untagged"), inputs, views.tag
    )
    saved.success(_bind(handlers_projects.project_summary, studio), [ui.project], [ui.summary])
    saved = _on(t.save.click, handlers_tag.save, inputs, views.tag, studio)
    saved.success(_bind(handlers_projects.project_summary, studio), [ui.project], [ui.summary])
    for button, move in ((t.skip, "next_untagged"), (t.previous, "previous")):
        _on(
            button.click,
            lambda *a, m=move: handlers_tag.show(studio, *a, move=m),
            [ui.project, ui.current_image],
            views.tag,
        )
    _on(t.tab.select, handlers_tag.show, [ui.project, ui.current_image], views.tag, studio)


def _wire_paint(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    p = ui.paint
    load_inputs = [ui.project, ui.current_image, p.start]
    loading = _on(p.start.input, handlers_paint.loading_view, None, views.paint)
    _on(loading.then, handlers_paint.load_editor, load_inputs, views.paint, studio)
    save_inputs = [ui.project, p.session, p.payload, p.rest_background]
    saved = _on(
        p.save.click, handlers_paint.save_painting, save_inputs, views.paint, studio, js=PAINT_PAYLOAD_JS
    )
    saved.success(_bind(handlers_projects.project_summary, studio), [ui.project], [ui.summary])
    saved = _on(
        p.save_next.click, handlers_paint.save_and_next, save_inputs, views.paint, studio, js=PAINT_PAYLOAD_JS
    )
    saved.success(_bind(handlers_projects.project_summary, studio), [ui.project], [ui.summary])
    loading = _on(p.next_btn.click, handlers_paint.loading_view, None, views.paint)
    _on(loading.then, handlers_paint.next_without_mask, [ui.project, ui.current_image], views.paint, studio)
    cleared = _on(p.clear.click, handlers_paint.clear_mask, [ui.project, p.session], views.paint, studio)
    cleared.success(_bind(handlers_projects.project_summary, studio), [ui.project], [ui.summary])
    _on(
        p.tab.select,
        handlers_paint.open_editor,
        [ui.project, ui.current_image, p.start, p.session],
        views.paint,
        studio,
    )


def _train_inputs(ui: SimpleNamespace) -> list[Any]:
    """The project and the Train tab's options, in the order the train handlers take them."""
    t = ui.train
    return [ui.project, t.mode, t.backbone, t.epochs, t.image_size, t.device, t.minutes, t.warm]


def _wire_train(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    t = ui.train
    options = _train_inputs(ui)
    for option in options[1:]:
        option.change(_bind(handlers_train.plan_markdown, studio), options, [t.plan], show_progress="hidden")
    started = _on(t.train_btn.click, handlers_train.start_training, options, views.train, studio)
    started.success(handlers_jobs.start_polling, None, [ui.timer])
    _on(t.cancel.click, handlers_train.cancel_training, [ui.project], views.train, studio)
    shown = _on(t.tab.select, handlers_train.show_project_training, options, views.train, studio)
    shown.then(_bind(handlers_jobs.follow_jobs, studio), ui.followed, [ui.timer])


def _wire_review(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    r = ui.review
    inputs = [ui.project, ui.current_image, r.opacity]
    _on(r.opacity.release, handlers_review.reblend, [r.cache, r.opacity], views.review)
    accepted = _on(r.accept.click, handlers_review.accept, inputs, views.review, studio)
    accepted.success(_bind(handlers_projects.project_summary, studio), [ui.project], [ui.summary])
    for button, move in ((r.suggest, "suggest"), (r.next_btn, "next"), (r.previous, "previous")):
        _on(button.click, lambda *a, m=move: handlers_review.show(studio, *a, move=m), inputs, views.review)
    corrected = _on(
        r.correct.click,
        handlers_review.correct_in_editor,
        [ui.current_image],
        {"tab": ui.tabs, "start": ui.paint.start, "current_image": ui.current_image},
    )
    loading = _on(corrected.success, handlers_paint.loading_view, None, views.paint)
    _on(
        loading.then,
        handlers_paint.load_editor,
        [ui.project, ui.current_image, ui.paint.start],
        views.paint,
        studio,
    )
    _on(r.tab.select, handlers_review.show, inputs, views.review, studio)


def _wire_export(studio: Studio, ui: SimpleNamespace) -> None:
    e = ui.export
    outputs = {
        "status": e.status,
        "progress": e.progress,
        "download": e.download,
        "job": e.job,
        "seen": e.seen,
    }
    for button, fmt in ((e.coco_btn, "coco"), (e.voc_btn, "voc")):
        started = _on(
            button.click, handlers_export.start_export, [ui.project, e.source], outputs, studio, fmt
        )
        started.success(handlers_jobs.start_polling, None, [ui.timer])


def _wire_page(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    """The page-wide events: restoring project and tab, choosing a project, the job timer."""
    restored = _on(
        ui.demo.load,
        handlers_projects.load_projects,
        [ui.restore_project, ui.restore_tab],
        {"project": ui.project, "summary": ui.summary, "tabs": ui.tabs},
        studio,
        js=RESTORE_JS,
    )
    restored.then(_bind(handlers_jobs.follow_jobs, studio), ui.followed, [ui.timer])
    ui.project.change(None, [ui.project], None, js=REMEMBER_PROJECT_JS)
    chosen = _on(
        ui.project.change,
        handlers_projects.show_project,
        [ui.project],
        {"classes_text": ui.projects.classes_text, "swatches": ui.projects.swatches, "summary": ui.summary},
        studio,
    )
    chosen = chosen.then(
        _bind(handlers_projects.keep_open_image, studio),
        [ui.project, ui.current_image, ui.paint.session],
        [ui.current_image, ui.paint.session],
    )
    chosen = chosen.then(lambda: (0, None), None, [ui.browse.page, ui.review.cache])
    chosen = _on(
        chosen.then,
        handlers_browse.show_page,
        [ui.project, ui.browse.image_filter, ui.browse.page],
        views.browse,
        studio,
    )
    chosen = _on(
        chosen.then, handlers_train.choose_project_training, _train_inputs(ui), views.train, studio
    )
    chosen.then(_bind(handlers_jobs.follow_jobs, studio), ui.followed, [ui.timer])
    imp, exp, train = ui.imp, ui.export, ui.train
    _on(
        ui.timer.tick,
        handlers_jobs.poll_jobs,
        [ui.project, train.seen, imp.jobs, imp.seen, exp.job, exp.seen],
        {
            **{f"train_{k}": v for k, v in views.train.items() if k not in ("plan", "summary")},
            "summary": ui.summary,
            "import_status": imp.status,
            "import_progress": imp.progress,
            "import_seen": imp.seen,
            "export_status": exp.status,
            "export_progress": exp.progress,
            "export_download": exp.download,
            "export_seen": exp.seen,
            "timer": ui.timer,
        },
        studio,
        show_progress="hidden",
    )


def build_ui(studio: Studio) -> gr.Blocks:
    """The app's Blocks for ``studio`` (not launched)."""
    with gr.Blocks(title="SLRNet Studio", analytics_enabled=False) as demo:
        current_image = gr.State(None)  # image id chosen in Browse / Tag / Paint / Review
        with gr.Row(elem_id="header"):
            gr.Markdown("## SLRNet Studio", elem_id="title")
            project = gr.Dropdown(label="Project", choices=[], elem_id="project", scale=2)
            summary = gr.Markdown(elem_id="summary")
        # what the browser remembers (localStorage) of the last project and tab, read on load
        restore_project = gr.Textbox(
            elem_id="restore-project", elem_classes=["slr-exchange"], show_label=False
        )
        restore_tab = gr.Textbox(elem_id="restore-tab", elem_classes=["slr-exchange"], show_label=False)
        with gr.Tabs(elem_id="tabs") as tabs:
            projects = _build_projects()
            imp = _build_import(bool(studio.import_roots))
            browse = _build_browse()
            tag = _build_tag()
            paint = _build_paint()
            train = _build_train()
            review = _build_review()
            export = _build_export()
        timer = gr.Timer(POLL_SECONDS, active=False)  # ticks only while a followed job is active
        ui = SimpleNamespace(**locals())
        ui.followed = [project, imp.jobs, export.job]
        views = _views(ui)
        _wire_projects(studio, ui)
        _wire_import(studio, ui)
        _wire_browse(studio, ui, views)
        _wire_tag(studio, ui, views)
        _wire_paint(studio, ui, views)
        _wire_train(studio, ui, views)
        _wire_review(studio, ui, views)
        _wire_export(studio, ui)
        _wire_page(studio, ui, views)
    return demo


def page_head() -> str:
    """The page's extra ``<head>``: the painter's script (app/static/painter.js), inlined."""
    return f"<script>{(STATIC_DIR / 'painter.js').read_text(encoding='utf-8')}</script>"


def launch_options(
    studio: Studio, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None
) -> dict[str, Any]:
    """The ``Blocks.launch`` arguments of the app: where it listens, the optional login, its CSS,
    scripts and shortcuts, and which files it may serve (cached thumbnails, finished exports)."""
    exports = studio.data_dir / EXPORTS_DIR
    exports.mkdir(parents=True, exist_ok=True)
    # Thumbnails are content-addressed and never change: serve them in place, uncopied.
    gr.set_static_paths([studio.images.thumbs_dir])
    return {
        "server_name": host,
        "server_port": port,
        "auth": parse_auth(auth),
        "auth_message": "SLRNet Studio: sign in" if auth else None,
        "allowed_paths": [str(exports)],
        "css": CSS + (STATIC_DIR / "painter.css").read_text(encoding="utf-8"),
        "js": SHORTCUTS_JS,
        "head": page_head(),
        "ssr_mode": False,
        "show_error": True,
        "footer_links": ["settings"],
    }


def launch(
    studio: Studio,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: str | None = None,
    middleware: list[Any] | None = None,
) -> None:
    """Serve the app until interrupted. ``auth`` is ``"user:password"`` (from ``--auth`` or
    ``$SLRNET_AUTH``) to require a login, e.g. on a shared server; bind 0.0.0.0 only with it.
    ``middleware``: Starlette middleware for the server (``serve_security``, from launch.py)."""
    options = launch_options(studio, host, port, auth)
    if middleware:
        options["app_kwargs"] = {"middleware": middleware}
    if host not in ("127.0.0.1", "localhost") and options["auth"] is None:
        logger.warning("serving on %s without a login: anyone who can reach it can use it (see --auth)", host)
    demo = build_ui(studio)
    logger.info("SLRNet Studio on http://%s:%d (data in %s)", host, port, studio.data_dir)
    demo.queue(default_concurrency_limit=4).launch(**options)
