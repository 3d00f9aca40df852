"""A project's images' backbone features in the feature store: fill it, read it, count what is missing.

The store (:mod:`storage.feature_store`, ``studio.features``) keeps each image's features once per
content and :class:`slrnet.features.FeatureSpec` (backbone + weights, image size, views); the
extractor (:class:`slrnet.features.FeatureExtractor`) computes them. This module is torch-free until
something is computed: the counts the plan and the UI show (:func:`images_needing_features`,
:func:`feature_status`) never import torch.

* :func:`fill_project` — compute and store what is missing (the background ``features`` job after
  an import, ``launch.py features``); it can pause between images (``should_pause``) so that
  training and predict, which compute what is missing themselves, never wait behind it.
* :func:`project_features` — for training and predict: fill what is missing (with progress), then a
  mapping image id -> arrays that reads the store and recomputes an entry evicted meanwhile.
* :func:`images_needing_features` — the plan's "images still needing features" for a spec key.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from services.errors import UserError
from services.lookups import resolve_project
from services.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from storage import images as image_repo
from storage.feature_store import megabytes

if TYPE_CHECKING:
    from services.context import Studio

logger = logging.getLogger(__name__)

EXTRACTOR_MODULE = "slrnet.features"
PREFILL_ENV = "SLRNET_PREFILL_FEATURES"  # "0": no background fill after an import (the test suite)
PauseFn = Callable[[], str | None]  # a reason to stop filling for now (e.g. training waits), or None


class Extractor(Protocol):
    """What :func:`make_extractor` returns (slrnet.features.FeatureExtractor; fakes in tests)."""

    def extract(self, image: np.ndarray) -> dict[str, np.ndarray]: ...


def features_available() -> bool:
    """Whether this installation can compute features (the extractor module is there)."""
    try:
        return importlib.util.find_spec(EXTRACTOR_MODULE) is not None
    except (ImportError, ValueError):
        return False


def prefill_enabled() -> bool:
    """Whether an import queues the background fill of its project's features (default yes)."""
    return features_available() and os.environ.get(PREFILL_ENV, "1") != "0"


def feature_spec(backbone: str | None = None, image_size: int | None = None) -> Any:
    """The :class:`slrnet.features.FeatureSpec` of ``backbone`` (default: the extractor's default
    backbone) with its weights, at ``image_size`` (default: the extractor's). Imports torch."""
    module = importlib.import_module(EXTRACTOR_MODULE)
    options: dict[str, Any] = {}
    if backbone:
        options["backbone"] = backbone
    if image_size:
        options["image_size"] = int(image_size)
    try:
        return module.FeatureSpec.for_backbone(**options)
    except (ValueError, KeyError) as exc:
        raise UserError(f"no stored features for these settings: {exc}") from exc


def make_extractor(spec: Any, device: str = "auto") -> Extractor:
    """The extractor of ``spec`` on ``device`` ("auto": CUDA when present). The one place one is
    built (tests swap it for a fake)."""
    module = importlib.import_module(EXTRACTOR_MODULE)
    from services.devices import open_device

    return module.FeatureExtractor(spec, device=open_device(device))


class LazyExtractor:
    """An extractor built on its first ``extract`` (nothing missing: torch is never imported)."""

    def __init__(self, spec: Any, device: str = "auto") -> None:
        self.spec = spec
        self.device = device
        self._extractor: Extractor | None = None

    def extract(self, image: np.ndarray) -> dict[str, np.ndarray]:
        if self._extractor is None:
            self._extractor = make_extractor(self.spec, self.device)
        return self._extractor.extract(image)


def _contents(studio: Studio, project: int | str) -> tuple[int, list[tuple[int, str, str]]]:
    """(project id, [(image id, content hash, store path)]) of the project's images."""
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        return row.id, image_repo.image_contents(session, row.id)


def _distinct(contents: list[tuple[int, str, str]]) -> dict[str, str]:
    """content hash -> a store path of it (two images of a project may share a content)."""
    return {sha: path for _, sha, path in reversed(contents)}


# --- counts: the plan and the UI (torch-free) --------------------------------------------------


def images_needing_features(studio: Studio, project: int | str, spec_key: str) -> int:
    """How many of the project's images (distinct contents) have no stored features for
    ``spec_key`` (a ``FeatureSpec.key``): what a training or predict on that spec would compute
    first. Torch-free and cheap (one query, one ``stat`` per image), for the training plan and
    the preview; the time per image is the plan's to estimate."""
    _, contents = _contents(studio, project)
    return len(studio.features.missing(_distinct(contents), spec_key))


@dataclass(frozen=True)
class FeatureStatus:
    """How far a project's images are in the store for one spec."""

    spec_key: str
    ready: int  # distinct image contents with features
    total: int  # distinct image contents of the project
    bytes: int  # what the ready ones take on disk
    store_bytes: int  # the whole store
    cap_bytes: int

    @property
    def missing(self) -> int:
        return self.total - self.ready

    def line(self) -> str:
        """E.g. "features: 120/334 images ready, 85.0 MB (store 1.2 GB of 4.1 GB)"."""
        return (f"features: {self.ready}/{self.total} images ready, {megabytes(self.bytes)} "
                f"(store {megabytes(self.store_bytes)} of {megabytes(self.cap_bytes)})")


def feature_status(studio: Studio, project: int | str, spec_key: str) -> FeatureStatus:
    """The project's images' features for ``spec_key``: ready / total and their size. Torch-free."""
    _, contents = _contents(studio, project)
    hashes = _distinct(contents)
    mine = studio.features.usage(spec_key, hashes)
    return FeatureStatus(spec_key=spec_key, ready=mine.images, total=len(hashes), bytes=mine.bytes,
                         store_bytes=studio.features.usage().bytes, cap_bytes=studio.features.cap_bytes)


