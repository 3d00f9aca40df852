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

Layout of ``--format label-studio``: see :mod:`services.export_label_studio`. The formats, their
writers and their file naming are one table, :mod:`services.formats.exporters`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from services.context import Studio
from services.errors import UserError
from services.formats.exporters import ExportCounts, LabelledImage, get_exporter
from services.lookups import resolve_project
from services.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from storage.exports import iter_label_rows
from storage.images import count_images
from storage.label_maps import decode_label_png
from storage.labels import current_run_id
from storage.models import ClassLabel, TrainingRun
from storage.projects import list_classes

logger = logging.getLogger(__name__)

SOURCES = ("best", "human", "model")
PROGRESS_EVERY = 25  # images between progress reports


@dataclass(frozen=True)
class ExportOptions:
    """How to export (checked when made): the CLI, the Export tab, the job and
    :func:`export_project` pass it along unchanged."""

    fmt: str = "coco"  # a format of services.formats.exporters
    source: str = "best"  # one of SOURCES
    palette: bool = False  # VOC: palette PNGs in the class colours

    def __post_init__(self) -> None:
        get_exporter(self.fmt)
        if self.source not in SOURCES:
            raise UserError(f"unknown label source {self.source!r}; choose one of {', '.join(SOURCES)}")


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote."""

    project: str
    fmt: str
    source: str
    out: Path
    results: Path | None  # the file written beside ``out`` (COCO's results, Label Studio's config)
    exported: int  # images written
    skipped: int  # images without a label of the requested source
    from_human: int
    from_model: int
    annotations: int  # annotations (regions) where the format has them; 0 for VOC
    model_version: int | None  # version of the pseudo-labels' run, when any were exported

    def summary(self) -> str:
        """One line for the CLI and the UI."""
        parts = []
        if self.from_human:
            parts.append(f"{self.from_human} masks")
        if self.from_model:
            parts.append(f"{self.from_model} model v{self.model_version}")
        if get_exporter(self.fmt).annotations:
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


class _Export:
    """One export in progress, as a format's writer sees it (:class:`services.formats.exporters.ExportJob`):
    what to export, and the labelled images streamed with progress, cancellation and counts."""

    def __init__(self, session: Session, project: str, source: str, palette: bool,
                 progress: ProgressFn, should_stop: StopFn) -> None:
        proj = resolve_project(session, project)
        self.session, self.project, self.project_id = session, project, proj.id
        self.source, self.palette, self.progress, self._should_stop = source, palette, progress, should_stop
        self.classes: list[ClassLabel] = list_classes(session, proj.id)
        self.run_id = None if source == "human" else current_run_id(session, proj.id)
        if source == "model" and self.run_id is None:
            raise UserError(f"project {proj.name!r} has no published model yet; train and predict first")
        run = session.get(TrainingRun, self.run_id) if self.run_id is not None else None
        self.model_version = run.version if run is not None else None
        self.total = count_images(session, proj.id)
        self.seen = self.from_human = self.from_model = 0

    @property
    def exported(self) -> int:
        return self.from_human + self.from_model

    def labelled(self) -> Iterator[LabelledImage]:
        """The images that carry a label of the source, decoded; the mask wins over the pseudo-label."""
        rows = iter_label_rows(self.session, self.project_id, source=self.source, run_id=self.run_id)
        for row in rows:
            if self._should_stop():
                raise Cancelled(f"export cancelled after {self.seen} of {self.total} images")
            self.seen += 1
            if row.mask_png is not None:
                self.from_human += 1
                yield LabelledImage(row, decode_label_png(row.mask_png), None)
            elif row.pseudo_png is not None and row.confidence_png is not None:
                self.from_model += 1
                yield LabelledImage(row, decode_label_png(row.pseudo_png),
                                    decode_label_png(row.confidence_png))
            if self.seen % PROGRESS_EVERY == 0:
                self._report()

    def counts(self, annotations: int) -> ExportCounts:
        """What :meth:`labelled` streamed (reported as the last progress)."""
        self._report()
        return ExportCounts(exported=self.exported, skipped=self.seen - self.exported,
                            from_human=self.from_human, from_model=self.from_model, annotations=annotations)

    def _report(self) -> None:
        fraction = self.seen / self.total if self.total else 1.0
        self.progress(
            fraction,
            f"exported {self.exported} of {self.total} images",
            {"exported": self.exported, "skipped": self.seen - self.exported},
        )


def export_project(
    studio: Studio,
    project: str,
    out: str | Path,
    options: ExportOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ExportReport:
    """Export ``project``'s labels of ``options.source`` to ``out`` as ``options.fmt`` (see the
    module docstring); ``options.palette`` (VOC only) writes palette PNGs in the class colours
    instead of greyscale ones. Raises :class:`UserError` for an unknown project, a bad
    destination, or ``source="model"`` without a published model; :class:`Cancelled` when
    ``should_stop()`` says so. On any failure ``out`` (and the file beside it) stay as they were.
    """
    options = options or ExportOptions()
    fmt, source, palette = options.fmt, options.source, options.palette
    exporter = get_exporter(fmt)
    out = Path(out).expanduser().absolute()
    exporter.check_destination(out)
    with studio.Session.begin() as session:
        job = _Export(session, project, source, palette, progress or no_progress, should_stop or never_stop)
        counts = exporter.write(out, job)
    report = ExportReport(
        project=project,
        fmt=fmt,
        source=source,
        out=out,
        results=next(iter(exporter.beside(out)), None),
        exported=counts.exported,
        skipped=counts.skipped,
        from_human=counts.from_human,
        from_model=counts.from_model,
        annotations=counts.annotations,
        model_version=job.model_version if counts.from_model else None,
    )
    logger.debug("%s", report.summary())
    return report
