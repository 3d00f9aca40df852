"""Tag screen: which classes an image shows, as checkboxes; save & next untagged, previous / next
image. By keyboard (app/static/tagger.js): type a class name, Enter toggles the best match, a
second Enter saves and moves on; keys 1–9 (shown on the first nine) toggle those directly.

Every user event is one service call (one transaction). Handlers return dicts keyed by view
names: ``current_image``, ``picture``, ``title``, ``classes`` (checkbox update), ``shown`` (the
shown image's id and name, the version of its tags (a save naming an older one is refused) and the
class choices),
``status`` (cleared whenever another image is shown, so it never speaks of another image).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.errors import reports_user_errors, shows_user_errors
from app.tabs import new_tab
from app.tabs.projects import project_summary
from app.wiring import bind, on
from services import browse
from services.browse import TagView
from services.context import Studio
from services.errors import UserError

logger = logging.getLogger(__name__)

NO_IMAGES = "No images yet: import some on the **Import** tab."
VIEW_SIZE = 1024  # the tag view shows a cached JPEG of at most this side, not the full image
OTHER_IMAGE = "the Tag view shows another image than the one chosen: open the Tag tab again"
KEYED = 9  # classes 1..9 have a key
# A save sends the boxes ticked on the screen (their names are the class ids): a tick made just
# before Enter may not have reached the component's value yet.
TICKED_JS = (
    "(...args) => { const boxes = document.querySelectorAll('#tag-classes input[type=checkbox]');"
    " if (boxes.length) { args[3] = Array.from(boxes).filter((b) => b.checked).map((b) => Number(b.name)); }"
    " return args; }"
)


def choice_label(position: int, name: str) -> str:
    """A checkbox label: the first nine show their key, e.g. ``"1 · person"``."""
    return f"{position + 1} · {name}" if position < KEYED else name


def _render(studio: Studio, view: TagView) -> dict[str, Any]:
    choices = [(choice_label(k, name), class_id) for k, (name, class_id) in enumerate(view.classes)]
    if view.state is None:
        return {"current_image": None, "picture": None, "title": NO_IMAGES, "shown": None,
                "classes": gr.update(choices=choices, value=[]), "status": ""}
    state = view.state
    picture = str(studio.images.thumbnail(state.image.path, size=VIEW_SIZE))
    return {
        "current_image": state.image.id,
        "picture": picture,
        "title": f"**{state.image.name}** · {tag_words(state)}",
        "classes": gr.update(choices=choices, value=list(view.tag_ids)),
        "shown": {
            "image_id": state.image.id,
            "name": state.image.name,
            "version": view.tags_version,
            "choices": [list(choice) for choice in choices],
        },
        "status": "",
    }


def tag_words(state: browse.ImageState) -> str:
    """What the title says of an image's tags."""
    if state.tags:
        return f"tagged: {', '.join(state.tags)}"
    return "checked: no tags" if state.tags_checked else "not tagged yet"


@shows_user_errors
def show(studio: Studio, project: str | None, image_id: int | None, move: str = "stay") -> dict[str, Any]:
    """The tag view of ``image_id`` (none: the first untagged image), or of the image ``move``
    ("next", "previous", "next_untagged") from it."""
    if not project:
        return {"current_image": None, "picture": None, "title": "Choose a project first.",
                "shown": None, "classes": gr.update(choices=[], value=[]), "status": ""}
    return _render(studio, browse.tag_view(studio, project, image_id, move=move))


@shows_user_errors
def refresh(studio: Studio, project: str | None, image_id: int | None, shown: dict | None) -> dict[str, Any]:
    """:func:`show`, except that nothing is sent when the view already shows exactly that (the
    same image, tags version and class list): entering the tab or choosing the same project again
    while the person ticks boxes must not set them back to the stored tags."""
    out = show(studio, project, image_id)
    return {} if shown is not None and out.get("shown") == shown else out


def _ids(class_ids: Sequence[int] | None) -> list[int]:
    return [int(c) for c in class_ids or []]


@reports_user_errors("Not saved")
def save(
    studio: Studio,
    project: str | None,
    image_id: int | None,
    shown: dict | None,
    class_ids: Sequence[int] | None,
    move: str = "stay",
) -> dict[str, Any]:
    """Store the checked classes as the image's tags, unless they were saved elsewhere since they
    were ``shown`` (``{"image_id", "name", "version", "choices"}``); then show the image ``move``
    from it. An image saved with no tags counts as checked ("next untagged" moves past it from then
    on)."""
    if not project:
        raise UserError("choose a project first")
    if image_id is None:
        raise UserError("no image to tag")
    if shown and shown["image_id"] != image_id:
        raise UserError(OTHER_IMAGE)
    ids = _ids(class_ids)
    version = shown["version"] if shown else None
    view = browse.tag_view(studio, project, image_id, save=ids, expected_version=version, move=move)
    to = f" to {shown['name']}" if shown and move != "stay" else ""
    status = f"Saved {len(ids)} tag(s){to}." if ids else f"Saved{to}: none of the classes (checked, no tags)."
    if view.every_image_tagged:
        status += " Every other image is tagged."
    view_out = _render(studio, view)
    out = view_out if move != "stay" else {"title": view_out["title"], "shown": view_out["shown"]}
    return {**out, "status": status}


# --- layout and wiring -------------------------------------------------------------------------


def build() -> SimpleNamespace:
    with new_tab("tag") as tab, gr.Row():
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
                previous = gr.Button("◀ Previous (←)", size="sm", elem_id="tag-previous")
                save = gr.Button("Save (Shift+Enter)", size="sm", elem_id="tag-save")
                skip = gr.Button("Skip to next untagged (→)", size="sm", elem_id="tag-next")
            search = gr.Textbox(
                placeholder="Type to find a class, Enter toggles it…",
                show_label=False,
                container=False,
                elem_id="tag-search",
            )
            classes = gr.CheckboxGroup(
                label="Classes in this image (type a name + Enter, or keys 1–9)", elem_id="tag-classes"
            )
            status = gr.Markdown(elem_id="tag-status")
        shown = gr.State(None)
    return SimpleNamespace(**locals())


def views(ui: SimpleNamespace) -> dict[str, Any]:
    """The views this tab's handlers update, by name."""
    return {
        "current_image": ui.current_image,
        "picture": ui.tag.picture,
        "title": ui.tag.title,
        "classes": ui.tag.classes,
        "shown": ui.tag.shown,
        "status": ui.tag.status,
    }


def wire(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    t = ui.tag
    inputs = [ui.project, ui.current_image, t.shown, t.classes]
    saved = on(
        t.save_next.click, lambda *a: save(studio, *a, move="next_untagged"), inputs, views.tag, js=TICKED_JS
    )
    saved.success(bind(project_summary, studio), [ui.project], [ui.summary])
    saved = on(t.save.click, save, inputs, views.tag, studio, js=TICKED_JS)
    saved.success(bind(project_summary, studio), [ui.project], [ui.summary])
    for button, move in ((t.skip, "next_untagged"), (t.previous, "previous")):
        on(
            button.click,
            lambda *a, m=move: show(studio, *a, move=m),
            [ui.project, ui.current_image],
            views.tag,
        )
    on(t.tab.select, refresh, [ui.project, ui.current_image, t.shown], views.tag, studio)
