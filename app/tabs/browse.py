"""Browse screen: a paged gallery of cached thumbnails with label filters; picking an image."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.tabs import new_tab, select
from app.wiring import bind, on
from services import browse, labeling
from services.context import Studio

logger = logging.getLogger(__name__)

PAGE_SIZE = 48
MASK_WORDS = {None: "no mask", "human": "painted mask", "accepted": "accepted pseudo-label"}
FILTERS = (
    ("All", "all"),
    ("Untagged", "untagged"),
    ("Tagged", "tagged"),
    ("Has mask", "has_mask"),
    ("Has pseudo-label", "has_pseudo_label"),
    ("Low confidence", "low_confidence"),
)


def filter_choices(studio: Studio, project: str | None) -> list[tuple[str, str]]:
    """The filter radio's choices, each with how many images it matches."""
    if not project:
        return list(FILTERS)
    counts = labeling.image_counts(studio, project)
    return [(f"{label} ({counts.get(value, 0)})", value) for label, value in FILTERS]


STATUS_MARKS = {"tags": "🏷", "mask": "▣", "accepted": "☑", "pseudo": "◐", "none": "○"}


def tile_caption(item: browse.ImageState) -> str:
    """A gallery tile's status line: tagged / painted mask / accepted / pseudo-label confidence."""
    marks = []
    if item.tags:
        marks.append(f"{STATUS_MARKS['tags']} {len(item.tags)}")
    if item.mask_source == "human":
        marks.append(f"{STATUS_MARKS['mask']} mask")
    elif item.mask_source == "accepted":
        marks.append(f"{STATUS_MARKS['accepted']} accepted")
    if item.score is not None:
        marks.append(f"{STATUS_MARKS['pseudo']} {item.score:.2f}")
    return " ".join(marks or [f"{STATUS_MARKS['none']} unlabelled"]) + f" · {item.image.name}"


@shows_user_errors
def show_page(
    studio: Studio, project: str | None, image_filter: str | None, page: float | None
) -> dict[str, Any]:
    """The gallery page: thumbnails with status captions, their image ids, the page label and
    number, and the filter radio with counts. Only cached thumbnails (longest side 256 px) go to
    the browser, never full images."""
    if not project:
        return {"gallery": [], "page_ids": [], "page_label": "No project.", "page": 0,
                "filter": gr.update(choices=filter_choices(studio, None))}
    result = browse.browse_page(
        studio, project, image_filter or "all", page=int(page or 0), page_size=PAGE_SIZE
    )
    tiles = [(str(studio.images.thumbnail(item.image.path)), tile_caption(item)) for item in result.items]
    first = result.page * PAGE_SIZE + 1
    label = (
        f"Images {first}–{first + len(tiles) - 1} of {result.total} · page {result.page + 1}/{result.pages}"
        " · 🏷 tags ▣ painted mask ☑ accepted ◐ pseudo-label confidence"
        if tiles
        else "No image matches this filter."
    )
    return {
        "gallery": tiles,
        "page_ids": [item.image.id for item in result.items],
        "page_label": label,
        "page": result.page,
        "filter": gr.update(choices=filter_choices(studio, project)),
    }


def page_step(page: float | None, step: int) -> int:
    """The page number ``step`` pages on (``show_page`` clamps it to the pages there are)."""
    return max(0, int(page or 0) + step)


def select_image(page_ids: list[int], evt: gr.SelectData) -> int | None:
    """The image id of the clicked gallery tile."""
    index = evt.index if isinstance(evt.index, int) else None
    if index is None or not page_ids or index >= len(page_ids):
        return None
    return page_ids[index]


@shows_user_errors
def describe_image(studio: Studio, image_id: int | None) -> str:
    """A line about the chosen image: name, size, labels."""
    if image_id is None:
        return "Click an image to choose it, then tag, paint or review it on the other tabs."
    state = browse.image_state(studio, image_id)
    image = state.image
    parts = [f"**{image.name}** ({image.width}×{image.height})"]
    parts.append("tags: " + (", ".join(state.tags) if state.tags else "none"))
    parts.append(MASK_WORDS[state.mask_source])
    if state.score is not None:
        parts.append(f"pseudo-label confidence {state.score:.2f}")
    return " · ".join(parts)


# --- layout and wiring -------------------------------------------------------------------------


def build() -> SimpleNamespace:
    with new_tab("browse") as tab:
        image_filter = gr.Radio(
            choices=list(FILTERS), value="all", label="Show", elem_id="browse-filter"
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


def views(ui: SimpleNamespace) -> dict[str, Any]:
    """The views this tab's handlers update, by name."""
    return {
        "gallery": ui.browse.gallery,
        "page_ids": ui.browse.page_ids,
        "page_label": ui.browse.page_label,
        "page": ui.browse.page,
        "filter": ui.browse.image_filter,
    }


def wire(studio: Studio, ui: SimpleNamespace, views: SimpleNamespace) -> None:
    b = ui.browse
    show = [ui.project, b.image_filter, b.page]
    on(b.image_filter.input, lambda *a: show_page(studio, a[0], a[1], 0), show, views.browse)
    for button, step in ((b.prev_btn, -1), (b.next_btn, 1)):
        on(
            button.click,
            lambda *a, s=step: show_page(
                studio, a[0], a[1], page_step(a[2], s)
            ),
            show,
            views.browse,
        )
    b.gallery.select(select_image, [b.page_ids], [ui.current_image]).then(
        bind(describe_image, studio), [ui.current_image], [b.info]
    )
    on(b.tab.select, show_page, show, views.browse, studio)
    # Each button only shows its tab: the tab's own select event renders it (and the Paint tab
    # opens the image), once; a second render of the same image would reset what the person does
    # meanwhile (ticks, strokes).
    b.to_tag.click(lambda: select("tag"), None, [ui.tabs])
    b.to_paint.click(lambda: select("paint"), None, [ui.tabs])
    b.to_review.click(lambda: select("review"), None, [ui.tabs])