# --- filling -----------------------------------------------------------------------------------


@dataclass
class FillReport:
    """What :func:`fill_project` did."""

    spec_key: str
    total: int  # distinct image contents of the project
    already: int  # had features before
    computed: int = 0
    unreadable: list[str] = field(default_factory=list)  # store paths that could not be read
    paused: str | None = None  # why it stopped early (the rest is computed when needed)
    bytes_written: int = 0
    seconds: float = 0.0

    @property
    def ready(self) -> int:
        return self.already + self.computed

    def summary(self) -> str:
        text = f"features: {self.ready}/{self.total} images ready"
        if self.computed:
            per = self.seconds / self.computed
            text += (f" ({self.computed} computed in {self.seconds:.0f} s, {per:.2f} s and "
                     f"{megabytes(self.bytes_written // self.computed)} per image)")
        if self.unreadable:
            text += f"; {len(self.unreadable)} image file(s) unreadable"
        if self.paused:
            text += f"; paused: {self.paused}"
        return text


def fill_project(
    studio: Studio,
    project: int | str,
    spec: Any,
    *,
    device: str = "auto",
    extractor: Extractor | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    should_pause: PauseFn | None = None,
) -> FillReport:
    """Compute and store the features of the project's images that have none for ``spec``.

    Checks ``should_stop`` (raises :class:`Cancelled`) and ``should_pause`` (returns early with
    ``report.paused`` set) between images. An image file that cannot be read is skipped and named
    in the report. Without ``extractor`` one is built only when something is missing. A full disk
    (OSError on write) ends the fill with a :class:`UserError`.
    """
    extractor = extractor or LazyExtractor(spec, device)
    progress = progress or no_progress
    should_stop = should_stop or never_stop
    _, contents = _contents(studio, project)
    hashes = _distinct(contents)
    missing = studio.features.missing(hashes, spec.key)
    report = FillReport(spec_key=spec.key, total=len(hashes), already=len(hashes) - len(missing))
    started = time.monotonic()
    for i, sha in enumerate(missing):
        if should_stop():
            raise Cancelled("feature computation cancelled")
        reason = should_pause() if should_pause is not None else None
        if reason:
            report.paused = reason
            break
        try:
            pixels = studio.images.read_rgb(hashes[sha])
        except (OSError, ValueError) as exc:  # deleted behind the database, or undecodable
            logger.warning("features: cannot read %s: %s", hashes[sha], exc)
            report.unreadable.append(hashes[sha])
            continue
        arrays = extractor.extract(pixels)
        try:
            report.bytes_written += studio.features.put(sha, spec.key, arrays)
        except OSError as exc:
            raise UserError(f"could not store features under {studio.features.root}: {exc}") from exc
        report.computed += 1
        report.seconds = time.monotonic() - started
        progress((i + 1) / len(missing), f"features {report.ready}/{report.total} images",
                 {"features_ready": report.ready, "features_total": report.total, "spec_key": spec.key})
    report.seconds = time.monotonic() - started
    if report.computed and report.bytes_written // report.computed * report.total > studio.features.cap_bytes:
        logger.warning("the project's features (about %s) do not fit the feature store's cap (%s): "
                       "raise it (--feature-cache-mb / $SLRNET_FEATURE_CACHE_MB) or they are recomputed",
                       megabytes(report.bytes_written // report.computed * report.total),
                       megabytes(studio.features.cap_bytes))
    logger.info("project %s: %s", project, report.summary())
    return report


# --- reading: training and predict ---------------------------------------------------------------


class ProjectFeatures(Mapping[int, dict[str, np.ndarray]]):
    """A project's features by image id, read from the store on access. An entry evicted since
    the fill (a cap smaller than the project) is computed again, stored, and returned."""

    def __init__(self, studio: Studio, spec: Any, contents: list[tuple[int, str, str]],
                 extractor: Extractor) -> None:
        self._studio = studio
        self.spec = spec
        self._images = {image_id: (sha, path) for image_id, sha, path in contents}
        self._extractor = extractor
        self.recomputed = 0  # entries computed on access (evicted, or not stored)

    def __getitem__(self, image_id: int) -> dict[str, np.ndarray]:
        sha, path = self._images[image_id]
        arrays = self._studio.features.get(sha, self.spec.key)
        if arrays is not None:
            return arrays
        arrays = self._extractor.extract(self._studio.images.read_rgb(path))
        self.recomputed += 1
        try:
            self._studio.features.put(sha, self.spec.key, arrays)
        except OSError as exc:  # a full disk: train on, from memory
            logger.warning("could not store features: %s", exc)
        return {name: np.array(a, dtype=np.float16) for name, a in arrays.items()}

    def __iter__(self) -> Iterator[int]:
        return iter(self._images)

    def __len__(self) -> int:
        return len(self._images)

    def content_of(self, image_id: int) -> str:
        """The image's content hash."""
        return self._images[image_id][0]


def project_features(
    studio: Studio,
    project: int | str,
    spec: Any,
    *,
    device: str = "auto",
    extractor: Extractor | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ProjectFeatures:
    """What training and predict read: the project's features for ``spec`` by image id, after
    computing those still missing (``progress`` reports "features k/n images"; ``should_stop``
    raises :class:`Cancelled` between images). One extractor serves the fill and later misses."""
    extractor = extractor or LazyExtractor(spec, device)
    fill = fill_project(studio, project, spec, device=device, extractor=extractor, progress=progress,
                        should_stop=should_stop)
    if fill.unreadable:
        raise UserError(f"{len(fill.unreadable)} image file(s) of the project cannot be read, "
                        f"e.g. {fill.unreadable[0]}")
    _, contents = _contents(studio, project)
    return ProjectFeatures(studio, spec, contents, extractor)
