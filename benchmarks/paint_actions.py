"""Actions to label an object (MSRC) or a street frame (CamVid) with the painter's tools, by an
oracle user on the tools' own regions (no browser: the painter's region click sets every pixel of
the region under the cursor; see app/static/painter.js):

- **objects** (the region hierarchy, app.superpixels.region_levels): each step either clicks the
  region (at any level; moving between levels costs one ``[``/``]`` key per level) with the best
  gain in correct pixels, painting it with its majority gold class (a class change costs a key);
- **superpixels (old)**: the same user on the hand-written 600-segment SLIC the painter had before;
- **brush**: bands of one brush height (24 px, or 12 px when that takes fewer actions), one stroke
  per run of a class along the band's middle row (a class change costs a key), runs with the most
  gold pixels first.

Target: MSRC (objects view, 10 photos): IoU >= 0.9 of the photo's largest object with the gold
mask; CamVid (5 frames, every class): >= 0.9 of the non-void pixels painted their gold class.
An action is a click, a stroke or a key press; "-" when 300 actions did not reach the target.

    .venv/bin/python -m benchmarks.paint_actions [--msrc 10] [--camvid 5] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from app.painter import edit_size
from app.superpixels import DEFAULT_LEVEL, region_levels
from benchmarks.superpixels_legacy import legacy_slic

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
VOID = 255
UNPAINTED = 254
MAX_ACTIONS = 300
TARGET = 0.9


def _score(painted: np.ndarray, gold: np.ndarray, target_class: int | None) -> float:
    valid = gold != VOID
    if target_class is None:
        return float((painted[valid] == gold[valid]).mean())
    p, g = (painted == target_class) & valid, (gold == target_class) & valid
    return float((p & g).sum() / max(1, (p | g).sum()))


def oracle_regions(levels: np.ndarray, gold: np.ndarray, target_class: int | None, start_level: int) -> int:
    """Clicks + level keys + class keys until the target, greedy on the best region click."""
    painted = np.full(gold.shape, UNPAINTED, np.uint8)
    classes = np.unique(gold[gold != VOID])
    if target_class is not None:  # an object: the user paints the object or background
        classes = np.array([target_class, 0])
    k = int(classes.max()) + 2
    g = np.where(gold == VOID, k - 1, gold).astype(np.int64)
    actions, level, current = 0, start_level, None
    while _score(painted, gold, target_class) < TARGET and actions < MAX_ACTIONS:
        best = (0, None)
        right = (painted == gold) & (gold != VOID)
        for li, ids in enumerate(levels):
            n = int(ids.max()) + 1
            flat = ids.ravel()
            # per region and class: gold pixels of that class not yet right, pixels right now
            hist = np.bincount(flat * k + g.ravel(), minlength=n * k).reshape(n, k)
            right_now = np.bincount(flat, weights=right.ravel(), minlength=n)
            for c in classes:
                if target_class is not None:
                    # IoU of the object: pixels of the object gained minus background pixels taken
                    inside = hist[:, c] - np.bincount(
                        flat, weights=((painted == c) & (gold == c)).ravel(), minlength=n
                    )
                    stray = (painted == target_class) & (gold != target_class) & (gold != VOID)
                    outside_now = np.bincount(flat, weights=stray.ravel(), minlength=n)
                    if c == target_class:
                        taken = hist.sum(1) - hist[:, c] - hist[:, k - 1] - outside_now
                        gain = inside - taken
                    else:
                        gain = outside_now - np.bincount(
                            flat, weights=((painted == target_class) & (gold == target_class)).ravel(),
                            minlength=n,
                        )
                else:  # every class: pixels of class c in the region become right, the rest wrong
                    gain = hist[:, c] - right_now
                cost = 1 + abs(li - level) + (0 if current == c else 1)
                r = int(np.argmax(gain / cost))
                if gain[r] > 0 and gain[r] / cost > best[0]:
                    best = (gain[r] / cost, (li, r, int(c), cost))
        if best[1] is None:
            break
        li, r, c, cost = best[1]
        painted[levels[li] == r] = c
        actions += cost
        level, current = li, c
    return actions if _score(painted, gold, target_class) >= TARGET else -1


def oracle_brush(gold: np.ndarray, target_class: int | None, size: int) -> int:
    """Strokes + class keys until the target: one stroke per run of a class in each band."""
    painted = np.full(gold.shape, UNPAINTED, np.uint8)
    h, _w = gold.shape
    strokes = []
    for top in range(0, h, size):
        row = gold[min(h - 1, top + size // 2)]
        edges = np.flatnonzero(np.diff(row.astype(np.int16))) + 1
        for x0, x1 in zip(np.r_[0, edges], np.r_[edges, len(row)], strict=True):
            c = int(row[x0])
            if c == VOID or (target_class is not None and c != target_class):
                continue
            band = gold[top : top + size, x0:x1]
            strokes.append((int((band == c).sum()), top, x0, x1, c))
    strokes.sort(reverse=True)
    actions, current = 0, None
    for _gain, top, x0, x1, c in strokes:
        if _score(painted, gold, target_class) >= TARGET or actions >= MAX_ACTIONS:
            break
        painted[top : top + size, x0:x1] = c
        actions += 1 + (0 if c == current else 1)
        current = c
    return actions if _score(painted, gold, target_class) >= TARGET else -1


def _fit(rgb: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = edit_size(rgb.shape[:2])
    if (h, w) != rgb.shape[:2]:
        rgb = np.asarray(PILImage.fromarray(rgb).resize((w, h), PILImage.BILINEAR))
        gold = np.asarray(PILImage.fromarray(gold).resize((w, h), PILImage.NEAREST))
    return rgb, gold


def cases(msrc: int, camvid: int) -> list[tuple[str, np.ndarray, np.ndarray, int | None]]:
    """(name, rgb, gold, target class or None for every class)."""
    out = []
    folder = DATA / "msrc" / "train"
    import csv

    with (folder / "tags_objects.csv").open() as f:
        names = [row["image"] for row in csv.DictReader(f)]
    for name in names[:: max(1, len(names) // max(1, msrc))][:msrc]:
        rgb = np.asarray(PILImage.open(folder / "images" / name).convert("RGB"))
        gold = np.asarray(PILImage.open(folder / "masks_objects" / f"{Path(name).stem}.png"))
        rgb, gold = _fit(rgb, gold)
        counts = np.bincount(gold[(gold != VOID) & (gold != 0)].ravel(), minlength=256)
        obj = np.where(gold == VOID, VOID, (gold == counts.argmax()).astype(np.uint8)).astype(np.uint8)
        out.append((f"msrc/{name}", rgb, obj, 1))  # the largest object (1) against the rest (0)
    frames = sorted((DATA / "camvid" / "val" / "images").glob("*.jpg"))
    for path in frames[:: max(1, len(frames) // max(1, camvid))][:camvid]:
        rgb = np.asarray(PILImage.open(path).convert("RGB"))
        gold = np.asarray(PILImage.open(DATA / "camvid" / "val" / "masks" / f"{path.stem}.png"))
        rgb, gold = _fit(rgb, gold)
        out.append((f"camvid/{path.name}", rgb, gold, None))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msrc", type=int, default=10)
    parser.add_argument("--camvid", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for name, rgb, gold, target in cases(args.msrc, args.camvid):
        start = time.perf_counter()
        levels = region_levels(rgb, gold.shape)
        levels_s = time.perf_counter() - start
        row = {
            "case": name,
            "size": list(gold.shape),
            "regions_per_level": [int(ids.max()) + 1 for ids in levels],
            "levels_s": round(levels_s, 3),
            "objects": oracle_regions(levels, gold, target, DEFAULT_LEVEL),
            "superpixels_old": oracle_regions(legacy_slic(rgb, gold.shape)[None], gold, target, 0),
            "brush": min(
                (a for a in (oracle_brush(gold, target, s) for s in (24, 12)) if a > 0), default=-1
            ),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for group in ("msrc", "camvid"):
        part = [r for r in rows if r["case"].startswith(group)]
        for tool in ("objects", "superpixels_old", "brush"):
            values = [r[tool] if r[tool] > 0 else MAX_ACTIONS for r in part]
            summary[f"{group} {tool} median"] = float(np.median(values)) if values else None
            summary[f"{group} {tool} reached"] = sum(r[tool] > 0 for r in part)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
