"""Helpers of the browser tests: ``launch.py serve`` on a free port with a fresh data dir, headless
Chromium (the Debian package at /usr/bin/chromium, never a downloaded browser), a page, and the
painter's helpers. Test modules import the fixtures they use (``server``, ``browser``, ``page``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

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
# a 15 s training budget (the time-budgeted CPU default, sized by a timed step)
TRAIN_OPTIONS = {"backbone": "tiny", "minutes": 0.25, "image_size": 64, "device": "cpu"}
STEP_MS = 20_000
TRAIN_MS = 240_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
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


@contextlib.contextmanager
def serving(data: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``launch.py serve`` on a free port with data dir ``data`` (output to ``log``) until the
    block ends; yields its URL."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
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
        wait_until_up(url, proc, log)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``launch.py serve`` on a free port and a fresh data dir, training tiny models on the CPU."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("e2e")
    env = {"SLRNET_TRAIN_OPTIONS": json.dumps(TRAIN_OPTIONS)}
    with serving(root / "data", root / "serve.log", env) as url:
        yield url, root / "data"


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


def shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def open_tab(page: object, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def painter_ready(page: object, name: str) -> None:
    """Wait until the painter shows image ``name`` and its tools are enabled."""
    from playwright.sync_api import expect

    expect(page.locator("#paint-title")).to_contain_text(name)
    page.wait_for_function("() => window.slrPainter && window.slrPainter.state.ready")
    expect(page.locator("#paint-save")).to_be_enabled()


def at(page: object, x: float, y: float) -> tuple[float, float]:
    """The page point over image pixel (x, y) of the painter (at its current zoom)."""
    return tuple(page.evaluate("([x, y]) => window.slrPainter.clientPoint(x, y)", [x, y]))


def stroke(page: object, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*at(page, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(page, *point), steps=4)
    page.mouse.up()


def painter_labels(page: object) -> tuple[np.ndarray, np.ndarray]:
    """(labels, painted) the painter holds, at its edit size."""
    state = page.evaluate(
        "() => { const s = window.slrPainter.state; return {w: s.W, h: s.H, "
        "edit: Array.from(s.edit), painted: Array.from(s.painted)}; }"
    )
    shape = (state["h"], state["w"])
    return (np.array(state["edit"], np.uint8).reshape(shape), np.array(state["painted"], bool).reshape(shape))
