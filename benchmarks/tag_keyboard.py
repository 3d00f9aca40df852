"""Tagging by keyboard alone: 25 MSRC photos (21 classes, so most tags are past key 9) tagged
with their gold tags in headless Chromium against the real ``launch.py serve``, every action a
key press: per tag the shortest prefix of its name that the Tag screen's type-to-filter
(app/static/tagger.js) highlights, then Enter; then Enter to save and go to the next untagged
photo. Counts the keys, checks every stored tag set against the gold one, and times the run
(a machine's speed, with the server's round trips; not a person's).

    .venv/bin/python -m benchmarks.tag_keyboard [--images 25] [--out JSON]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from services import labeling
from services.context import Studio
from services.importing import import_dataset
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, serving
from tests.ui_support import image_ids

REPO = Path(__file__).resolve().parents[1]
MSRC = REPO.parent / "shared" / "data" / "msrc"
PROJECT = "tagbench"


def shortest_prefix(name: str, names: list[str]) -> str:
    """The shortest prefix of ``name`` whose first match (names starting with it, in list order,
    before names containing it) is ``name``: what tagger.js highlights."""
    for n in range(1, len(name) + 1):
        query = name[:n]
        starts = [c for c in names if c.startswith(query)]
        inside = [c for c in names if not c.startswith(query) and query in c]
        if (starts + inside)[0] == name:
            return query
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    classes = [c.strip() for c in (MSRC / "classes.txt").read_text().splitlines() if c.strip()]
    with (MSRC / "train" / "tags.csv").open() as f:
        gold = {row["image"]: set(filter(None, row["tags"].split(";"))) for row in csv.DictReader(f)}
    photos = sorted(gold)[: args.images]
    root = Path(tempfile.mkdtemp(prefix="tagbench-"))
    try:
        folder = root / "photos"
        folder.mkdir()
        for photo in photos:
            shutil.copy(MSRC / "train" / "images" / photo, folder / photo)
        data = root / "data"
        studio = Studio.open(data)
        labeling.create_project(studio, PROJECT, classes, has_background=False)
        import_dataset(studio, folder, project=PROJECT)
        ids = image_ids(studio, PROJECT)
        names = {c.id: c.name for c in labeling.get_project(studio, PROJECT).classes}
        keys = 0
        beyond_nine = sum(1 for p in photos for t in gold[p] if classes.index(t) >= 9)
        with serving(data, root / "serve.log") as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            page.goto(url)
            expect(page.locator("#project input")).to_have_value(PROJECT)
            page.get_by_role("tab", name="Tag").click()
            expect(page.locator("#tag-title")).to_contain_text(photos[0])
            start = time.perf_counter()
            for k, photo in enumerate(photos):
                expect(page.locator("#tag-title strong").first).to_have_text(photo)
                for tag in sorted(gold[photo]):
                    prefix = shortest_prefix(tag, classes)
                    page.keyboard.type(prefix)
                    page.keyboard.press("Enter")
                    keys += len(prefix) + 1
                page.keyboard.press("Enter")
                keys += 1
                if k + 1 < len(photos):
                    expect(page.locator("#tag-title strong").first).to_have_text(photos[k + 1])
            expect(page.locator("#tag-status")).to_contain_text("Saved")
            seconds = time.perf_counter() - start
            browser.close()
        wrong = [p for p in photos if {names[t] for t in labeling.get_image_tags(studio, ids[p])} != gold[p]]
        studio.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    tags = sum(len(gold[p]) for p in photos)
    result = {
        "images": len(photos),
        "tags": tags,
        "tags_past_key_9": beyond_nine,
        "keys": keys,
        "keys_per_image": round(keys / len(photos), 2),
        "keys_per_tag": round((keys - len(photos)) / tags, 2),
        "seconds": round(seconds, 1),
        "seconds_per_image": round(seconds / len(photos), 2),
        "wrong_images": wrong,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
