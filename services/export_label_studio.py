"""Export a project as Label Studio tasks (``launch.py export --format label-studio``).

``out`` (e.g. ``tasks.json``) is a JSON list of tasks, one per image, in Label Studio's import
format; ``<stem>_config.xml`` beside it is the labelling config to create the Label Studio
project with (BrushLabels of every class, Choices of every class but background). A task holds:

* ``data``: ``image`` (``image_url`` + the image's name: by default Label Studio's local-files
  URL, so a project whose local storage is the folder the images came from shows them), and our
  ``slrnet_name`` / ``slrnet_sha256`` (the content hash: an import of Label Studio's export finds
  the image by it);
* ``annotations`` (source ``human`` or ``best``): the image's mask as one brush region per class
  and its tags as choices;
* ``predictions`` (source ``model`` or ``best``): the current model's pseudo-label as brush
  regions with scores (the mean confidence of each region), its tags as choices, ``score`` = the
  model's uncertainty (1 - mean confidence) and ``model_version`` "slrnet-v<N>" — pre-annotations.

Images with no label of the source are still tasks (to label in Label Studio) and are counted as
skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from sqlalchemy.orm import Session

from services.formats.label_studio import labelling_config, mask_results, tag_results, task
from storage import labels as label_repo
from storage.images import iter_images_with_labels
from storage.label_maps import decode_label_png
from storage.models import ClassLabel

DEFAULT_IMAGE_URL = "/data/local-files/?d="


def config_path(out: Path) -> Path:
    """The labelling config written beside the tasks file ``out``: ``<stem>_config.xml``."""
    return out.with_name(f"{out.stem}_config.xml")


@dataclass
class LabelStudioCounts:
    tasks: int = 0
    annotations: int = 0
    predictions: int = 0
    labelled: int = 0  # tasks with an annotation or a prediction


def write_config(fh: TextIO, classes: list[ClassLabel]) -> None:
    """The labelling config of the exported tasks."""
    fh.write(labelling_config([c.name for c in classes], {c.name: c.color for c in classes}))


def _tasks(session: Session, project_id: int, classes: list[ClassLabel], run_id: int | None,
           version: int | None, source: str, image_url: str) -> Iterator[tuple[dict, bool, bool]]:
    names = [c.name for c in classes]
    index_of = {c.id: c.index for c in classes}
    want_human, want_model = source in ("best", "human"), source in ("best", "model") and run_id is not None
    for image in iter_images_with_labels(session, project_id, mask_png=want_human):
        annotation = []
        if want_human:
            annotation += tag_results([index_of[t] for t in image.tag_class_ids], names)
            if image.mask_png is not None:
                annotation += mask_results(decode_label_png(image.mask_png), names)
        prediction = score = None
        pseudo = label_repo.get_pseudo_label(session, image.image_id, run_id) if want_model else None
        if pseudo is not None:
            confidence = decode_label_png(pseudo.confidence_png)
            model_tags = label_repo.get_tag_class_ids(session, image.image_id, "model")
            prediction = mask_results(decode_label_png(pseudo.png), names, confidence=confidence)
            prediction += tag_results([index_of[t] for t in model_tags], names)
            score = round(1.0 - float(confidence.mean(dtype="float64")) / 255.0, 4)
        sha = Path(image.path).stem  # stored images are named by content
        url = image_url + quote(image.name)
        yield (task(url, name=image.name, sha256=sha, annotation=annotation, prediction=prediction,
                    score=score, model_version=f"slrnet-v{version}" if pseudo is not None else None),
               bool(annotation), pseudo is not None)


def write_tasks(fh: TextIO, session: Session, project_id: int, classes: list[ClassLabel], run_id: int | None,
                version: int | None, source: str, image_url: str = DEFAULT_IMAGE_URL) -> LabelStudioCounts:
    """Write the project's tasks as a JSON list, one task at a time."""
    counts = LabelStudioCounts()
    fh.write("[")
    for item, annotated, predicted in _tasks(session, project_id, classes, run_id, version, source,
                                             image_url):
        fh.write(("\n" if counts.tasks == 0 else ",\n") + json.dumps(item, separators=(",", ":")))
        counts.tasks += 1
        counts.annotations += annotated
        counts.predictions += predicted
        counts.labelled += annotated or predicted
    fh.write("\n]\n")
    return counts
