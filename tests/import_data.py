"""A small labelled data set on disk, and a snapshot of everything an import can change."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from services.context import Studio
from services.import_options import ImportOptions
from storage.models import Base
from tests.image_bytes import image_bytes, label_png, write


def make_dataset(root: Path) -> Path:
    """images/ (a.jpg 40x30, b.png 24x16, c.jpg 40x20 with EXIF orientation 6 = upright 20x40),
    classes.txt (cat, dog), tags.csv and masks/ for a and c."""
    write(root / "images" / "a.jpg", image_bytes(40, 30, seed=1))
    write(root / "images" / "b.png", image_bytes(24, 16, seed=2, fmt="PNG"))
    write(root / "images" / "c.jpg", image_bytes(40, 20, seed=3, orientation=6))
    write(root / "images" / ".DS_Store", b"junk")  # hidden files are skipped
    write(root / "classes.txt", b"cat\ndog\n")
    write(root / "tags.csv", b"image,tags\na.jpg,cat;dog\nb.png,\nc,dog\n")  # c: by stem
    mask_a = np.zeros((30, 40), np.uint8)
    mask_a[5:10, 5:10], mask_a[20:, :] = 1, 255
    write(root / "masks" / "a.png", label_png(mask_a))
    write(root / "masks" / "c.png", label_png(np.full((40, 20), 2, np.uint8)))
    write(root / "masks" / "unrelated.png", label_png(np.zeros((3, 3), np.uint8)))
    return root


def snapshot(studio: Studio) -> tuple[dict[str, int], list[str]]:
    """Row counts of every table and the files under the data dir except the database."""
    with studio.Session.begin() as session:
        counts = {
            t.name: session.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables
        }
    files = sorted(
        str(p.relative_to(studio.data_dir)) for p in studio.data_dir.rglob("*")
        if p.is_file() and not p.name.startswith("studio.db")
    )
    return counts, files


def images_of(studio: Studio, project: str) -> list:
    """Every image of a project (``ImageInfo``), by name."""
    from services.labeling import image_info
    from services.lookups import resolve_project
    from storage.images import all_images

    with studio.Session.begin() as session:
        return [image_info(i) for i in all_images(session, resolve_project(session, project).id)]


def import_options_and_rest(kwargs: dict[str, Any]) -> tuple[ImportOptions, dict[str, Any]]:
    """Test helpers' keyword arguments split into the import's options and the rest (project, ...)."""
    names = {f.name for f in dataclasses.fields(ImportOptions)}
    return (ImportOptions(**{k: v for k, v in kwargs.items() if k in names}),
            {k: v for k, v in kwargs.items() if k not in names})
