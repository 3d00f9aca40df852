"""Labelling in headless Chromium with real keys and clicks: what the Tag tab stores whatever has
focus when Enter is pressed, tags saved from two pages, re-entering the Paint tab, the painter's
hotkeys after a form control took focus, switching project with an open editor, status lines that
never speak of another image, and a failed Create project.

The projects are made through the services on the served data folder (MSRC photos, its 21
classes), the page then reloaded; every labelling action is a key press or a click.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from services import labeling
from services.context import Studio
from services.importing import import_dataset
from tests.browser_support import STEP_MS, at, open_tab, painter_ready, shot, stroke
from tests.ui_support import image_ids, publish_pseudo_labels

pytestmark = pytest.mark.browser

MSRC_PHOTOS = ["1_10_s.jpg", "1_11_s.jpg", "1_12_s.jpg", "1_13_s.jpg", "1_14_s.jpg"]


def _msrc_classes(msrc: Path) -> list[str]:
    return [line.strip() for line in (msrc / "classes.txt").read_text().splitlines() if line.strip()]


def _make_project(studio: Studio, msrc: Path, tmp: Path, name: str, photos: list[str]) -> dict[str, int]:
    """Project ``name`` with MSRC's 21 classes (no background) and ``photos``; name -> image id."""
    folder = tmp / name
    folder.mkdir(parents=True)
    for photo in photos:
        shutil.copy(msrc / "train" / "images" / photo, folder / photo)
    labeling.create_project(studio, name, _msrc_classes(msrc), has_background=False)
    import_dataset(studio, folder, project=name)
    return image_ids(studio, name)


def _choose_project(page: object, name: str) -> None:
    """Pick ``name`` in the header's project chooser (a click, then a click on the option)."""
    from playwright.sync_api import expect

    page.locator("#project input").click()
    page.get_by_role("option", name=name, exact=True).click()
    expect(page.locator("#project input")).to_have_value(name)


def _tags(studio: Studio, project: str, image_id: int) -> set[str]:
    names = {c.id: c.name for c in labeling.get_project(studio, project).classes}
    return {names[t] for t in labeling.get_image_tags(studio, image_id)}


def _no_error_badges(page: object) -> None:
    from playwright.sync_api import expect

    expect(page.locator("[data-testid=status-tracker] .error:visible")).to_have_count(0)


@pytest.fixture()
def msrc(shared_data: Path) -> Path:
    return shared_data / "msrc"


