"""The SLRNet Studio web page: ``build_ui(studio)`` assembles the tabs, ``launch(...)`` serves them.

Each tab is a module of app/tabs/ (Projects, Import, Browse, Tag, Paint, Train, Review, Export)
holding its layout (``build``), the views its handlers update (``views``), its wiring (``wire``)
and its handlers: top-level functions of the studio and the inputs that return dicts of updates
keyed by view names (app/wiring.py maps those names to components). This module adds what the
page shares: the header (project chooser, summary), the job timer, restoring project and tab.
Per-user state (the chosen image, the open paint session, the jobs being followed, the review
cache) lives in ``gr.State``; the chosen project and tab are kept in the browser's localStorage so
a reload comes back to them. The mask painter is our own canvas editor (app/static/painter.js),
fed through hidden textboxes. Torch-free.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.polling import follow_jobs
from app.settings import max_upload_bytes, parse_auth, upload_cache_seconds
from app.tabs import browse, export, import_, paint, projects, review, tag, train
from app.tabs.export import poll_export
from app.tabs.import_ import poll_imports
from app.tabs.train import poll_training
from app.theme import CSS, SHORTCUTS_JS
from app.wiring import bind, on
from jobs.submit import EXPORTS_DIR
from jobs.views import followed_jobs
from services.context import Studio

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
STATIC_DIR = Path(__file__).with_name("static")
REMEMBER_PROJECT_JS = (
    "(project) => { try { localStorage.setItem('slrnet.project', project || ''); } catch (e) {} }"
)
RESTORE_JS = (
    "(project, tab) => { try { return [localStorage.getItem('slrnet.project') || project, "
    "localStorage.getItem('slrnet.tab') || tab]; } catch (e) { return [project, tab]; } }"
)


def poll_jobs(
    studio: Studio,
    project: str | None,
    train_seen: tuple | None,
    import_jobs: list[int] | None,
    import_seen: tuple | None,
    export_job: int | None,
    export_seen: tuple | None,
) -> dict[str, Any]:
    """Timer tick: what changed of the training (``train_*``), import (``import_*``) and export
    (``export_*``) displays, the project summary, and whether the timer keeps ticking."""
    jobs = followed_jobs(studio, project, import_jobs, export_job)  # the one read of the tick
    training = poll_training(studio, project, train_seen, jobs)
    out: dict[str, Any] = {f"train_{k}": v for k, v in training.items() if k != "summary"}
    if "summary" in training:
        out["summary"] = training["summary"]
    imports = poll_imports(studio, project, import_jobs, import_seen, jobs)
    if imports[0] != gr.skip():
        out.update(import_status=imports[0], import_progress=imports[1], summary=imports[3])
    out["import_seen"] = imports[2]
    out.update({f"export_{k}": v for k, v in poll_export(studio, export_job, export_seen, jobs).items()})
    out["timer"] = gr.Timer(active=jobs.active)
    return out


def _wire_page(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    """The page-wide events: restoring project and tab, choosing a project, the job timer."""
    restored = on(
        ui.demo.load,
        projects.load_projects,
        [ui.restore_project, ui.restore_tab],
        {"project": ui.project, "summary": ui.summary, "tabs": ui.tabs},
        studio,
        js=RESTORE_JS,
    )
    restored.then(bind(follow_jobs, studio), ui.followed, [ui.timer])
    ui.project.change(None, [ui.project], None, js=REMEMBER_PROJECT_JS)
    chosen = on(
        ui.project.change,
        projects.show_project,
        [ui.project],
        {"classes_text": ui.projects.classes_text, "swatches": ui.projects.swatches, "summary": ui.summary},
        studio,
    )
    followed = [ui.project, ui.current_image, ui.paint.session]
    chosen = on(chosen.then, paint.follow_project, followed, views.paint, studio)
    shown = [ui.project, ui.current_image, ui.tag.shown]
    chosen = on(chosen.then, tag.refresh, shown, views.tag, studio)
    chosen = chosen.then(lambda: 0, None, [ui.browse.page])
    chosen = on(chosen.then, review.follow_project, [ui.project, ui.review.cache], views.review, studio)
    chosen = on(
        chosen.then,
        browse.show_page,
        [ui.project, ui.browse.image_filter, ui.browse.page],
        views.browse,
        studio,
    )
    chosen = on(
        chosen.then, train.choose_project_training, train.inputs(ui), views.train, studio
    )
    chosen.then(bind(follow_jobs, studio), ui.followed, [ui.timer])
    on(
        ui.timer.tick,
        poll_jobs,
        [ui.project, ui.train.seen, ui.imp.jobs, ui.imp.seen, ui.export.job, ui.export.seen],
        {
            **{f"train_{k}": v for k, v in views.train.items() if k not in ("plan", "summary")},
            "summary": ui.summary,
            "import_status": ui.imp.status,
            "import_progress": ui.imp.progress,
            "import_seen": ui.imp.seen,
            "export_status": ui.export.status,
            "export_progress": ui.export.progress,
            "export_download": ui.export.download,
            "export_seen": ui.export.seen,
            "timer": ui.timer,
        },
        studio,
        show_progress="hidden",
    )


def build_ui(studio: Studio) -> gr.Blocks:
    """The app's Blocks for ``studio`` (not launched)."""
    cache_s = upload_cache_seconds()
    with gr.Blocks(title="SLRNet Studio", analytics_enabled=False,
                   delete_cache=(max(1, cache_s // 10), cache_s)) as demo:
        ui = SimpleNamespace(demo=demo)
        ui.current_image = gr.State(None)  # image id chosen in Browse / Tag / Paint / Review
        with gr.Row(elem_id="header"):
            gr.Markdown("## SLRNet Studio", elem_id="title")
            ui.project = gr.Dropdown(label="Project", choices=[], elem_id="project", scale=2)
            ui.summary = gr.Markdown(elem_id="summary")
        # what the browser remembers (localStorage) of the last project and tab, read on load
        ui.restore_project = gr.Textbox(
            elem_id="restore-project", elem_classes=["slr-exchange"], show_label=False
        )
        ui.restore_tab = gr.Textbox(elem_id="restore-tab", elem_classes=["slr-exchange"], show_label=False)
        with gr.Tabs(elem_id="tabs") as ui.tabs:
            ui.projects = projects.build()
            ui.imp = import_.build(bool(studio.import_roots))
            ui.browse = browse.build()
            ui.tag = tag.build()
            ui.paint = paint.build()
            ui.train = train.build()
            ui.review = review.build()
            ui.export = export.build()
        # ticks only while a followed job is active
        ui.timer = gr.Timer(POLL_SECONDS, active=False)
        ui.followed = [ui.project, ui.imp.jobs, ui.export.job]
        views = SimpleNamespace(
            browse=browse.views(ui), tag=tag.views(ui), paint=paint.views(ui),
            train=train.views(ui), review=review.views(ui),
        )
        projects.wire(studio, ui)
        import_.wire(studio, ui)
        browse.wire(studio, ui, views)
        tag.wire(studio, ui, views)
        paint.wire(studio, ui, views)
        train.wire(studio, ui, views)
        review.wire(studio, ui, views)
        export.wire(studio, ui)
        _wire_page(studio, ui, views)
    return demo


def page_head() -> str:
    """The page's extra ``<head>``: the painter's and the Tag screen's scripts (app/static/), inlined."""
    scripts = ("painter.js", "tagger.js")
    return "".join(f"<script>{(STATIC_DIR / name).read_text(encoding='utf-8')}</script>" for name in scripts)


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
        "max_file_size": max_upload_bytes(),
        "css": CSS + (STATIC_DIR / "painter.css").read_text(encoding="utf-8"),
        "js": SHORTCUTS_JS,
        "head": page_head(),
        "ssr_mode": False,
        # Handlers show their failures through app.errors.shows_user_errors (a gr.Error is always
        # shown); anything else is logged, its raw text (a driver's SQL) never sent to the browser.
        "show_error": False,
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
    ``middleware``: Starlette middleware for the server (app/security.py's guard, from launch.py)."""
    options = launch_options(studio, host, port, auth)
    if middleware:
        options["app_kwargs"] = {"middleware": middleware}
    if host not in ("127.0.0.1", "localhost") and options["auth"] is None:
        logger.warning("serving on %s without a login: anyone who can reach it can use it (see --auth)", host)
    demo = build_ui(studio)
    logger.info("SLRNet Studio on http://%s:%d (data in %s)", host, port, studio.data_dir)
    demo.queue(default_concurrency_limit=4).launch(**options)
