"""Paint screen: the canvas editor (app/static/painter.js) and saving its painting as a mask.

Handlers return dicts of updates keyed by view names (:func:`views` maps them to components):
``load`` (the hidden textbox the editor reads its JSON document from), ``title``, ``session``
(per-page state: the image, the token and mask version the painting started from, the starting
labels), ``rest_background`` (reset on every image), ``start``, ``current_image``, ``status``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import gradio as gr
import numpy as np

from app.errors import reports_user_errors, shows_user_errors
from app.overlay import resize_nearest, resize_rgb
from app.painter import apply_paint, decode_painting, edit_size, editor_document, opening_token
from app.superpixels import region_levels
from app.tabs import new_tab
from app.tabs.projects import class_palette, project_summary
from app.wiring import bind, on
from services import browse, labeling
from services.context import Studio
from services.errors import UserError
from storage.label_maps import decode_label_png, encode_label_png

logger = logging.getLogger(__name__)

START_MASK = "my mask"
START_PSEUDO = "model's pseudo-label"
START_EMPTY = "nothing (unknown)"
START_CHOICES = (START_MASK, START_PSEUDO, START_EMPTY)
START_KINDS = {START_MASK: "mask", START_PSEUDO: "pseudo", START_EMPTY: "empty"}
START_NAMES = {kind: name for name, kind in START_KINDS.items()}
STILL_LOADING = "The image is still loading: wait until it shows in the editor, then save."
OTHER_IMAGE = "The editor shows another image than the one this page opened; wait for it to load, then save."
REGION_CACHE = 16
PAINTER_HELP = (
    "**Keys:** 1–9 pick a class (shown on its button), U unknown · B brush · E eraser · R region "
    "(hover shows it, [ ] finer / coarser, click fills it) · "
    "F relabel region · [ ] brush size (brush, eraser) · Ctrl+Z / Ctrl+Shift+Z undo / redo · wheel zoom · "
    "space- or middle-drag pan · 0 fit. The eraser removes paint (the pixel keeps its starting "
    "label); **unknown** marks pixels to ignore."
)
# The Save buttons of the painter send what the canvas holds instead of the hidden textbox.
PAINT_PAYLOAD_JS = (
    "(...args) => { args[2] = window.slrPainter ? window.slrPainter.payload() : ''; return args; }"
)
# Events that reload the editor disable it in the browser first (painter.js expectLoad); they
# answer with a new image, or with :func:`keep_view` when refused.
EXPECT_LOAD_JS = "(...args) => { if (window.slrPainter) window.slrPainter.expectLoad(); return args; }"

_region_cache: OrderedDict[tuple[str, tuple[int, int]], np.ndarray] = OrderedDict()


def cached_regions(sha256: str, small_rgb: np.ndarray) -> np.ndarray:
    """The region levels of a picture at its size, remembered for the last few images."""
    key = (sha256, small_rgb.shape[:2])
    ids = _region_cache.get(key)
    if ids is None:
        ids = region_levels(small_rgb, small_rgb.shape[:2])
        _region_cache[key] = ids
        while len(_region_cache) > REGION_CACHE:
            _region_cache.popitem(last=False)
    _region_cache.move_to_end(key)
    return ids


def _document(message: str, *, loading: bool = False) -> str:
    return json.dumps({"token": uuid.uuid4().hex, "loading": loading, "message": message})


def loading_view() -> dict[str, Any]:
    """The first step of opening an image: the editor (and Save) are disabled until it has loaded."""
    return {"load": _document("Loading…", loading=True), "title": "Loading…", "status": ""}


@shows_user_errors
def load_editor(
    studio: Studio, project: str | None, image_id: int | None, start: str | None
) -> dict[str, Any]:
    """Open ``image_id`` (none: the first image without a mask) in the editor, starting from
    ``start``; per-image options (e.g. "unpainted pixels are background") start unticked."""
    empty = {"session": None, "rest_background": False, "status": ""}
    if not project:
        return {**empty, "load": _document("Choose a project first."), "title": "Choose a project first."}
    if image_id is None:
        first = browse.next_image(studio, project, "no_mask") or browse.next_image(studio, project, "all")
        image_id = first.id if first is not None else None
    if image_id is None:
        text = "No images yet: import some on the **Import** tab."
        return {**empty, "load": _document("No images yet."), "title": text}
    opened = labeling.edit_start(studio, image_id, START_KINDS.get(start or START_MASK, "mask"))
    image, info = opened.image, opened.project
    palette = class_palette(info)
    full = (image.height, image.width)
    size = edit_size(full)
    rgb = resize_rgb(studio.images.read_rgb(image.path), size)
    small_labels = None if opened.labels is None else resize_nearest(opened.labels, size)
    start_png = None if opened.labels is None else encode_label_png(opened.labels)
    token = opening_token(image.id, opened.version, opened.start, start_png, size)
    background = next((c.index for c in info.classes if c.is_background), None)
    document = editor_document(
        token=token,
        image_id=image.id,
        version=opened.version,
        name=image.name,
        rgb=rgb,
        start=small_labels,
        region_ids=cached_regions(image.sha256, rgb),
        palette=palette,
        background=background,
    )
    session = {
        "image_id": image.id,
        "token": token,
        "version": opened.version,
        "start": opened.start,
        "start_png": start_png,
        "full_size": list(full),
        "edit_size": list(size),
    }
    scale_note = f" · shown at {size[1]}×{size[0]}, saved at full size" if size != full else ""
    title = (
        f"**{image.name}** ({image.width}×{image.height}) · starting from {START_NAMES[opened.start]}"
        f"{scale_note}"
    )
    # a fresh id per opening, so the editor reopens (and drops strokes) even on the same token
    document["opened"] = uuid.uuid4().hex
    return {
        **empty,
        "load": json.dumps(document),
        "title": title,
        "session": session,
        "start": START_NAMES[opened.start],
        "current_image": image.id,
    }


@shows_user_errors
def follow_project(
    studio: Studio, project: str | None, image_id: int | None, session: dict | None
) -> dict[str, Any]:
    """The project changed (or was restored on load): drop the chosen image and close the editor
    when they are of another project (its image no longer shows, editable, under this one's name;
    the next visit of the tab opens one of this project); otherwise leave them untouched (skipped,
    not the values read here), so a Paint tab that opened an image while this ran keeps it."""

    def ours(image: int | None) -> bool:
        return bool(project) and labeling.is_project_image(studio, project, image)

    out: dict[str, Any] = {}
    if image_id is not None and not ours(image_id):
        out["current_image"] = None
    if session is not None and not ours(session["image_id"]):
        text = "Another project was chosen: pick an image in **Browse**, or **Next image without mask**."
        out.update(session=None, load=_document("Another project was chosen."), title=text, status="")
    return out


def _keeps_painting(image_id: int | None, session: dict | None) -> bool:
    """Whether entering the Paint tab keeps the open painting: it is of the chosen image (so
    unsaved strokes survive a look at another tab)."""
    return session is not None and (image_id is None or session["image_id"] == image_id)


def entering_view(image_id: int | None, session: dict | None) -> dict[str, Any]:
    """The first step of entering the Paint tab: the loading state when an image will be opened."""
    return {} if _keeps_painting(image_id, session) else loading_view()


def open_editor(
    studio: Studio, project: str | None, image_id: int | None, start: str | None, session: dict | None
) -> dict[str, Any]:
    """Entering the Paint tab (a click on it, or a button elsewhere that shows it): keep the open
    painting when it is of the chosen image, else :func:`load_editor`."""
    if _keeps_painting(image_id, session):
        return {}
    return load_editor(studio, project, image_id, start)


def _painting(session: dict | None, payload: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The editor's painting, checked to be of the image this page opened."""
    if not session:
        raise UserError("open an image in the editor first")
    try:
        sent = json.loads(payload or "{}")
    except json.JSONDecodeError:
        raise UserError("the editor sent no painting; reload the page") from None
    if sent.get("loading") or "png" not in sent:
        raise UserError(STILL_LOADING)
    if sent.get("token") != session["token"] or sent.get("image_id") != session["image_id"]:
        raise UserError(OTHER_IMAGE)
    try:
        return decode_painting(sent["png"], tuple(session["edit_size"]))
    except ValueError as exc:
        raise UserError(f"the editor sent a bad painting: {exc}") from None


