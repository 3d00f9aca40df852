"""The SLRNet Studio web app: ``build_ui(studio)`` makes the Blocks, ``launch(...)`` serves them.

Screens (tabs): Projects, Import, Browse, Tag, Paint, Train, Review, Export. The handlers live in
``app/handlers_*.py`` as plain functions of the studio and the inputs; per-user state (the chosen
image, the open paint session, the jobs being followed) lives in ``gr.State``. Torch-free.
"""

from __future__ import annotations

import functools
import logging
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
EDITOR_BRUSH = gr.Brush(colors=["#800000"], color_mode="fixed")


def _bind(fn: Any, *args: Any) -> Any:
    """``fn`` with leading arguments bound, keeping its name for Gradio's API page."""
    bound = functools.partial(fn, *args)
    bound.__name__ = fn.__name__
    return bound


def build_ui(studio: Studio) -> gr.Blocks:
    """The app's Blocks for ``studio`` (not launched)."""
    defaults = train_defaults()
    with gr.Blocks(title="SLRNet Studio", analytics_enabled=False) as demo:
        current_image = gr.State(None)  # image id chosen in Browse / Tag / Review
        page_ids = gr.State([])
        paint_session = gr.State(None)
        import_jobs = gr.State([])
        import_seen = gr.State(None)
        export_job = gr.State(None)
        export_seen = gr.State(None)
        train_seen = gr.State(None)

        with gr.Row(elem_id="header"):
            gr.Markdown("## SLRNet Studio", elem_id="title")
            project = gr.Dropdown(label="Project", choices=[], elem_id="project", scale=2)
            summary = gr.Markdown(elem_id="summary")

        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Projects", id="projects", elem_id="tab-projects"):
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("### New project")
                        new_name = gr.Textbox(label="Name", elem_id="new-project-name")
                        new_classes = gr.Textbox(
                            label="Classes, one per line (optionally with a colour: cat #ff8800)",
                            value=DEFAULT_CLASS_LINES,
                            lines=6,
                            elem_id="new-project-classes",
                        )
                        new_background = gr.Checkbox(
                            label="Add a background class (index 0)", value=True, elem_id="new-project-bg"
                        )
                        create_btn = gr.Button("Create project", variant="primary", elem_id="create-project")
                    with gr.Column():
                        gr.Markdown("### Classes of the chosen project")
                        classes_text = gr.Textbox(
                            label="name #rrggbb, in label-value order", lines=8, elem_id="classes-text"
                        )
                        class_swatches = gr.HTML(elem_id="class-swatches")
                        save_classes_btn = gr.Button("Save classes", elem_id="save-classes")
                projects_status = gr.Markdown(elem_id="projects-status")

            with gr.Tab("Import", id="import", elem_id="tab-import"):
                with gr.Row():
                    with gr.Column():
                        uploads = gr.File(
                            label="Images or .zip files",
                            file_count="multiple",
                            file_types=["image", ".zip"],
                            elem_id="upload-files",
                        )
                        upload_btn = gr.Button(
                            "Import uploaded files", variant="primary", elem_id="import-upload"
                        )
                    with gr.Column():
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
                import_status = gr.Markdown("No import yet.", elem_id="import-status")
                import_progress = gr.HTML(elem_id="import-progress")

            with gr.Tab("Browse", id="browse", elem_id="tab-browse") as browse_tab:
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
                browse_info = gr.Markdown(elem_id="browse-info")
                with gr.Row():
                    to_tag = gr.Button("Tag it", size="sm", elem_id="to-tag")
                    to_paint = gr.Button("Paint it", size="sm", elem_id="to-paint")
                    to_review = gr.Button("Review it", size="sm", elem_id="to-review")

            with gr.Tab("Tag", id="tag", elem_id="tab-tag") as tag_tab, gr.Row():
                tag_picture = gr.Image(
                    type="filepath", interactive=False, show_label=False, height=520, elem_id="tag-picture"
                )
                with gr.Column(elem_id="tag-view"):
                    tag_title = gr.Markdown(elem_id="tag-title")
                    tag_classes = gr.CheckboxGroup(
                        label="Classes in this image (keys 1–9 toggle)", elem_id="tag-classes"
                    )
                    save_next_btn = gr.Button(
                        "Save & next untagged (Enter)", variant="primary", elem_id="tag-save-next"
                    )
                    with gr.Row():
                        save_tags_btn = gr.Button("Save (s)", elem_id="tag-save")
                        next_untagged_btn = gr.Button("Skip to next untagged (n)", elem_id="tag-next")
                    tag_status = gr.Markdown(elem_id="tag-status")

            with gr.Tab("Paint", id="paint", elem_id="tab-paint") as paint_tab:
                paint_title = gr.Markdown(elem_id="paint-title")
                with gr.Row():
                    editor = gr.ImageEditor(
                        type="numpy",
                        image_mode="RGBA",
                        format="png",  # lossless: WebP would change the class colours
                        sources=(),
                        transforms=(),
                        layers=False,
                        brush=EDITOR_BRUSH,
                        eraser=gr.Eraser(),
                        show_label=False,
                        height=600,
                        scale=4,
                        elem_id="editor",
                    )
                    with gr.Column(scale=1, min_width=220):
                        paint_legend = gr.HTML(elem_id="paint-legend")
                        gr.Markdown(
                            "Brush colours are classes; **unknown** marks pixels to ignore. "
                            "The eraser removes paint (the pixel keeps its starting label)."
                        )
                        start = gr.Radio(
                            choices=list(handlers_paint.START_CHOICES),
                            value=handlers_paint.START_MASK,
                            label="Start from",
                            elem_id="paint-start",
                        )
                        rest_background = gr.Checkbox(
                            label="Unpainted pixels are background", value=False, elem_id="paint-rest-bg"
                        )
                        save_paint_btn = gr.Button("Save mask", variant="primary", elem_id="paint-save")
                        next_unmasked_btn = gr.Button("Next image without mask", elem_id="paint-next")
                        paint_status = gr.Markdown(elem_id="paint-status")

            with gr.Tab("Train", id="train", elem_id="tab-train") as train_tab:
                plan = gr.Markdown(elem_id="train-plan")
                with gr.Row():
                    train_btn = gr.Button("Train on my labels", variant="primary", elem_id="train-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop", interactive=False, elem_id="cancel-btn")
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
                train_status = gr.Markdown("No job yet.", elem_id="train-status")
                train_progress = gr.HTML(elem_id="train-progress")
                loss_plot = gr.LinePlot(
                    x="x",
                    y="loss",
                    color="term",
                    title="Loss",
                    x_title="step",
                    height=280,
                    elem_id="loss-plot",
                )

            with gr.Tab("Review", id="review", elem_id="tab-review") as review_tab:
                review_title = gr.Markdown(elem_id="review-title")
                with gr.Row():
                    review_picture = gr.Image(
                        type="numpy",
                        format="png",
                        interactive=False,
                        show_label=False,
                        height=560,
                        scale=3,
                        elem_id="review-picture",
                    )
                    with gr.Column(scale=1, min_width=240):
                        opacity = gr.Slider(
                            0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity"
                        )
                        legend = gr.HTML(elem_id="legend")
                        accept_btn = gr.Button("Accept as mask", variant="primary", elem_id="accept-btn")
                        correct_btn = gr.Button("Correct in editor", elem_id="correct-btn")
                        suggest_btn = gr.Button("Suggest next image to label", elem_id="suggest-btn")
                        review_status = gr.Markdown(elem_id="review-status")

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
                    coco_btn = gr.Button(
                        "Export COCO (JSON, RLE masks)", variant="primary", elem_id="export-coco"
                    )
                    voc_btn = gr.Button("Export VOC (zip of PNGs)", elem_id="export-voc")
                export_status = gr.Markdown(elem_id="export-status")
                export_progress = gr.HTML(elem_id="export-progress")
                download = gr.File(label="Download", interactive=False, elem_id="download")

        timer = gr.Timer(POLL_SECONDS, active=False)  # ticks only while a followed job is active

        # --- wiring -------------------------------------------------------------------------
        tag_view = [current_image, tag_picture, tag_title, tag_classes]
        editor_view = [editor, paint_legend, paint_title, paint_session]
        review_view = [current_image, review_picture, legend, review_title]
        browse_view = [gallery, page_ids, page_label, page, image_filter]

        load_tag = _bind(handlers_tag.load_tag_view, studio)
        load_editor = _bind(handlers_paint.load_editor, studio)
        load_review = _bind(handlers_review.load_review, studio)
        show_page = _bind(handlers_browse.show_page, studio)
        plan_md = _bind(handlers_train.plan_markdown, studio)
        summarize = _bind(handlers_projects.project_summary, studio)
        follow = _bind(handlers_jobs.follow_jobs, studio)
        followed = [project, import_jobs, export_job]

        demo.load(_bind(handlers_projects.load_projects, studio), [project], [project, summary]).then(
            follow, followed, [timer]
        )
        project.change(
            _bind(handlers_projects.show_project, studio), [project], [classes_text, class_swatches, summary]
        ).then(lambda: (None, None, 0), None, [current_image, paint_session, page]).then(
            show_page, [project, image_filter, page], browse_view
        ).then(plan_md, [project, mode], [plan])

        create_btn.click(
            _bind(handlers_projects.create_project, studio),
            [new_name, new_classes, new_background],
            [project, projects_status],
        )
        save_classes_btn.click(
            _bind(handlers_projects.save_classes, studio),
            [project, classes_text],
            [classes_text, class_swatches, projects_status],
        )

        upload_btn.click(
            _bind(handlers_import.import_uploads, studio),
            [project, uploads],
            [import_status, import_progress, import_jobs],
        ).success(handlers_jobs.start_polling, None, [timer])
        folder_btn.click(
            _bind(handlers_import.import_folder, studio),
            [project, folder, classes_file, tags_csv, masks_dir, coco_json],
            [import_status, import_progress, import_jobs],
        ).success(handlers_jobs.start_polling, None, [timer])

        image_filter.input(lambda: 0, None, [page]).then(
            show_page, [project, image_filter, page], browse_view
        )
        prev_btn.click(lambda p: handlers_browse.page_step(p, -1), [page], [page]).then(
            show_page, [project, image_filter, page], browse_view
        )
        next_btn.click(lambda p: handlers_browse.page_step(p, 1), [page], [page]).then(
            show_page, [project, image_filter, page], browse_view
        )
        gallery.select(handlers_browse.select_image, [page_ids], [current_image]).then(
            _bind(handlers_browse.describe_image, studio), [current_image], [browse_info]
        )
        to_tag.click(lambda: gr.Tabs(selected="tag"), None, [tabs]).then(
            load_tag, [project, current_image], tag_view
        )
        to_paint.click(lambda: gr.Tabs(selected="paint"), None, [tabs]).then(
            load_editor, [project, current_image, start], editor_view
        )
        to_review.click(lambda: gr.Tabs(selected="review"), None, [tabs]).then(
            load_review, [project, current_image, opacity], review_view
        )

        save_next_btn.click(
            _bind(handlers_tag.save_and_next, studio),
            [project, current_image, tag_classes],
            [*tag_view, tag_status],
        ).success(summarize, [project], [summary])
        save_tags_btn.click(
            _bind(handlers_tag.save_tags, studio), [current_image, tag_classes], [tag_status]
        ).success(summarize, [project], [summary])
        next_untagged_btn.click(_bind(handlers_tag.next_untagged, studio), [project, current_image], tag_view)

        start.input(load_editor, [project, current_image, start], editor_view)
        save_paint_btn.click(
            _bind(handlers_paint.save_painting, studio),
            [project, paint_session, editor, rest_background],
            [paint_status],
        ).success(summarize, [project], [summary])
        next_unmasked_btn.click(
            _bind(handlers_paint.next_without_mask, studio), [project, current_image], [current_image]
        ).then(lambda: handlers_paint.START_MASK, None, [start]).then(
            load_editor, [project, current_image, start], editor_view
        )

        mode.change(plan_md, [project, mode], [plan])
        train_outputs = [train_status, train_progress, loss_plot, cancel_btn, train_seen]
        train_btn.click(
            _bind(handlers_train.start_training, studio),
            [project, mode, backbone, epochs, image_size, device],
            train_outputs,
        ).success(handlers_jobs.start_polling, None, [timer])
        cancel_btn.click(_bind(handlers_train.cancel_training, studio), [project], train_outputs)

        opacity.release(load_review, [project, current_image, opacity], review_view)
        accept_btn.click(_bind(handlers_review.accept, studio), [current_image], [review_status]).success(
            load_review, [project, current_image, opacity], review_view
        ).then(summarize, [project], [summary])
        correct_btn.click(
            handlers_review.correct_in_editor, [current_image], [tabs, start, current_image]
        ).then(load_editor, [project, current_image, start], editor_view)
        suggest_btn.click(
            _bind(handlers_review.suggest_next, studio), [project, current_image], [current_image]
        ).then(load_review, [project, current_image, opacity], review_view)

        export_outputs = [export_status, export_progress, download, export_job, export_seen]
        for button, fmt in ((coco_btn, "coco"), (voc_btn, "voc")):
            button.click(
                _bind(handlers_export.start_export, studio, fmt), [project, source], export_outputs
            ).success(handlers_jobs.start_polling, None, [timer])

        timer.tick(
            _bind(handlers_jobs.poll_jobs, studio),
            [project, train_seen, import_jobs, import_seen, export_job, export_seen],
            [
                *train_outputs,
                summary,
                import_status,
                import_progress,
                import_seen,
                export_status,
                export_progress,
                download,
                export_seen,
                timer,
            ],
            show_progress="hidden",
        )

        browse_tab.select(show_page, [project, image_filter, page], browse_view)
        tag_tab.select(load_tag, [project, current_image], tag_view)
        paint_tab.select(
            _bind(handlers_paint.open_editor, studio),
            [project, current_image, start, paint_session],
            editor_view,
        )
        train_tab.select(plan_md, [project, mode], [plan]).then(
            _bind(handlers_train.poll_training, studio), [project, gr.State(None)], [*train_outputs, summary]
        ).then(follow, followed, [timer])
        review_tab.select(load_review, [project, current_image, opacity], review_view)
    return demo


def launch_options(
    studio: Studio, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None
) -> dict[str, Any]:
    """The ``Blocks.launch`` arguments of the app: where it listens, the optional login, its CSS
    and shortcuts, and which files it may serve (cached thumbnails, finished exports)."""
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
        "css": CSS,
        "js": SHORTCUTS_JS,
        "ssr_mode": False,
        "show_error": True,
        "footer_links": ["settings"],
    }


def launch(studio: Studio, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None) -> None:
    """Serve the app until interrupted. ``auth`` is ``"user:password"`` (from ``--auth`` or
    ``$SLRNET_AUTH``) to require a login, e.g. on a shared server; bind 0.0.0.0 only with it."""
    options = launch_options(studio, host, port, auth)
    if host not in ("127.0.0.1", "localhost") and options["auth"] is None:
        logger.warning("serving on %s without a login: anyone who can reach it can use it (see --auth)", host)
    demo = build_ui(studio)
    logger.info("SLRNet Studio on http://%s:%d (data in %s)", host, port, studio.data_dir)
    demo.queue(default_concurrency_limit=4).launch(**options)
