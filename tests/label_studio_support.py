"""Helpers of the Label Studio tests."""

from __future__ import annotations

import numpy as np

from services.context import Studio
from storage.images import all_images
from storage.labels import get_mask_array, get_tag_class_ids
from storage.projects import get_project_by_name, list_classes


def project_labels(studio: Studio, project: str) -> dict[str, tuple[np.ndarray | None, set[str]]]:
    """Image name -> (its mask or None, the names of its human tags)."""
    with studio.Session() as session:
        row = get_project_by_name(session, project)
        names = {c.id: c.name for c in list_classes(session, row.id)}
        return {im.name: (get_mask_array(session, im.id),
                          {names[t] for t in get_tag_class_ids(session, im.id)})
                for im in all_images(session, row.id)}