@reports_user_errors("Not saved")
def save_painting(
    studio: Studio,
    project: str | None,
    session: dict | None,
    payload: str | None,
    rest_is_background: bool,
) -> dict[str, Any]:
    """Store the painting as the image's mask (:func:`_store_painting`); a refusal replaces the
    status line."""
    return _store_painting(studio, project, session, payload, rest_is_background)


def _store_painting(
    studio: Studio,
    project: str | None,
    session: dict | None,
    payload: str | None,
    rest_is_background: bool,
) -> dict[str, Any]:
    """Apply the painting at full size over the starting labels and store it as the image's mask,
    unless the mask changed since the painting started (another tab, another user)."""
    if not project:
        raise UserError("choose a project first")
    labels, painted = _painting(session, payload)
    info = labeling.get_project(studio, project)
    background = next((c.index for c in info.classes if c.is_background), None)
    if rest_is_background and background is None:
        raise UserError("this project has no background class")
    start = None if session["start_png"] is None else decode_label_png(session["start_png"])
    mask = apply_paint(
        start,
        labels,
        painted,
        tuple(session["full_size"]),
        unpainted_background=background if rest_is_background else None,
    )
    saved = labeling.save_mask(studio, int(session["image_id"]), mask, expected_version=session["version"])
    logger.info("saved mask of image %d (%.1f%% labelled)", session["image_id"], 100 * saved.labelled)
    status = f"Saved the mask: {saved.labelled:.1%} of the pixels labelled" + (
        " (the rest unknown)." if saved.is_partial else "."
    )
    return {"status": status, "session": {**session, "version": saved.version}}


