"""Export a project's labels as COCO JSON (compressed RLE) or VOC-style label PNGs.

The service behind ``launch.py export``, the UI's export button and export jobs.

Which label of an image is exported (``source``):

* ``human`` — the image's mask (painted, imported or an accepted pseudo-label);
* ``model`` — the pseudo-label of the project's current model version (latest published run);
* ``best`` — the mask where there is one, else the current pseudo-label.

Images without a label of the requested source are skipped and counted. Ignore pixels (255) are
never exported as a class; background is not a COCO category.

Layout of ``--format coco`` (``out`` is a file path, e.g. ``labels.json``):

* ``labels.json`` — COCO instances JSON: ``images`` (id = the studio's image id, file_name,
  width, height), ``categories`` (every class except background; id = the class's label value),
  ``annotations`` (one per class present in an image: ``segmentation`` as compressed RLE with str
  counts, ``area``, ``bbox``, ``iscrowd`` 0, plus ``score`` and ``model_version`` on model-made
  labels, ``score`` being the mean confidence of the region's pixels).
* ``labels_results.json`` (``<stem>_results.json`` beside it) — the same regions as a COCO results
  list ``[{image_id, category_id, segmentation, score}]`` (human-made regions score 1.0), ready for
  ``COCO(gold).loadRes(...)`` and ``COCOeval(..., "segm")``. Image ids are stable across exports,
  so a ``--source model`` results file evaluates against a ``--source human`` dataset file.

An existing file is replaced, atomically (both files are written to temporary names first).

Layout of ``--format voc`` (``out`` is a folder that must not exist or be empty):
``<image stem>.png`` per exported image (8-bit class index per pixel, 255 = ignore; greyscale, or
with ``palette`` a palette PNG coloured with the class colours) and ``classes.txt`` (line k = the
class with label value k), i.e. the layout ``launch.py import --classes --masks`` reads. The folder
is built under a temporary name and renamed into place at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from sqlalchemy.orm import Session

from services.context import Studio
from services.errors import UserError
from services.export_label_studio import config_path as label_studio_config_path
from services.export_label_studio import write_config as write_label_studio_config
from services.export_label_studio import write_tasks as write_label_studio_tasks
from services.formats.coco_format import CocoDatasetWriter, CocoResultsWriter, label_map_regions
from services.formats.voc_format import (
    CLASSES_FILE,
    build_palette,
    label_file_name,
    write_classes_file,
    write_label_png,
)
from services.lookups import resolve_project
from services.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from storage.exports import LabelRow, iter_label_rows
from storage.images import count_images
from storage.label_maps import decode_label_png
from storage.labels import current_run_id
from storage.models import ClassLabel, Project, TrainingRun
from storage.projects import list_classes

logger = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "label-studio")
SOURCES = ("best", "human", "model")
PROGRESS_EVERY = 25  # images between progress reports


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote."""

    project: str
    fmt: str
    source: str
    out: Path
    results: Path | None  # the COCO results file, Label Studio's labelling config; None for VOC
    exported: int  # images written
    skipped: int  # images without a label of the requested source
    from_human: int
    from_model: int
    annotations: int  # COCO annotations (regions); 0 for VOC
    model_version: int | None  # version of the pseudo-labels' run, when any were exported

    def summary(self) -> str:
        """One line for the CLI and the UI."""
        parts = []
        if self.from_human:
            parts.append(f"{self.from_human} masks")
        if self.from_model:
            parts.append(f"{self.from_model} model v{self.model_version}")
        if self.fmt != "voc":
            parts.append(f"{self.annotations} annotations")
        where = str(self.out) if self.results is None else f"{self.out} and {self.results.name}"
        return (
            f"exported {self.exported} images ({', '.join(parts)}) as {self.fmt} to {where}; "
            f"skipped {self.skipped} without a {self.source} label"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, for a job's result."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["results"] = None if self.results is None else str(self.results)
        return d


def results_path(out: Path) -> Path:
    """The COCO results file written beside the dataset file ``out``: ``<stem>_results.json``."""
    return out.with_name(f"{out.stem}_results.json")


@dataclass
class _Labelled:
    row: LabelRow
    label_map: np.ndarray
    confidence: np.ndarray | None  # model-made labels only


class _Tally:
    """Counts images as they stream by, reports progress and honours cancellation."""

    def __init__(self, total: int, progress: ProgressFn, should_stop: StopFn) -> None:
        self.total = total
        self.seen = self.from_human = self.from_model = 0
        self._progress = progress
        self._should_stop = should_stop

    @property
    def exported(self) -> int:
        return self.from_human + self.from_model

    def labelled(self, rows: Iterator[LabelRow]) -> Iterator[_Labelled]:
        """The rows that carry a label, decoded; the mask wins over the pseudo-label."""
        for row in rows:
            if self._should_stop():
                raise Cancelled(f"export cancelled after {self.seen} of {self.total} images")
            self.seen += 1
            if row.mask_png is not None:
                self.from_human += 1
                yield _Labelled(row, decode_label_png(row.mask_png), None)
            elif row.pseudo_png is not None and row.confidence_png is not None:
                self.from_model += 1
                yield _Labelled(row, decode_label_png(row.pseudo_png), decode_label_png(row.confidence_png))
            if self.seen % PROGRESS_EVERY == 0:
                self.report()

    def report(self) -> None:
        fraction = self.seen / self.total if self.total else 1.0
        self._progress(
            fraction,
            f"exported {self.exported} of {self.total} images",
            {"exported": self.exported, "skipped": self.seen - self.exported},
        )


def export_project(
    studio: Studio,
    project: str,
    out: str | Path,
    *,
    fmt: str = "coco",
    source: str = "best",
    palette: bool = False,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ExportReport:
    """Export ``project``'s labels of ``source`` to ``out`` as ``fmt`` (see the module docstring).

    ``palette`` (VOC only) writes palette PNGs in the class colours instead of greyscale ones.
    Raises :class:`UserError` for an unknown format, source or project, a bad destination, or
    ``source="model"`` without a published model; :class:`Cancelled` when ``should_stop()`` says
    so. On any failure ``out`` (and the results file) stay as they were.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if source not in SOURCES:
        raise UserError(f"unknown label source {source!r}; choose one of {', '.join(SOURCES)}")
    out = Path(out).expanduser().absolute()
    _check_destination(out, fmt)
    if fmt == "label-studio":
        return _export_label_studio(studio, project, out, source, progress or no_progress)
    progress = progress or no_progress
    should_stop = should_stop or never_stop

    with studio.Session.begin() as session:
        proj, classes, run_id, version = _what_to_export(session, project, source)
        tally = _Tally(count_images(session, proj.id), progress, should_stop)
        items = tally.labelled(iter_label_rows(session, proj.id, source=source, run_id=run_id))
        if fmt == "coco":
            info = {
                "description": f"SLRNet Studio export of project {project}",
                "source": source,
                "model_version": version,
                "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            annotations = _write_coco(out, items, classes, info, version)
        else:
            _write_voc(out, items, classes, palette)
            annotations = 0
    tally.report()
    report = ExportReport(
        project=project,
        fmt=fmt,
        source=source,
        out=out,
        results=results_path(out) if fmt == "coco" else None,
        exported=tally.exported,
        skipped=tally.seen - tally.exported,
        from_human=tally.from_human,
        from_model=tally.from_model,
        annotations=annotations,
        model_version=version if tally.from_model else None,
    )
    logger.debug("%s", report.summary())
    return report


def _what_to_export(session: Session, project: str, source: str
                    ) -> tuple[Project, list[ClassLabel], int | None, int | None]:
    """The project, its classes, and the run (id, version) whose pseudo-labels ``source`` exports."""
    proj = resolve_project(session, project)
    classes = list_classes(session, proj.id)
    run_id = None if source == "human" else current_run_id(session, proj.id)
    if source == "model" and run_id is None:
        raise UserError(f"project {proj.name!r} has no published model yet; train and predict first")
    version = session.get(TrainingRun, run_id).version if run_id is not None else None
    return proj, classes, run_id, version


def _export_label_studio(studio: Studio, project: str, out: Path, source: str,
                         progress: ProgressFn) -> ExportReport:
    with studio.Session.begin() as session:
        proj, classes, run_id, version = _what_to_export(session, project, source)
        with _atomic_text_file(out) as fh, _atomic_text_file(label_studio_config_path(out)) as config_fh:
            counts = write_label_studio_tasks(fh, session, proj.id, classes, run_id, version, source)
            write_label_studio_config(config_fh, classes)
    progress(1.0, f"exported {counts.tasks} tasks", {"exported": counts.tasks})
    return ExportReport(
        project=project, fmt="label-studio", source=source, out=out, results=label_studio_config_path(out),
        exported=counts.tasks, skipped=counts.tasks - counts.labelled, from_human=counts.annotations,
        from_model=counts.predictions,
        annotations=counts.annotations + counts.predictions,
        model_version=version if counts.predictions else None,
    )


def _check_destination(out: Path, fmt: str) -> None:
    if not out.parent.is_dir():
        raise UserError(f"folder {out.parent} does not exist")
    if fmt == "label-studio":
        fmt = "coco"  # a file too, with a second file beside it
        if label_studio_config_path(out).is_dir():
            raise UserError(f"{label_studio_config_path(out)} is a folder; choose another output name")
    if fmt == "coco":
        if out.is_dir():
            raise UserError(f"{out} is a folder; give a file path such as {out / 'labels.json'}")
        if results_path(out).is_dir():
            raise UserError(f"{results_path(out)} is a folder; choose another output name")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty folder; choose a new one")


def _write_coco(
    out: Path,
    items: Iterator[_Labelled],
    classes: list[ClassLabel],
    info: dict[str, Any],
    version: int | None,
) -> int:
    category_ids = [c.index for c in classes if not c.is_background]
    categories = [{"id": c.index, "name": c.name} for c in classes if not c.is_background]
    with (
        _atomic_text_file(out) as fh,
        _atomic_text_file(results_path(out)) as results_fh,
        tempfile.TemporaryFile("w+", encoding="utf-8") as spool,
    ):
        dataset = CocoDatasetWriter(fh, spool, categories, info)
        results = CocoResultsWriter(results_fh)
        for item in items:
            regions = label_map_regions(item.label_map, category_ids, confidence=item.confidence)
            row = item.row
            made_by_model = item.confidence is not None
            dataset.add_image(
                row.image_id, row.name, row.width, row.height, regions, version if made_by_model else None
            )
            results.add_image(row.image_id, regions)
        dataset.finish()
        results.finish()
    return dataset.n_annotations


def _write_voc(out: Path, items: Iterator[_Labelled], classes: list[ClassLabel], palette: bool) -> None:
    colors = build_palette({c.index: c.color for c in classes}) if palette else None
    written: dict[str, str] = {}  # label file name -> image name
    with _atomic_folder(out) as folder:
        write_classes_file(folder / CLASSES_FILE, {c.index: c.name for c in classes})
        for item in items:
            name = label_file_name(item.row.name)
            if name == CLASSES_FILE or name in written:
                other = written.get(name, CLASSES_FILE)
                raise UserError(f"images {other!r} and {item.row.name!r} would both be written as {name}")
            written[name] = item.row.name
            write_label_png(folder / name, item.label_map, colors)


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


@contextmanager
def _atomic_text_file(path: Path) -> Iterator[TextIO]:
    """A text file that appears at ``path`` only when the block succeeds, with the permissions
    a plain ``open`` would give it (temporary files are private)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _atomic_folder(path: Path) -> Iterator[Path]:
    """A folder that appears at ``path`` (absent or empty) only when the block succeeds."""
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.is_dir():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
