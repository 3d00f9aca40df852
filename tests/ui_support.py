"""Helpers of the UI tests: a small project of real image files, and published pseudo-labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from services import labeling
from services.context import Studio
from services.importing import import_dataset
from services.labeling import ImageInfo, image_info
from services.lookups import resolve_project
from storage import runs as run_repo
from storage.images import all_images
from storage.labels import put_pseudo_label
from storage.projects import get_project_by_name

PROJECT = "pets"
CLASSES = ["cat", "dog"]  # with background: indices 1, 2


def write_images(folder: Path, count: int, size: tuple[int, int] = (30, 40)) -> list[Path]:
    """``count`` small PNGs of flat, distinct colours named img0.png, img1.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.zeros((*size, 3), np.uint8)
        pixels[...] = (40 * i % 256, 255 - 30 * i % 256, 90)
        path = folder / f"img{i}.png"
        PILImage.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def make_project(studio: Studio, tmp_path: Path, count: int = 5, size: tuple[int, int] = (30, 40)) -> str:
    """Project ``pets`` (background, cat, dog) with ``count`` imported images."""
    labeling.create_project(studio, PROJECT, CLASSES)
    import_dataset(studio, write_images(tmp_path / "images", count, size)[0].parent, project=PROJECT)
    return PROJECT


def project_images(studio: Studio, project: str | int = PROJECT) -> list[ImageInfo]:
    """The project's images by name (a test helper: the app pages them through services.browse)."""
    with studio.Session.begin() as session:
        return [image_info(i) for i in all_images(session, resolve_project(session, project).id)]


def image_ids(studio: Studio, project: str = PROJECT) -> dict[str, int]:
    """Image name -> id."""
    return {i.name: i.id for i in project_images(studio, project)}


def publish_pseudo_labels(studio: Studio, scores: dict[str, float], project: str = PROJECT) -> int:
    """A published model version whose pseudo-label of each named image is "dog" on the top half,
    "cat" on the bottom half, with the given mean confidence; returns the run id."""
    with studio.Session.begin() as session:
        row = get_project_by_name(session, project)
        run = run_repo.create_run(session, row.id, mode="wsss", backbone="tiny", config={})
        run_repo.mark_trained(session, run)
        for image in all_images(session, row.id):
            if image.name not in scores:
                continue
            labels = np.full((image.height, image.width), 1, np.uint8)
            labels[: image.height // 2] = 2
            confidence = np.full(labels.shape, scores[image.name], np.float32)
            put_pseudo_label(session, image.id, run.id, labels, confidence, scores[image.name])
        run_repo.mark_published(session, run)
        return run.id
