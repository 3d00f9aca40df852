"""Painting speed: how many actions the canvas painter (app/static/painter.js) needs to label one
CamVid frame to >= 80 % pixel agreement with its gold mask, with the region (superpixel) tool vs
the brush only. Two scripted "users" drive the real painter in headless Chromium (Playwright):

- region: picks a class (its hotkey, or its palette button past the ninth class) and clicks the
  centre of superpixels with the gold class of each, largest gain first, grouped by class;
- brush: one brush size (the slider, once), strokes along rows of brush-high bands, one stroke per
  run of the band's gold class, top to bottom.

Agreement = painted pixels equal to gold / gold pixels that are not void (255); unpainted pixels
count as wrong. Wall time is the scripted run's (a machine's, not a person's); the counts of
clicks, strokes and key presses are what a person would do.

    .venv/bin/python -m benchmarks.paint_speed [--frame NAME] [--target 0.8] [--brush 24]
        [--segments N] [--out JSON]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from app.painter import PaintPalette, edit_size, editor_document
from benchmarks.superpixels_legacy import DEFAULT_SEGMENTS, legacy_slic

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
CHROMIUM = "/usr/bin/chromium"
VOID = 255
COLORS = ["#80c0ff", "#c04040", "#ffe000", "#8040c0", "#40c0c0", "#40a040", "#ff8000", "#a08060",
          "#ff40ff", "#ffffff", "#00ff80"]


@dataclass
class Outcome:
    strategy: str
    agreement: float
    clicks: int  # superpixel clicks and palette-button clicks
    strokes: int
    key_presses: int
    slider_moves: int
    wall_s: float

    @property
    def actions(self) -> int:
        return self.clicks + self.strokes + self.key_presses + self.slider_moves


def _load(frame: str | None) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    images = sorted((CAMVID / "train" / "images").glob("*.jpg"))
    path = next(p for p in images if p.name == frame) if frame else images[0]
    rgb = np.asarray(PILImage.open(path).convert("RGB"))
    gold = np.asarray(PILImage.open(CAMVID / "train" / "masks" / f"{path.stem}.png"))
    h, w = edit_size(rgb.shape[:2])
    if (h, w) != rgb.shape[:2]:
        rgb = np.asarray(PILImage.fromarray(rgb).resize((w, h), PILImage.BILINEAR))
        gold = np.asarray(PILImage.fromarray(gold).resize((w, h), PILImage.NEAREST))
    classes = (CAMVID / "classes.txt").read_text().split()
    return path.name, rgb, gold, classes


def _page_html() -> str:
    css = (REPO / "app" / "static" / "painter.css").read_text()
    js = (REPO / "app" / "static" / "painter.js").read_text()
    return (f"<html><head><style>{css}</style></head><body style='margin:0;width:1200px'>"
            f"<div id='painter'></div><div id='paint-load' style='display:none'><textarea></textarea></div>"
            f"<script>{js}</script></body></html>")


AGREEMENT_JS = """() => { const s = window.slrPainter.state, g = window.__gold; let ok = 0, n = 0;
  for (let i = 0; i < g.length; i++) {
    if (g[i] === 255) continue; n++; if (s.painted[i] && s.edit[i] === g[i]) ok++;
  }
  return ok / n; }"""


class Painter:
    """The painter in a page, opened on one frame; the scripted user's actions, counted."""

    def __init__(self, page: object, doc: dict, gold: np.ndarray, classes: list[dict]) -> None:
        self.page, self.classes = page, {c["value"]: c for c in classes}
        page.set_content(_page_html())
        page.wait_for_function("() => document.querySelector('#slr-stage')")
        page.evaluate("doc => { document.querySelector('#paint-load textarea').value = "
                      "JSON.stringify(doc); }", doc)
        page.wait_for_function("() => window.slrPainter.state.ready", timeout=60_000)
        page.evaluate("g => { window.__gold = Uint8Array.from(atob(g), c => c.charCodeAt(0)); }",
                      base64.b64encode(gold.astype(np.uint8).tobytes()).decode())
        self.value: int | None = None
        self.clicks = self.strokes = self.keys = self.sliders = 0

    def at(self, x: float, y: float) -> tuple[float, float]:
        return tuple(self.page.evaluate("([x, y]) => window.slrPainter.clientPoint(x, y)", [x, y]))

    def key(self, key: str) -> None:
        self.page.keyboard.press(key)
        self.keys += 1

    def choose(self, value: int) -> None:
        if value == self.value:
            return
        entry = self.classes[value]
        if entry["key"]:
            self.key(entry["key"])
        else:
            self.page.click(f".slr-class[data-value='{value}']")
            self.clicks += 1
        self.value = value

    def click(self, x: float, y: float) -> None:
        self.page.mouse.click(*self.at(x, y))
        self.clicks += 1

    def stroke(self, x0: float, y: float, x1: float) -> None:
        self.page.mouse.move(*self.at(x0, y))
        self.page.mouse.down()
        self.page.mouse.move(*self.at(x1, y), steps=max(2, int(abs(x1 - x0) // 40)))
        self.page.mouse.up()
        self.strokes += 1

    def brush_size(self, size: int) -> None:
        self.page.evaluate("s => { const e = document.querySelector('#slr-size'); e.value = String(s); "
                           "e.dispatchEvent(new Event('input')); }", size)
        self.sliders += 1

    def agreement(self) -> float:
        return float(self.page.evaluate(AGREEMENT_JS))


def region_user(painter: Painter, spx: np.ndarray, gold: np.ndarray, target: float) -> None:
    """Superpixel clicks with the gold class, largest gain first (grouped by class)."""
    valid = gold != VOID
    plans = []
    for sid in np.unique(spx):
        ys, xs = np.nonzero(spx == sid)
        labels = gold[ys, xs]
        labels = labels[labels != VOID]
        if labels.size == 0:
            continue
        counts = np.bincount(labels, minlength=256)
        cls = int(counts.argmax())
        cy, cx = ys.mean(), xs.mean()
        k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))  # the superpixel's pixel nearest its centre
        plans.append((int(counts[cls]), cls, float(xs[k]) + 0.5, float(ys[k]) + 0.5))
    plans.sort(reverse=True)
    need, total, chosen = target * valid.sum(), 0, 0
    for gain, *_ in plans:
        chosen += 1
        total += gain
        if total >= need:
            break
    painter.key("r")  # the superpixel tool
    batch = sorted(plans[:chosen], key=lambda p: (-sum(q[0] for q in plans[:chosen] if q[1] == p[1]), p[1]))
    for _, cls, x, y in batch:
        painter.choose(cls)
        painter.click(x, y)
    for _, cls, x, y in plans[chosen:]:  # a few more if the estimate fell short
        if painter.agreement() >= target:
            break
        painter.choose(cls)
        painter.click(x, y)


def brush_user(painter: Painter, gold: np.ndarray, target: float, size: int) -> None:
    """Strokes along rows: one per run of the band's gold class, band after band."""
    painter.key("b")
    painter.brush_size(size)
    h, w = gold.shape
    r = size / 2
    for y0 in range(0, h, size):
        band = gold[y0:y0 + size]
        column = np.full(w, VOID, np.int32)
        for x in range(w):
            labels = band[:, x][band[:, x] != VOID]
            if labels.size:
                column[x] = np.bincount(labels).argmax()
        x = 0
        while x < w:
            end = x
            while end + 1 < w and column[end + 1] == column[x]:
                end += 1
            if column[x] != VOID and end - x + 1 >= r:
                painter.choose(int(column[x]))
                y = min(y0 + r, h - r)
                painter.stroke(min(x + r / 2, end), y, max(end + 1 - r / 2, x))
            x = end + 1
        if painter.agreement() >= target:
            return


def run(frame: str | None, target: float, brush: int, segments: int = DEFAULT_SEGMENTS) -> dict:
    from playwright.sync_api import sync_playwright

    name, rgb, gold, class_names = _load(frame)
    h, w = gold.shape
    spx = legacy_slic(rgb, (h, w), segments=segments)  # the region tool's one level before the hierarchy
    palette = PaintPalette.from_classes([(i, n, COLORS[i % len(COLORS)]) for i, n in enumerate(class_names)])
    doc = editor_document(token="bench", image_id=0, version="", name=name, rgb=rgb, start=None,
                          region_ids=spx[None], palette=palette, background=None)
    outcomes = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            for strategy in ("region", "brush"):
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                painter = Painter(page, doc, gold, doc["classes"])
                start = time.perf_counter()
                if strategy == "region":
                    region_user(painter, spx, gold, target)
                else:
                    brush_user(painter, gold, target, brush)
                wall = time.perf_counter() - start
                outcomes.append(Outcome(strategy, round(painter.agreement(), 4), painter.clicks,
                                        painter.strokes, painter.keys, painter.sliders, round(wall, 2)))
                page.screenshot(path=str(REPO / "tests" / "artifacts" / f"paint-speed-{strategy}.png"))
                page.close()
        finally:
            browser.close()
    return {"frame": name, "size": [w, h], "segments_asked": segments,
            "superpixels": len(np.unique(spx)), "target": target,
            "brush_px": brush, "outcomes": [{**asdict(o), "actions": o.actions} for o in outcomes]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", default=None,
                        help="a file name under camvid/train/images (default: the first)")
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--brush", type=int, default=24, help="brush diameter in image pixels")
    parser.add_argument("--segments", type=int, default=DEFAULT_SEGMENTS,
                        help="superpixels asked for (the app's default unless given)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    (REPO / "tests" / "artifacts").mkdir(parents=True, exist_ok=True)
    result = run(args.frame, args.target, args.brush, args.segments)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
