"""End to end in headless Chromium: the real ``launch.py serve`` with its job consumer, driven
through the browser: create a project, upload coco128 photos, tag one with the keyboard, paint a
mask stroke, train the tiny backbone, review and accept the overlay, download COCO and VOC.

Needs the Debian ``chromium`` package at /usr/bin/chromium (``make test`` installs it) and the
``playwright`` Python package; no browser is downloaded. Screenshots of each screen go to
tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services import browse, labeling, review
from services.context import Studio
from storage.models import IGNORE_INDEX
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
PHOTOS = ["000000000009.jpg", "000000000025.jpg", "000000000030.jpg", "000000000034.jpg"]
TRAIN_OPTIONS = {"backbone": "tiny", "epochs": 1, "image_size": 64, "device": "cpu"}
STEP_MS = 20_000
TRAIN_MS = 240_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"launch.py serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"launch.py serve did not answer within {timeout_s}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``launch.py serve`` on a free port and a fresh data dir, training tiny models on the CPU."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("e2e")
    data, log = root / "data", root / "serve.log"
    port = _free_port()
    env = {
        **os.environ,
        "SLRNET_TRAIN_OPTIONS": json.dumps(TRAIN_OPTIONS),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    env.pop("SLRNET_DATABASE_URL", None)
    env.pop("SLRNET_QUEUE_URL", None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "launch.py", "serve", "--data", str(data), "--port", str(port)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc, log)
        yield url, data
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    yield page
    context.close()


def _shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _open_tab(page: object, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_label_train_review_export_loop(
    server: tuple[str, Path], page: object, coco128: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    url, data = server
    studio = Studio.open(data)
    try:
        # Projects: create one with three classes (plus background)
        page.goto(url)
        expect(page.locator("#summary")).to_contain_text("No project yet")  # the page has loaded
        page.fill("#new-project-name textarea", "e2e")
        page.fill("#new-project-classes textarea", "person\ngiraffe\nzebra")
        page.click("#create-project")
        expect(page.locator("#projects-status")).to_contain_text("Created project")
        expect(page.locator("#classes-text textarea")).to_have_value(
            "background #000000\nperson #800000\ngiraffe #008000\nzebra #808000"
        )
        _shot(page, "projects")

        # Import: upload four coco128 photos
        _open_tab(page, "Import")
        page.set_input_files("#upload-files input[type=file]", [str(coco128 / "images" / n) for n in PHOTOS])
        expect(page.locator("#upload-files")).to_contain_text(Path(PHOTOS[-1]).stem)
        page.click("#import-upload")
        expect(page.locator("#import-status")).to_contain_text("succeeded")
        expect(page.locator("#summary")).to_contain_text("4 images")
        _shot(page, "import")
        ids = {i.name: i.id for i in labeling.list_images(studio, "e2e", limit=None).items}
        assert sorted(ids) == PHOTOS

        # Browse: four thumbnails; click the giraffe photo
        _open_tab(page, "Browse")
        expect(page.locator("#gallery img")).to_have_count(4)
        assert all(
            "/thumbs/" in src
            for src in page.locator("#gallery img").evaluate_all(
                "imgs => imgs.map(i => decodeURIComponent(i.src))"
            )
        )
        page.locator("#gallery img").nth(1).click()
        expect(page.locator("#browse-info")).to_contain_text(PHOTOS[1])
        _shot(page, "browse")

        # Tag: keyboard only; "2" toggles the second class (giraffe), Enter saves & moves on
        page.click("#to-tag")
        expect(page.locator("#tag-title")).to_contain_text(PHOTOS[1])
        boxes = page.locator("#tag-classes input[type=checkbox]")
        expect(boxes).to_have_count(3)
        page.keyboard.press("2")
        expect(boxes.nth(1)).to_be_checked()
        _shot(page, "tag")
        page.keyboard.press("Enter")
        expect(page.locator("#tag-status")).to_contain_text("Saved 1 tag")
        expect(page.locator("#tag-title")).to_contain_text(PHOTOS[2])  # the next untagged image
        giraffe = labeling.get_project(studio, "e2e").classes[2]
        assert labeling.get_image_tags(studio, ids[PHOTOS[1]]) == [giraffe.id]

        # Paint: pick the giraffe colour, one horizontal stroke through the middle, save
        _open_tab(page, "Paint")
        expect(page.locator("#paint-title")).to_contain_text(PHOTOS[2])
        expect(page.locator("#paint-legend")).to_contain_text("unknown (ignore)")
        page.click("#editor button[aria-label='Color']")
        page.locator("#editor button.color[style*='rgb(0, 128, 0)']").click()
        canvas = page.locator("#editor canvas").first.bounding_box()
        x, y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
        page.mouse.move(x - 150, y)
        page.mouse.down()
        for dx in (-75, 0, 75, 150):
            page.mouse.move(x + dx, y)
        page.mouse.up()
        page.click("#paint-save")
        expect(page.locator("#paint-status")).to_contain_text("Saved the mask")
        _shot(page, "paint")
        mask = labeling.get_mask(studio, ids[PHOTOS[2]])
        image = labeling.get_image(studio, ids[PHOTOS[2]])
        assert mask.shape == (image.height, image.width)  # stored at full resolution
        assert set(np.unique(mask)) == {giraffe.index, IGNORE_INDEX}  # the brush colour, by value
        row, col = image.height // 2, image.width // 2
        assert mask[row, col] == giraffe.index and mask[row, col - 60] == giraffe.index
        assert mask[5, 5] == IGNORE_INDEX and mask[row - 60, col] == IGNORE_INDEX

        # Train: a fresh page (the editor's canvas keeps software-rendered Chromium busy)
        page.reload()
        expect(page.locator("#summary")).to_contain_text("1 tagged")
        _open_tab(page, "Train")
        expect(page.locator("#train-plan")).to_contain_text("Will train in ssss_tags mode")
        page.click("#train-btn")
        expect(page.locator("#train-status")).to_contain_text("succeeded", timeout=TRAIN_MS)
        expect(page.locator("#summary")).to_contain_text("model v1")
        expect(page.locator("#train-progress")).to_contain_text("100%")
        _shot(page, "train")
        assert review.current_model(studio, "e2e").mode == "ssss_tags"

        # Review: the least confident image without a mask, its overlay and legend; accept it
        _open_tab(page, "Review")
        expect(page.locator("#review-title")).to_contain_text("model v1")
        expect(page.locator("#review-picture img")).to_have_count(1)
        expect(page.locator("#legend table tbody tr").first).to_be_visible()
        _shot(page, "review")
        reviewed = page.locator("#review-title strong").first.inner_text()
        suggested = review.suggest_next_to_label(studio, "e2e")
        assert suggested is not None and reviewed == suggested.name
        page.click("#accept-btn")
        expect(page.locator("#review-status")).to_contain_text("Accepted")
        assert browse.image_state(studio, ids[reviewed]).mask_source == "accepted"
        page.click("#suggest-btn")
        expect(page.locator("#review-title")).not_to_contain_text(reviewed)
        corrected = page.locator("#review-title strong").first.inner_text()

        # Correct in editor: the Paint tab opens on the pseudo-label; saving keeps it as the start
        page.click("#correct-btn")
        expect(page.locator("#paint-title")).to_contain_text(f"{corrected} ")
        expect(page.locator("#paint-title")).to_contain_text("starting from model's pseudo-label")
        page.click("#paint-save")
        expect(page.locator("#paint-status")).to_contain_text("Saved the mask")
        pseudo = review.pseudo_label(studio, ids[corrected])
        np.testing.assert_array_equal(labeling.get_mask(studio, ids[corrected]), pseudo.labels)

        # Export: COCO JSON and VOC zip downloads
        page.reload()
        _open_tab(page, "Export")
        page.click("#export-coco")
        link = page.locator("#download a")
        expect(link).to_have_attribute("download", "e2e-coco-3.json", timeout=STEP_MS)
        with page.expect_download() as download:
            link.click()
        coco = json.loads(Path(download.value.path()).read_text())
        assert len(coco["images"]) == 4
        assert {a["category_id"] for a in coco["annotations"]} <= {1, 2, 3}
        assert any(a["image_id"] == ids[PHOTOS[2]] for a in coco["annotations"])
        _shot(page, "export")
        page.click("#export-voc")
        expect(link).to_have_attribute("download", "e2e-voc-4.zip", timeout=STEP_MS)
        with page.expect_download() as download:
            link.click()
        with zipfile.ZipFile(download.value.path()) as zf:
            names = set(zf.namelist())
        assert "classes.txt" in names and f"{Path(PHOTOS[2]).stem}.png" in names
    finally:
        studio.close()
