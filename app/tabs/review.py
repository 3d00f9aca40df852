"""Review screen: the model's pseudo-label over the image, its legend; accept, correct, suggest
next, previous / next image.

One service call per event. The display-sized picture and labels are kept in the page's state
(``cache``), so moving the opacity slider only blends them again. Handlers return dicts keyed by
view names: ``current_image``, ``picture``, ``legend``, ``title``, ``cache``, ``status``,
``replace`` (the button that confirms replacing a painted mask, shown only when asked).
"""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.overlay import blend, class_shares, fit_size, legend_html, resize_nearest, resize_rgb
from app.tabs import new_tab, select
from app.tabs.paint import START_PSEUDO
from app.tabs.projects import class_palette, project_summary
from app.wiring import bind, on
from services import labeling, review
from services.context import Studio
from services.errors import UserError

logger = logging.getLogger(__name__)

DISPLAY_SIDE = 1024
MASK_NOTES = {None: "", "human": " · has a painted mask", "accepted": " · accepted"}


def _empty(title: str) -> dict[str, Any]:
    return {
        "current_image": None,
        "picture": None,
        "legend": "",
        "title": title,
        "cache": None,
        "status": "",
        "replace": gr.update(visible=False),
    }


@shows_user_errors
def show(
    studio: Studio, project: str | None, image_id: int | None, opacity: float, move: str = "stay"
) -> dict[str, Any]:
    """The review of ``image_id`` (none: the image the model is least sure of), or of the image
    ``move`` ("suggest", "next", "previous") from it; the status line is cleared (it spoke of the
    image shown before)."""
    if not project:
        return _empty("Choose a project first.")
    view = review.review_view(studio, project, image_id, move=move)
    if view is None:
        return _empty("Nothing to review yet: press **Train on my labels** first.")
    rgb, full = studio.images.read_rgb_reduced(view.image.path, DISPLAY_SIDE)  # a JPEG decoded small
    size = fit_size(full, DISPLAY_SIDE, upscale=True)  # labels by nearest, photo smooth
    small = resize_rgb(rgb, size)
    if view.pseudo is None:
        return {
            **_empty(f"**{view.image.name}** has no pseudo-label yet: train a model first."),
            "current_image": view.image.id,
            "picture": small,
        }
    palette = class_palette(view.project)
    lut = palette.lut()
    for c in view.project.classes:
        if c.is_background:
            lut[c.index, 3] = 0  # background is left as the photo, not painted black over it
    labels = resize_nearest(view.pseudo.labels, size)
    classes = [(c.index, c.name, c.color) for c in view.project.classes]
    legend = legend_html(class_shares(view.pseudo.labels, classes, view.pseudo.confidence))
    title = (
        f"**{view.image.name}** · model v{view.pseudo.version} · confidence {view.pseudo.score:.2f}"
        f"{MASK_NOTES[view.mask_source]}"
    )
    cache = {"image_id": view.image.id, "rgb": small, "labels": labels, "lut": lut}
    return {
        "current_image": view.image.id,
        "picture": blend(small, labels, lut, opacity),
        "legend": legend,
        "title": title,
        "cache": cache,
        "status": "",
        "replace": gr.update(visible=False),
    }


def follow_project(studio: Studio, project: str | None, cache: dict | None) -> dict[str, Any]:
    """The project changed (or was chosen again): nothing of another project stays (the next visit
    shows one of this one); a review of this project's image, e.g. rendered by the Review tab while
    the project's other views were updating, is left as it is."""
    if project and cache and labeling.is_project_image(studio, project, cache.get("image_id")):
        return {}
    return {k: v for k, v in _empty("").items() if k != "current_image"}


def reblend(cache: dict | None, opacity: float) -> dict[str, Any]:
    """The opacity slider moved: blend the cached picture and labels again (no database, no disk)."""
    if not cache:
        return {}
    return {"picture": blend(cache["rgb"], cache["labels"], cache["lut"], opacity)}


@shows_user_errors
def accept(
    studio: Studio,
    project: str | None,
    image_id: int | None,
    opacity: float,
    overwrite: bool = False,
    confident_only: bool = False,
) -> dict[str, Any]:
    """Store the pseudo-label (or only its confident pixels) as the image's mask, then show the
    review again. Over a painted mask only with ``overwrite`` (the "Replace my painted mask"
    button, which stores the whole pseudo-label); without, the status asks and that button appears."""
    if image_id is None:
        raise UserError("choose an image to review first")
    try:
        partial = review.accept_pseudo_label(
            studio, image_id, overwrite=overwrite, confident_only=confident_only
        )
    except review.PaintedMaskKept as exc:
        return {"status": f"{exc}.", "replace": gr.update(visible=True)}
    if confident_only:
        status = "Accepted the confident pixels as a partial mask (the rest stays unknown)."
    else:
        status = "Accepted as the image's mask" + (" (uncertain pixels stay unknown)." if partial else ".")
    return {**show(studio, project, image_id, opacity), "status": status}


@shows_user_errors
def correct_in_editor(image_id: int | None) -> dict[str, Any]:
    """Open the reviewed image in the Paint tab, starting from its pseudo-label (the painting open
    there is closed: showing the tab opens this image afresh)."""
    if image_id is None:
        raise UserError("choose an image to review first")
    return {"tab": select("paint"), "start": START_PSEUDO, "current_image": image_id, "session": None}


# --- layout and wiring -------------------------------------------------------------------------


def build() -> SimpleNamespace:
    with new_tab("review") as tab:
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
                accept_confident = gr.Button("Accept the confident pixels", elem_id="accept-confident-btn")
                replace = gr.Button(
                    "Replace my painted mask", variant="stop", visible=False, elem_id="replace-mask-btn"
                )
                correct = gr.Button("Correct in editor", elem_id="correct-btn")
                suggest = gr.Button("Suggest next image to label", elem_id="suggest-btn")
                status = gr.Markdown(elem_id="review-status")
        cache = gr.State(None)
    return SimpleNamespace(**locals())


def views(ui: SimpleNamespace) -> dict[str, Any]:
    """The views this tab's handlers update, by name."""
    r = ui.review
    return {
        "current_image": ui.current_image,
        "picture": r.picture,
        "legend": r.legend,
        "title": r.title,
        "cache": r.cache,
        "status": r.status,
        "replace": r.replace,
    }


def wire(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    r = ui.review
    inputs = [ui.project, ui.current_image, r.opacity]
    on(r.opacity.release, reblend, [r.cache, r.opacity], views.review)
    for button, confident_only in ((r.accept, False), (r.accept_confident, True)):
        accepted = on(
            button.click,
            functools.partial(accept, confident_only=confident_only),
            inputs,
            views.review,
            studio,
        )
        accepted.success(bind(project_summary, studio), [ui.project], [ui.summary])
    replaced = on(r.replace.click, lambda *a: accept(studio, *a, overwrite=True), inputs, views.review)
    replaced.success(bind(project_summary, studio), [ui.project], [ui.summary])
    for button, move in ((r.suggest, "suggest"), (r.next_btn, "next"), (r.previous, "previous")):
        on(button.click, lambda *a, m=move: show(studio, *a, move=m), inputs, views.review)
    # shows the Paint tab, whose select event opens the image (from its pseudo-label: the open
    # painting is closed, so it is not kept)
    on(
        r.correct.click,
        correct_in_editor,
        [ui.current_image],
        {
            "tab": ui.tabs,
            "start": ui.paint.start,
            "current_image": ui.current_image,
            "session": ui.paint.session,
        },
    )
    on(r.tab.select, show, inputs, views.review, studio)
