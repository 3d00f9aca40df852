"""The export formats, in ONE table: per format, its writer, how its output is named (a file or a
folder, the default name's suffix, files written beside it), the media type of its download and
whether its summary counts annotations. ``services.exporting`` runs a format's writer; the CLI,
the job submitter and the UI take the names and the naming from here.

A writer gets the destination and an :class:`ExportJob` (what to export, the labelled images
streamed with progress and cancellation) and returns the :class:`ExportCounts`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from services.errors import UserError
from services.export_label_studio import config_path as label_studio_config_path
from services.export_label_studio import write_config as write_label_studio_config
from services.export_label_studio import write_tasks as write_label_studio_tasks
from services.formats.atomic_files import atomic_folder, atomic_text_file
from services.formats.coco_format import CocoDatasetWriter, CocoResultsWriter, label_map_regions
from services.formats.voc_format import (
    CLASSES_FILE,
    build_palette,
    label_file_name,
    write_classes_file,
    write_label_png,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.progress import ProgressFn
    from storage.exports import LabelRow
    from storage.models import ClassLabel


@dataclass
class LabelledImage:
    """One image's exported label: its row, the label map, and the confidence of a model's label."""

    row: LabelRow
    label_map: np.ndarray
    confidence: np.ndarray | None  # model-made labels only


@dataclass(frozen=True)
class ExportCounts:
    exported: int  # images written with a label
    skipped: int  # images without a label of the source
    from_human: int
    from_model: int
    annotations: int  # regions written (0 where the format has none)


class ExportJob(Protocol):
    """What a writer exports (``services.exporting`` makes it, inside the export's transaction)."""

    session: Session
    project: str  # as the caller named it
    project_id: int
    classes: list[ClassLabel]
    source: str  # "best", "human" or "model"
    run_id: int | None  # the current model's run, when its labels may be exported
    model_version: int | None
    palette: bool  # VOC: palette PNGs in the class colours
    progress: ProgressFn

    def labelled(self) -> Iterator[LabelledImage]:
        """The images with a label of the source, decoded (progress and cancellation as they go)."""

    def counts(self, annotations: int) -> ExportCounts:
        """What :meth:`labelled` streamed."""


Writer = Callable[[Path, ExportJob], ExportCounts]


def coco_results_path(out: Path) -> Path:
    """The COCO results file written beside the dataset file ``out``: ``<stem>_results.json``."""
    return out.with_name(f"{out.stem}_results.json")


def _write_coco(out: Path, job: ExportJob) -> ExportCounts:
    info = {
        "description": f"SLRNet Studio export of project {job.project}",
        "source": job.source,
        "model_version": job.model_version,
        "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    category_ids = [c.index for c in job.classes if not c.is_background]
    categories = [{"id": c.index, "name": c.name} for c in job.classes if not c.is_background]
    with (
        atomic_text_file(out) as fh,
        atomic_text_file(coco_results_path(out)) as results_fh,
        tempfile.TemporaryFile("w+", encoding="utf-8") as spool,
    ):
        dataset = CocoDatasetWriter(fh, spool, categories, info)
        results = CocoResultsWriter(results_fh)
        for item in job.labelled():
            regions = label_map_regions(item.label_map, category_ids, confidence=item.confidence)
            row = item.row
            made_by_model = item.confidence is not None
            dataset.add_image(row.image_id, row.name, row.width, row.height, regions,
                              job.model_version if made_by_model else None)
            results.add_image(row.image_id, regions)
        dataset.finish()
        results.finish()
    return job.counts(dataset.n_annotations)


def _write_voc(out: Path, job: ExportJob) -> ExportCounts:
    colors = build_palette({c.index: c.color for c in job.classes}) if job.palette else None
    written: dict[str, str] = {}  # label file name -> image name
    with atomic_folder(out) as folder:
        write_classes_file(folder / CLASSES_FILE, {c.index: c.name for c in job.classes})
        for item in job.labelled():
            name = label_file_name(item.row.name)
            if name == CLASSES_FILE or name in written:
                other = written.get(name, CLASSES_FILE)
                raise UserError(f"images {other!r} and {item.row.name!r} would both be written as {name}")
            written[name] = item.row.name
            write_label_png(folder / name, item.label_map, colors)
    return job.counts(0)


def _write_label_studio(out: Path, job: ExportJob) -> ExportCounts:
    with atomic_text_file(out) as fh, atomic_text_file(label_studio_config_path(out)) as config_fh:
        counts = write_label_studio_tasks(fh, job.session, job.project_id, job.classes, job.run_id,
                                          job.model_version, job.source)
        write_label_studio_config(config_fh, job.classes)
    job.progress(1.0, f"exported {counts.tasks} tasks", {"exported": counts.tasks})
    return ExportCounts(exported=counts.tasks, skipped=counts.tasks - counts.labelled,
                        from_human=counts.annotations, from_model=counts.predictions,
                        annotations=counts.annotations + counts.predictions)


def _nothing_beside(out: Path) -> list[Path]:
    return []


@dataclass(frozen=True)
class Exporter:
    name: str  # what --format and the job parameters say
    write: Writer
    folder: bool  # the output is a folder (downloaded zipped); else a file
    suffix: str  # of the default output name ("" for a folder)
    media_type: str  # of the download: the file, or the zipped folder
    beside: Callable[[Path], list[Path]] = _nothing_beside  # further files written next to ``out``
    annotations: bool = False  # the summary counts the annotations written

    def default_name(self, stem: str) -> str:
        """The output's name when none is given: ``stem`` plus the format's suffix."""
        return f"{stem}{self.suffix}"

    def check_destination(self, out: Path) -> None:
        """UserError when ``out`` cannot take this format's output (nothing is written)."""
        if not out.parent.is_dir():
            raise UserError(f"folder {out.parent} does not exist")
        if self.folder:
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise UserError(f"{out} already exists and is not an empty folder; choose a new one")
            return
        if out.is_dir():
            example = out / self.default_name("labels")
            raise UserError(f"{out} is a folder; give a file path such as {example}")
        for path in self.beside(out):
            if path.is_dir():
                raise UserError(f"{path} is a folder; choose another output name")


EXPORTERS: dict[str, Exporter] = {e.name: e for e in (
    Exporter("coco", _write_coco, folder=False, suffix=".json", media_type="application/json",
             beside=lambda out: [coco_results_path(out)], annotations=True),
    Exporter("voc", _write_voc, folder=True, suffix="", media_type="application/zip"),
    Exporter("label-studio", _write_label_studio, folder=False, suffix=".json", media_type="application/json",
             beside=lambda out: [label_studio_config_path(out)], annotations=True),
)}
FORMATS: tuple[str, ...] = tuple(EXPORTERS)


def get_exporter(name: str) -> Exporter:
    """The exporter of format ``name`` (UserError naming the formats when there is none)."""
    if name not in EXPORTERS:
        raise UserError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}")
    return EXPORTERS[name]