@reports_user_errors("Not cleared")
def clear_mask(studio: Studio, project: str | None, session: dict | None) -> dict[str, Any]:
    """Delete the open image's mask (refused when it changed since it was opened), then reopen the
    image with nothing painted."""
    if not project or not session:
        raise UserError("open an image in the editor first")
    existed = labeling.delete_mask(studio, int(session["image_id"]), expected_version=session["version"])
    view = load_editor(studio, project, int(session["image_id"]), START_EMPTY)
    view["status"] = "Deleted the mask." if existed else "The image had no mask."
    return view


@shows_user_errors
def next_without_mask(studio: Studio, project: str | None, image_id: int | None) -> dict[str, Any]:
    """The next image (by name, wrapping) that has no mask yet, opened from nothing."""
    if not project:
        raise UserError("choose a project first")
    following = browse.next_image(studio, project, "no_mask", after=image_id)
    if following is None:
        raise UserError("every image has a mask")
    return load_editor(studio, project, following.id, START_MASK)


def keep_view(session: dict | None, refusal: gr.Error) -> dict[str, Any]:
    """A click that would reload the editor was refused: the reason as a toast, and the editor
    (disabled by the click, painter.js expectLoad) given back with the image it shows."""
    if session is None:
        raise refusal
    gr.Warning(str(refusal.message))
    return {"load": json.dumps({"keep": True, "token": session["token"], "nonce": uuid.uuid4().hex})}


def restart_editor(
    studio: Studio, project: str | None, image_id: int | None, start: str | None, session: dict | None
) -> dict[str, Any]:
    """"Start from" changed: the image again from that start (:func:`load_editor`), or kept."""
    try:
        return load_editor(studio, project, image_id, start)
    except gr.Error as refusal:
        return keep_view(session, refusal)


def next_or_keep(
    studio: Studio, project: str | None, image_id: int | None, session: dict | None
) -> dict[str, Any]:
    """"Next image without mask": :func:`next_without_mask`, or the open image kept."""
    try:
        return next_without_mask(studio, project, image_id)
    except gr.Error as refusal:
        return keep_view(session, refusal)


@reports_user_errors("Not saved")
def save_and_next(
    studio: Studio,
    project: str | None,
    session: dict | None,
    payload: str | None,
    rest_is_background: bool,
) -> dict[str, Any]:
    """Save the painting, then open the next image without a mask."""
    saved = _store_painting(studio, project, session, payload, rest_is_background)
    try:
        view = next_without_mask(studio, project, session["image_id"])
    except gr.Error:
        return {**saved, "status": saved["status"] + " Every image has a mask now."}
    return {**view, "status": saved["status"]}


# --- layout and wiring -------------------------------------------------------------------------


def build() -> SimpleNamespace:
    with new_tab("paint") as tab:
        title = gr.Markdown(elem_id="paint-title")
        with gr.Row():
            with gr.Column(scale=4):
                gr.HTML('<div id="painter"></div>', elem_id="painter-host")
            with gr.Column(scale=1, min_width=230):
                start = gr.Radio(
                    choices=list(START_CHOICES),
                    value=START_MASK,
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


def views(ui: SimpleNamespace) -> dict[str, Any]:
    """The views this tab's handlers update, by name."""
    p = ui.paint
    return {
        "load": p.load,
        "title": p.title,
        "session": p.session,
        "rest_background": p.rest_background,
        "start": p.start,
        "current_image": ui.current_image,
        "status": p.status,
    }


def wire(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    p = ui.paint
    load_inputs = [ui.project, ui.current_image, p.start]
    on(p.start.input, restart_editor, [*load_inputs, p.session], views.paint, studio, js=EXPECT_LOAD_JS)
    save_inputs = [ui.project, p.session, p.payload, p.rest_background]
    saved = on(
        p.save.click, save_painting, save_inputs, views.paint, studio, js=PAINT_PAYLOAD_JS
    )
    saved.success(bind(project_summary, studio), [ui.project], [ui.summary])
    saved = on(
        p.save_next.click, save_and_next, save_inputs, views.paint, studio, js=PAINT_PAYLOAD_JS
    )
    saved.success(bind(project_summary, studio), [ui.project], [ui.summary])
    on(
        p.next_btn.click, next_or_keep, [ui.project, ui.current_image, p.session], views.paint, studio,
        js=EXPECT_LOAD_JS,
    )
    cleared = on(p.clear.click, clear_mask, [ui.project, p.session], views.paint, studio)
    cleared.success(bind(project_summary, studio), [ui.project], [ui.summary])
    # The one path that opens an image on entering the tab, whether clicked or shown by a button
    # elsewhere (Browse's Paint it, Review's Correct): a second load of the same image would drop strokes.
    entering = on(p.tab.select, entering_view, [ui.current_image, p.session], views.paint)
    on(
        entering.then,
        open_editor,
        [ui.project, ui.current_image, p.start, p.session],
        views.paint,
        studio,
    )

