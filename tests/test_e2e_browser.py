"""End to end in headless Chromium: the real ``launch.py serve`` with its job consumer, driven
through the browser: create a project, upload coco128 photos, tag one with the keyboard, paint a
mask with the canvas painter (hotkeys, undo, the superpixel tool; the stored mask checked pixel
by pixel), saving while loading, two pages on one image, train the tiny backbone (the loss chart
drawn while it runs), review and accept the overlay, download COCO (+ results) and VOC.

Needs the Debian ``chromium`` package at /usr/bin/chromium (``make test`` installs it) and the
``playwright`` Python package; no browser is downloaded. Screenshots of each screen go to
tests/artifacts/.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from services import browse, labeling, review
from services.context import Studio
from slrnet.config import IGNORE_INDEX
from tests.browser_support import STEP_MS, TRAIN_MS, at, open_tab, painter_labels, painter_ready, shot, stroke
from tests.ui_support import project_images

pytestmark = pytest.mark.browser

PHOTOS = ["000000000009.jpg", "000000000025.jpg", "000000000030.jpg", "000000000034.jpg"]

def test_label_train_review_export_loop(
    server: tuple[str, Path], page: object, browser: object, coco128: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    url, data = server
    studio = Studio.open(data)
    try:
        # Projects: create one with three classes (plus background), bright default colours
        page.goto(url)
        expect(page.locator("#summary")).to_contain_text("No project yet")  # the page has loaded
        page.fill("#new-project-name textarea", "e2e")
        page.fill("#new-project-classes textarea", "person\ngiraffe\nzebra")
        page.click("#create-project")
        expect(page.locator("#projects-status")).to_contain_text("Created project")
        expect(page.locator("#classes-text textarea")).to_have_value(
            "background #000000\nperson #1818f2\ngiraffe #18f218\nzebra #f21818"
        )
        shot(page, "projects")

        # Import: upload four coco128 photos; a double click queues one import
        open_tab(page, "Import")
        page.set_input_files("#upload-files input[type=file]", [str(coco128 / "images" / n) for n in PHOTOS])
        expect(page.locator("#upload-files")).to_contain_text(Path(PHOTOS[-1]).stem)
        page.dblclick("#import-upload")
        expect(page.locator("#import-status")).to_contain_text("succeeded")
        expect(page.locator("#summary")).to_contain_text("4 images")
        expect(page.locator("#import-upload")).to_be_enabled()  # a next import needs no reload
        shot(page, "import")
        ids = {i.name: i.id for i in project_images(studio, "e2e")}
        assert sorted(ids) == PHOTOS
        with studio.Session.begin() as session:
            from storage.models import Job

            assert session.query(Job).filter(Job.kind == "import").count() == 1

        # Browse: four thumbnails with a status line; click the giraffe photo
        open_tab(page, "Browse")
        expect(page.locator("#gallery img")).to_have_count(4)
        expect(page.locator("#gallery")).to_contain_text("unlabelled")
        page.locator("#gallery img").nth(1).click()
        expect(page.locator("#browse-info")).to_contain_text(PHOTOS[1])
        shot(page, "browse")

        # Tag: keyboard only; keys shown on the boxes; "2" toggles giraffe, Enter saves & moves on
        page.click("#to-tag")
        expect(page.locator("#tag-title")).to_contain_text(PHOTOS[1])
        boxes = page.locator("#tag-classes input[type=checkbox]")
        expect(boxes).to_have_count(3)
        expect(page.locator("#tag-classes")).to_contain_text("2 · giraffe")
        page.keyboard.press("2")
        expect(boxes.nth(1)).to_be_checked()
        shot(page, "tag")
        page.keyboard.press("Enter")
        expect(page.locator("#tag-status")).to_contain_text("Saved 1 tag")
        expect(page.locator("#tag-title")).to_contain_text(PHOTOS[2])  # the next untagged image
        giraffe = labeling.get_project(studio, "e2e").classes[2]
        assert labeling.get_image_tags(studio, ids[PHOTOS[1]]) == [giraffe.id]
        page.keyboard.press("ArrowLeft")  # back to the previous image
        expect(page.locator("#tag-title")).to_contain_text(PHOTOS[1])

        # Paint the chosen image: two classes by hotkey, one undone stroke, one superpixel click;
        # then check the stored mask pixel by pixel
        open_tab(page, "Paint")
        painter_ready(page, PHOTOS[1])
        expect(page.locator("#painter")).to_contain_text("unknown (ignore)")
        page.keyboard.press("2")  # person
        stroke(page, [(100, 100), (300, 100)])
        page.keyboard.press("3")  # giraffe
        stroke(page, [(100, 300), (300, 300)])
        stroke(page, [(400, 50), (400, 400)])  # a mistake ...
        page.keyboard.press("Control+z")  # ... undone
        page.keyboard.press("r")  # superpixel tool, still giraffe
        page.mouse.click(*at(page, 550, 420))
        labels, painted = painter_labels(page)
        spx = page.evaluate("() => window.slrPainter.state.spx[420 * window.slrPainter.state.W + 550]")
        shot(page, "paint")
        page.click("#paint-save")
        expect(page.locator("#paint-status")).to_contain_text("Saved the mask")
        mask = labeling.get_mask(studio, ids[PHOTOS[1]])
        image = labeling.get_image(studio, ids[PHOTOS[1]])
        assert mask.shape == (image.height, image.width) == labels.shape  # shown at full size
        np.testing.assert_array_equal(mask, np.where(painted, labels, IGNORE_INDEX))  # pixel by pixel
        person, giraffe_value = 1, 2
        assert mask[100, 200] == person and mask[300, 200] == giraffe_value
        assert mask[200, 400] == IGNORE_INDEX  # the undone stroke left nothing
        assert mask[420, 550] == giraffe_value and spx >= 0
        assert set(np.unique(mask)) == {person, giraffe_value, IGNORE_INDEX}

        # Saving while loading is impossible: Save is disabled until the next image has loaded
        page.click("#paint-next")
        page.wait_for_function(  # all at one moment: the reload is on its way, Save is off
            "() => window.slrPainter.state.loading && document.querySelector('#paint-save').disabled"
            " && window.slrPainter.payload().includes('loading')"
        )
        painter_ready(page, PHOTOS[2])
        assert labeling.get_mask(studio, ids[PHOTOS[2]]) is None

        # Two pages on one image: the second save is refused with a clear message
        other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        other.goto(url)
        expect(other.locator("#summary")).to_contain_text("4 images")
        open_tab(other, "Browse")
        other.locator("#gallery img").nth(2).click()
        expect(other.locator("#browse-info")).to_contain_text(PHOTOS[2])
        other.click("#to-paint")
        painter_ready(other, PHOTOS[2])
        stroke(other, [(50, 50), (200, 50)])
        other.click("#paint-save")
        expect(other.locator("#paint-status")).to_contain_text("Saved the mask")
        stroke(page, [(50, 150), (200, 150)])
        page.click("#paint-save")
        expect(page.get_by_test_id("toast-body").first).to_contain_text("changed since you opened it")
        kept = labeling.get_mask(studio, ids[PHOTOS[2]])
        assert kept[50, 100] != IGNORE_INDEX and kept[150, 100] == IGNORE_INDEX  # the first save stands
        shot(page, "paint-conflict")
        other.context.close()

        # Train: the loss chart draws its lines while the job runs
        page.reload()
        expect(page.locator("#summary")).to_contain_text("1 tagged")
        expect(page.locator("#paint-title")).to_be_visible()  # the reload came back to the Paint tab
        open_tab(page, "Train")
        expect(page.locator("#train-plan")).to_contain_text("Will train in ssss_tags mode")
        # the plan before the click: epochs, image size and duration; no model yet to continue from
        planned = re.compile(r"Plan: \d+ epoch\(s\) of \d+ images at 64 px, about \d+ s of training")
        expect(page.locator("#train-plan")).to_contain_text(planned)
        expect(page.locator("#train-warm input")).not_to_be_checked()
        page.click("#train-btn")
        line = page.locator("#loss-plot path.loss-line").first
        expect(line).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+ L"), timeout=TRAIN_MS)
        running = page.locator("#train-status").inner_text()
        shot(page, "train-running")
        expect(page.locator("#train-status")).to_contain_text("succeeded", timeout=TRAIN_MS)
        assert "succeeded" not in running, "the chart only drew after the training had ended"
        expect(page.locator("#summary")).to_contain_text("model v1")
        expect(page.locator("#train-progress")).to_contain_text("100%")
        expect(page.locator("#train-warm input")).to_be_checked()  # the next round continues from it
        shot(page, "train")
        assert review.current_model(studio, "e2e").mode == "ssss_tags"

        # Review: the image open in Paint (the reload restored that tab) or, with none open, the
        # least confident image without a mask; its overlay and legend; accept it
        opened = page.evaluate("() => (window.slrPainter.state.doc || {}).image_id ?? null")
        open_tab(page, "Review")
        expect(page.locator("#review-title")).to_contain_text("model v1")
        expect(page.locator("#review-picture img")).to_have_count(1)
        expect(page.locator("#legend table tbody tr").first).to_be_visible()
        shot(page, "review")
        reviewed = page.locator("#review-title strong").first.inner_text()
        suggested = review.suggest_next_to_label(studio, "e2e")
        expected = labeling.get_image(studio, opened).name if opened is not None else suggested.name
        assert suggested is not None and reviewed == expected
        page.click("#accept-btn")
        expect(page.locator("#review-status")).to_contain_text("Accepted")
        assert browse.image_state(studio, ids[reviewed]).mask_source == "accepted"
        page.click("#suggest-btn")
        expect(page.locator("#review-title")).not_to_contain_text(reviewed)
        corrected = page.locator("#review-title strong").first.inner_text()

        # Correct in editor: the Paint tab opens on the pseudo-label; saving keeps it as the start
        page.click("#correct-btn")
        painter_ready(page, f"{corrected} ")
        expect(page.locator("#paint-title")).to_contain_text("starting from model's pseudo-label")
        page.click("#paint-save")
        expect(page.locator("#paint-status")).to_contain_text("Saved the mask")
        pseudo = review.pseudo_label(studio, ids[corrected])
        np.testing.assert_array_equal(labeling.get_mask(studio, ids[corrected]), pseudo.labels)

        # Export: COCO JSON with its _results.json, and the VOC zip
        page.reload()
        expect(page.locator("#summary")).to_contain_text("model v1")  # restored (project and tab) ...
        expect(page.locator("#review-title")).to_be_visible()  # (the last tab clicked) before another
        open_tab(page, "Export")
        page.click("#export-coco")
        link = page.locator("#download a")
        expect(link).to_have_count(2)
        expect(link.first).to_have_attribute("download", re.compile(r"e2e-coco-\d+\.json"))
        expect(link.nth(1)).to_have_attribute("download", re.compile(r"e2e-coco-\d+_results\.json"))
        with page.expect_download() as download:
            link.first.click()
        coco = json.loads(Path(download.value.path()).read_text())
        assert len(coco["images"]) == 4
        assert {a["category_id"] for a in coco["annotations"]} <= {1, 2, 3}
        assert any(a["image_id"] == ids[PHOTOS[1]] for a in coco["annotations"])
        shot(page, "export")
        page.click("#export-voc")
        expect(link.first).to_have_attribute("download", re.compile(r"e2e-voc-\d+\.zip"))
        with page.expect_download() as download:
            link.first.click()
        with zipfile.ZipFile(download.value.path()) as zf:
            names = set(zf.namelist())
        assert "classes.txt" in names and f"{Path(PHOTOS[1]).stem}.png" in names
    finally:
        studio.close()