def test_enter_saves_the_ticked_classes_whatever_has_focus(
    server: tuple[str, Path], page: object, msrc: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    url, data = server
    studio = Studio.open(data)
    try:
        ids = _make_project(studio, msrc, tmp_path, "enter", MSRC_PHOTOS)
        page.goto(url)
        _choose_project(page, "enter")
        open_tab(page, "Tag")
        expect(page.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[0])
        boxes = page.locator("#tag-classes label")
        # two ticks with the mouse (focus stays on "water"), then Enter
        boxes.filter(has_text="grass").click()
        boxes.filter(has_text="water").click()
        page.keyboard.press("Enter")
        expect(page.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[1])
        expect(page.locator("#tag-status")).to_contain_text(f"Saved 2 tag(s) to {MSRC_PHOTOS[0]}")
        assert _tags(studio, "enter", ids[MSRC_PHOTOS[0]]) == {"grass", "water"}

        # the keyboard path: search, Tab, Space, clear the search, Tab, Enter
        page.locator("#tag-search input, #tag-search textarea").first.click()
        page.keyboard.type("build")
        page.keyboard.press("Tab")
        page.keyboard.press("Space")
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Control+a")
        page.keyboard.press("Backspace")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        expect(page.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[2])
        assert _tags(studio, "enter", ids[MSRC_PHOTOS[1]]) == {"building"}
        # Enter again, nothing ticked: saved with no tags, nothing toggled on the way
        page.keyboard.press("Enter")
        expect(page.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[3])
        assert _tags(studio, "enter", ids[MSRC_PHOTOS[2]]) == set()
        assert _tags(studio, "enter", ids[MSRC_PHOTOS[1]]) == {"building"}

        # an image saved with no tags: its title and the header count it as done
        page.keyboard.press("ArrowLeft")
        expect(page.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[2])
        expect(page.locator("#tag-title")).to_contain_text("checked: no tags")
        expect(page.locator("#tag-status")).to_have_text("")  # no "Saved" under another image
        shot(page, "tag-enter")
        # (read after a reload: a job poll computed before the save may land after it)
        page.reload()
        expect(page.locator("#summary")).to_contain_text("3 tagged (1 with no tags)")
    finally:
        studio.close()


def test_tags_saved_from_two_pages_the_second_is_refused(
    server: tuple[str, Path], page: object, browser: object, msrc: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    url, data = server
    studio = Studio.open(data)
    try:
        ids = _make_project(studio, msrc, tmp_path, "twotabs", MSRC_PHOTOS[:2])
        other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        for p in (page, other):
            p.goto(url)
            _choose_project(p, "twotabs")
            open_tab(p, "Tag")
            expect(p.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[0])
        page.locator("#tag-classes label").filter(has_text="grass").click()
        page.keyboard.press("Shift+Enter")
        expect(page.locator("#tag-status")).to_contain_text("Saved 1 tag(s)")
        other.locator("#tag-classes label").filter(has_text="sky").click()
        other.keyboard.press("Shift+Enter")
        expect(other.get_by_test_id("toast-body").first).to_contain_text("changed since you opened it")
        expect(other.locator("#tag-status")).to_contain_text("Not saved")
        assert _tags(studio, "twotabs", ids[MSRC_PHOTOS[0]]) == {"grass"}
        shot(other, "tag-conflict")
        other.context.close()
    finally:
        studio.close()


def test_paint_reentry_hotkeys_after_a_radio_and_project_switch(
    server: tuple[str, Path], page: object, msrc: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    url, data = server
    studio = Studio.open(data)
    try:
        _make_project(studio, msrc, tmp_path, "paint-a", MSRC_PHOTOS[:2])
        _make_project(studio, msrc, tmp_path, "paint-b", MSRC_PHOTOS[2:4])
        page.goto(url)
        _choose_project(page, "paint-a")
        open_tab(page, "Browse")
        page.locator("#gallery img").first.click()
        expect(page.locator("#browse-info")).to_contain_text(MSRC_PHOTOS[0])
        page.click("#to-paint")
        painter_ready(page, MSRC_PHOTOS[0])
        # opened once: a second load of the same image would drop the strokes made meanwhile
        opened = page.evaluate("() => window.slrPainter.state.doc.opened")
        page.wait_for_timeout(1500)
        assert page.evaluate("() => window.slrPainter.state.doc.opened") == opened
        # Paint -> Train -> Paint: the open image stays, no error toast or badge
        open_tab(page, "Train")
        open_tab(page, "Paint")
        painter_ready(page, MSRC_PHOTOS[0])
        page.wait_for_timeout(1500)
        expect(page.get_by_test_id("toast-body")).to_have_count(0)
        _no_error_badges(page)

        # the painter's hotkeys still work once the Start-from radio has focus
        page.locator("#paint-start label").filter(has_text="nothing").click()
        painter_ready(page, MSRC_PHOTOS[0])
        page.keyboard.press("3")
        value = page.evaluate("() => window.slrPainter.state.value")
        key3 = page.evaluate("() => window.slrPainter.state.doc.classes.find((c) => c.key === '3').value")
        assert value == key3
        page.keyboard.press("r")
        assert page.evaluate("() => window.slrPainter.state.tool") == "region"
        # the region tool: hover shows the region, ] makes it coarser, a click fills it
        level = page.evaluate("() => window.slrPainter.state.level")
        page.keyboard.press("]")
        assert page.evaluate("() => window.slrPainter.state.level") == level + 1
        page.mouse.move(*at(page, 150, 150))
        page.mouse.move(*at(page, 160, 160))
        hovered = page.evaluate("() => window.slrPainter.state.hoverId")
        region = page.evaluate(
            "() => { const s = window.slrPainter.state; return s.spx.filter((v) => v === s.hoverId).length; }"
        )
        assert hovered >= 0 and region > 100
        shot(page, "paint-region-hover")
        page.mouse.click(*at(page, 160, 160))
        filled = page.evaluate("() => window.slrPainter.state.painted.reduce((a, b) => a + b, 0)")
        assert filled == region
        page.keyboard.press("Control+z")
        page.keyboard.press("b")
        stroke(page, [(60, 60), (160, 60)])
        page.click("#paint-save")
        expect(page.locator("#paint-status")).to_contain_text("Saved the mask")

        # another project: the editor no longer shows (or saves) this one's image, no stale status
        _choose_project(page, "paint-b")
        expect(page.locator("#paint-title")).not_to_contain_text(MSRC_PHOTOS[0])
        expect(page.locator("#paint-status")).to_have_text("")
        # (the editor reads its document every 150 ms: wait for it, not for the title's update)
        page.wait_for_function(
            "(name) => (window.slrPainter.state.doc || {}).name !== name", arg=MSRC_PHOTOS[0]
        )
        expect(page.locator("#paint-save")).to_be_disabled()
        _no_error_badges(page)
        shot(page, "paint-project-switch")
    finally:
        studio.close()


def test_a_refused_next_image_gives_the_editor_back(
    server: tuple[str, Path], page: object, msrc: Path, tmp_path: Path
) -> None:
    """"Next image without mask" when every image has one: a toast, and the open image stays
    editable (the click disabled the editor for its round trip; no new image came back)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    url, data = server
    studio = Studio.open(data)
    try:
        ids = _make_project(studio, msrc, tmp_path, "all-masked", MSRC_PHOTOS[:2])
        for image_id in ids.values():
            labeling.save_mask(studio, image_id, np.full((213, 320), 3, np.uint8))  # MSRC: 320x213
        page.goto(url)
        _choose_project(page, "all-masked")
        open_tab(page, "Paint")
        painter_ready(page, MSRC_PHOTOS[0])
        opened = page.evaluate("() => window.slrPainter.state.doc.opened")
        page.click("#paint-next")
        expect(page.get_by_test_id("toast-body").first).to_contain_text("every image has a mask")
        page.wait_for_function("() => window.slrPainter.state.ready")
        expect(page.locator("#paint-save")).to_be_enabled()
        assert page.evaluate("() => window.slrPainter.state.doc.opened") == opened
        stroke(page, [(60, 60), (160, 60)])
        page.click("#paint-save")
        expect(page.locator("#paint-status")).to_contain_text("Saved the mask")
    finally:
        studio.close()


def test_status_lines_and_a_failed_create(
    server: tuple[str, Path], page: object, msrc: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    url, data = server
    studio = Studio.open(data)
    try:
        _make_project(studio, msrc, tmp_path, "status", MSRC_PHOTOS[:3])
        publish_pseudo_labels(studio, dict.fromkeys(MSRC_PHOTOS[:3], 0.5), project="status")
        page.goto(url)
        _choose_project(page, "status")

        # a failed Create project: a toast, no Error badge over the project chooser
        page.fill("#new-project-name textarea", "status")
        page.click("#create-project")
        expect(page.get_by_test_id("toast-body").first).to_contain_text("exists")
        page.wait_for_timeout(500)
        _no_error_badges(page)
        expect(page.locator("#project input")).to_have_value("status")
        shot(page, "projects-create-failed")
        # a new project of MSRC's classes: stuff in its usual colours, the others far apart
        page.fill("#new-project-name textarea", "palette")
        page.fill("#new-project-classes textarea", "\n".join(_msrc_classes(msrc)))
        page.click("#create-project")
        expect(page.locator("#projects-status")).to_contain_text("Created project")
        expect(page.locator("#classes-text textarea")).to_have_value(re.compile("sky #6ec1f5"))
        shot(page, "projects-palette")
        _choose_project(page, "status")

        # Review: "Accepted" does not stay under the next image
        open_tab(page, "Review")
        expect(page.locator("#review-title")).to_contain_text(MSRC_PHOTOS[0])
        page.click("#accept-btn")
        expect(page.locator("#review-status")).to_contain_text("Accepted")
        page.click("#review-next")
        expect(page.locator("#review-title")).to_contain_text(MSRC_PHOTOS[1])
        expect(page.locator("#review-status")).to_have_text("")
        # a 320 px photo fills the view (labels scaled by nearest on the server)
        assert page.locator("#review-picture img").bounding_box()["width"] > 500
        shot(page, "review-small-photo")

        # Tag: a saved line does not stay when moving on without saving
        open_tab(page, "Tag")
        page.locator("#tag-classes label").filter(has_text="grass").click()
        page.keyboard.press("Shift+Enter")
        expect(page.locator("#tag-status")).to_contain_text("Saved 1 tag(s)")
        page.keyboard.press("ArrowRight")
        expect(page.locator("#tag-title")).not_to_contain_text(MSRC_PHOTOS[0])
        expect(page.locator("#tag-status")).to_have_text("")
        assert page.locator("#tag-picture img").bounding_box()["width"] > 500  # scaled up
        shot(page, "tag-small-photo")

        # Train: the minutes field shows the configured default (this server's 0.25), or when
        # none is configured the plan's default as its placeholder; never 0
        open_tab(page, "Train")
        minutes = page.locator("#train-minutes input")
        expect(minutes).to_have_value("0.25")
        expect(minutes).to_have_attribute("placeholder", re.compile(r"default: \d+ on a CPU"))
        shot(page, "train-minutes")

        # Paint: a refused save replaces "Saved the mask"
        open_tab(page, "Paint")
        painter_ready(page, "")
        stroke(page, [(60, 60), (160, 60)])
        page.click("#paint-save")
        expect(page.locator("#paint-status")).to_contain_text("Saved the mask")
        opened = page.evaluate("() => window.slrPainter.state.doc.image_id")
        labeling.save_mask(studio, opened, labeling.get_mask(studio, opened))  # someone else saves it
        stroke(page, [(60, 90), (160, 90)])
        page.click("#paint-save")
        expect(page.locator("#paint-status")).to_contain_text("Not saved")
        shot(page, "paint-refused")
    finally:
        studio.close()


def test_classes_beyond_nine_by_typing_their_names(
    server: tuple[str, Path], page: object, msrc: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    url, data = server
    studio = Studio.open(data)
    try:
        ids = _make_project(studio, msrc, tmp_path, "typing", MSRC_PHOTOS[:3])
        page.goto(url)
        _choose_project(page, "typing")
        open_tab(page, "Tag")
        expect(page.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[0])
        search = page.locator("#tag-search textarea, #tag-search input").first
        # "bo": body and boat and book match; the names starting with it first, ↓ moves on
        page.keyboard.type("bo")
        expect(search).to_have_value("bo")
        expect(page.locator("#tag-classes label.slr-highlight")).to_have_text("book")
        page.keyboard.press("ArrowDown")
        expect(page.locator("#tag-classes label.slr-highlight")).to_have_text("body")
        page.keyboard.press("Enter")  # toggles body (class 20), clears the filter
        expect(search).to_have_value("")
        page.keyboard.type("wat")
        shot(page, "tag-type-to-filter")
        page.keyboard.press("Enter")
        page.keyboard.type("sk")
        page.keyboard.press("Escape")  # never mind
        expect(search).to_have_value("")
        page.locator("#tag-classes label").filter(has_text="grass").click()  # the mouse still works
        page.keyboard.press("Enter")  # no filter: save & next
        expect(page.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[1])
        assert _tags(studio, "typing", ids[MSRC_PHOTOS[0]]) == {"body", "water", "grass"}
        page.keyboard.type("cow")
        expect(page.locator("#tag-classes label.slr-highlight")).to_contain_text("cow")
        page.keyboard.press("ArrowRight")  # skip: another image, the filter is cleared
        expect(page.locator("#tag-title")).to_contain_text(MSRC_PHOTOS[2])
        expect(search).to_have_value("")
        expect(page.locator("#tag-classes label:visible")).to_have_count(21)
    finally:
        studio.close()
