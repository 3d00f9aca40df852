"""The import service: a folder or .zip of images, optionally with classes, tags and masks.

Everything is validated before the database is touched, and all rows are written in one
transaction. Image files go into the content-addressed store as they are read; files this import
added are removed again if it fails, unless a row or a concurrent import uses them by then (files
are shared by content). Files left by a killed import are swept at the start of the next one
(:mod:`services.content_store`); uploads from the browser are staged by :mod:`services.uploads`.
Images whose content the project already has are skipped, so running the same import twice adds
nothing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import logging
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from services import content_store, uploads
from services.context import Studio
from services.errors import UserError
from services.formats.coco_masks import CocoDataset, load_coco, rasterize
from services.formats.label_studio import (
    ExportTask,
    LabelConfig,
    LabelStudioError,
    config_for_names,
    label_names_in,
    parse_label_config,
    read_export,
    read_results,
)
from services.import_options import ImportOptions
from services.import_sources import ImageSource, confine, open_sources, open_upload_sources
from services.labeling import MAX_CLASSES, full_class_list, label_map_problem
from services.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from slrnet.config import IGNORE_INDEX
from storage import images as image_repo
from storage import labels as label_repo
from storage import projects as project_repo
from storage.errors import ConcurrentChange, concurrent_changes
from storage.files import (
    HEADER_BYTES,
    ImageFileError,
    ImageMeta,
    header_size,
    inspect_image,
    max_file_bytes,
    sha256_bytes,
    storable_bytes,
)
from storage.label_maps import encode_label_png

logger = logging.getLogger(__name__)


_MASK_MODES = frozenset({"1", "L", "P", "I", "I;16"})  # "1": a 1-bit PNG, read as 0/1


@dataclass
class ImportReport:
    """What an import did."""

    project: str
    project_id: int = 0
    images_added: int = 0
    duplicates_skipped: int = 0  # same content as an image already in the project or this import
    tags_added: int = 0
    masks_added: int = 0
    masks_kept: int = 0  # images that already had a mask (it is not replaced)
    classes: int = 0
    first_frame_only: list[str] = field(default_factory=list)  # multi-frame files: frame 0 imported

    def summary(self) -> str:
        """A one-line summary for the CLI and the UI."""
        line = (
            f"project {self.project!r}: {self.images_added} images added, "
            f"{self.duplicates_skipped} duplicates skipped, {self.tags_added} tags added, "
            f"{self.masks_added} masks added ({self.masks_kept} existing kept), {self.classes} classes"
        )
        if self.first_frame_only:
            names = ", ".join(self.first_frame_only[:3]) + (", ..." if len(self.first_frame_only) > 3 else "")
            line += f"; only the first frame of {len(self.first_frame_only)} multi-frame images ({names})"
        return line


@dataclass
class _Entry:
    """One distinct image (by content) that the import names."""

    name: str
    sha256: str
    width: int
    height: int
    relpath: str
    image_id: int | None = None  # set for images already in the project
    has_mask: bool = False
    in_import: bool = False  # one of the import's files has this content
    tag_indices: set[int] = field(default_factory=set)
    mask_png: bytes | None = None
    mask_partial: bool = False
    reread: Callable[[], bytes] | None = None  # the bytes to store again, should the file vanish

    def set_mask(self, label_map: np.ndarray) -> None:
        """Plan ``label_map`` as the image's mask, unless it labels no pixel at all."""
        unknown = label_map == IGNORE_INDEX
        if not unknown.all():
            self.mask_png, self.mask_partial = encode_label_png(label_map), bool(unknown.any())


@dataclass
class _Plan:
    """Everything the import will write, validated."""

    classes: list[str] | None  # to set on the project; None keeps its classes
    has_background: bool
    entries: dict[str, _Entry] = field(default_factory=dict)  # by sha256
    by_name: dict[str, _Entry] = field(default_factory=dict)  # every name (incl. duplicates' names)


def _existing_path(path: str | Path | None, what: str, *, is_dir: bool = False,
                   within: Sequence[Path] = ()) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    confine(p, within, f"{what} {p}")
    if not p.exists():
        raise UserError(f"{what} {p} does not exist")
    if is_dir and not p.is_dir():
        raise UserError(f"{what} {p} is not a folder")
    if not is_dir and not p.is_file():
        raise UserError(f"{what} {p} is not a file")
    return p


MAX_CLASS_NAME = 100
_NOT_IN_CLASS_NAMES = frozenset(":/\\")


def _read_classes_file(path: Path) -> list[str]:
    """Class names, one per line. What is not a plausible class file (a system file, a binary)
    is refused without quoting any of it."""
    try:
        if path.stat().st_size > MAX_CLASSES * (MAX_CLASS_NAME + 2) + 3:
            raise UserError(f"{path}: not a class file (too large)")
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a class file (not UTF-8 text)") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read the class file ({exc.strerror or type(exc).__name__})") from exc
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise UserError(f"{path}: the class file lists no classes")
    if len(names) > MAX_CLASSES:
        raise UserError(f"{path}: not a class file ({len(names)} lines; at most {MAX_CLASSES} classes)")
    for number, name in enumerate(names, start=1):
        if not name:
            raise UserError(f"{path}: line {number} is empty")
        if len(name) > MAX_CLASS_NAME or not name.isprintable() or _NOT_IN_CLASS_NAMES & set(name):
            raise UserError(
                f"{path}: line {number} is not a class name (at most {MAX_CLASS_NAME} printable "
                "characters, no ':', '/' or '\\'); is this a class file?"
            )
    return names


def _read_tags_csv(path: Path) -> list[tuple[int, str, list[str]]]:
    """Rows ``(line, image name, class names)`` of an ``image,tags`` CSV."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [h.strip() for h in (reader.fieldnames or [])]
            if "image" not in fields or "tags" not in fields:  # never quote what the file holds
                raise UserError(f"{path}: not a tags CSV (its first line must name the columns image,tags)")
            reader.fieldnames = fields
            rows = []
            for row in reader:
                image = (row.get("image") or "").strip()
                if not image:
                    raise UserError(f"{path}:{reader.line_num}: no image name")
                tags = [t.strip() for t in (row.get("tags") or "").split(";") if t.strip()]
                rows.append((reader.line_num, image, tags))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a tags CSV (not UTF-8 text)") from exc
    except csv.Error as exc:
        raise UserError(f"{path}: not a tags CSV (line {reader.line_num} is malformed)") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read the tags CSV ({exc.strerror or type(exc).__name__})") from exc
    return rows


def _resolve_classes(
    studio: Studio,
    project: str,
    classes_file: Path | None,
    coco: CocoDataset | None,
    has_background: bool,
    label_config: LabelConfig | None = None,
) -> tuple[list[str] | None, list[str], bool]:
    """``(classes to set or None, the class list in effect, has_background in effect)``."""
    with studio.Session.begin() as session:
        row = project_repo.get_project_by_name(session, project)
        existing = [c.name for c in project_repo.list_classes(session, row.id)] if row else []
        if existing:
            has_background = row.has_background
    wanted: list[str] | None = None
    if classes_file is not None:
        wanted = full_class_list(_read_classes_file(classes_file), has_background)
    elif coco is not None and not existing:
        wanted = full_class_list(list(coco.categories.values()), has_background)
    elif label_config is not None and not existing:
        wanted = full_class_list(label_config.classes, has_background)
    if existing and wanted is not None and wanted != existing:
        raise UserError(
            f"project {project!r} already has {len(existing)} other classes "
            f"({', '.join(existing[:5])}{', ...' if len(existing) > 5 else ''}); "
            "import with the same class file or none"
        )
    if existing:
        return None, existing, has_background
    return wanted, wanted or [], has_background


def _existing_entries(studio: Studio, project: str, plan: _Plan) -> None:
    with studio.Session.begin() as session:
        row = project_repo.get_project_by_name(session, project)
        if row is None:
            return
        with_mask = label_repo.image_ids_with_mask(session, row.id)
        for image in image_repo.all_images(session, row.id):
            entry = _Entry(
                name=image.name,
                sha256=image.sha256,
                width=image.width,
                height=image.height,
                relpath=image.path,
                image_id=image.id,
                has_mask=image.id in with_mask,
            )
            plan.entries[image.sha256] = entry
            plan.by_name[image.name] = entry


def _read_source(source: ImageSource, max_pixels: int) -> tuple[bytes, ImageMeta]:
    """The validated bytes to store of one image, and what they hold. The size is read from the
    header first: neither too many pixels nor a file far longer than such an image needs (zip
    amplification, data appended) is read into memory."""
    try:
        with source.open() as f:
            head = f.read(HEADER_BYTES)
            try:
                width, height = header_size(head, max_pixels=max_pixels)
            except ImageFileError:
                if len(head) < HEADER_BYTES:
                    raise
                f.seek(0)  # metadata over HEADER_BYTES, a TIFF directory at the end: read on
                width, height = header_size(f, max_pixels=max_pixels)
        limit = max_file_bytes(width, height)
        if source.size > limit:
            raise UserError(
                f"{source.origin}: {source.size} bytes is far more than a {width}x{height} image needs"
            )
        data = source.read(limit)
        meta = inspect_image(data, max_pixels=max_pixels)
        stored = storable_bytes(data, meta)
        if stored is not data and stored != data:
            # what is kept must decode alone; frames: those of the file as given
            meta = dataclasses.replace(inspect_image(stored, max_pixels=max_pixels), frames=meta.frames)
        return stored, meta
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError: an encrypted zip entry; NotImplementedError: an unsupported compression
        raise UserError(f"{source.origin}: cannot read ({exc})") from exc
    except ImageFileError as exc:
        raise UserError(f"{source.origin}: {exc}") from exc


def _scan_images(
    studio: Studio,
    sources: list[ImageSource],
    plan: _Plan,
    report: ImportReport,
    created: dict[str, int],
    max_pixels: int,
    progress: ProgressFn,
    should_stop: StopFn,
) -> None:
    """Validate and store every image; fills the plan. Store paths this call wrote go in
    ``created`` with the file's mtime then (see :func:`services.content_store.discard_created`)."""
    origin_of: dict[str, str] = {}
    for i, source in enumerate(sources):
        if should_stop():
            raise Cancelled("import cancelled")
        data, meta = _read_source(source, max_pixels)
        if meta.frames > 1:
            report.first_frame_only.append(source.name)
        sha = sha256_bytes(data)
        relpath = studio.images.relpath_for(sha, meta.ext)
        if relpath not in created:  # a second copy in this import: the file is ours already
            stored = studio.images.put(data, meta.ext)
            if stored.created:
                created[relpath] = stored.mtime_ns
        entry = plan.entries.get(sha)
        named = plan.by_name.get(source.name)
        if named is not None and named.sha256 != sha:
            where = origin_of.get(source.name, f"project {report.project!r}")
            raise UserError(f"{source.origin}: an image with other content is already named so ({where})")
        if entry is None:
            entry = _Entry(source.name, sha, meta.width, meta.height, relpath, in_import=True)
            plan.entries[sha] = entry
        else:
            report.duplicates_skipped += 1
            entry.in_import = True
        if entry.reread is None:
            entry.reread = functools.partial(_reread, source, max_pixels)
        plan.by_name[source.name] = entry
        origin_of[source.name] = source.origin
        progress(0.7 * (i + 1) / len(sources), f"read {i + 1}/{len(sources)} images", {})


def _reread(source: ImageSource, max_pixels: int) -> bytes:
    return _read_source(source, max_pixels)[0]


def _plan_tags(path: Path, plan: _Plan, class_index: dict[str, int]) -> None:
    by_stem: dict[str, set[str]] = {}  # an image may also be named by its stem when that is unambiguous
    for name, entry in plan.by_name.items():
        by_stem.setdefault(Path(name).stem, set()).add(entry.sha256)
    for line, image, tags in _read_tags_csv(path):
        entry = plan.by_name.get(image)
        if entry is None and len(by_stem.get(image, ())) == 1:
            entry = plan.entries[next(iter(by_stem[image]))]
        if entry is None:
            raise UserError(f"{path}:{line}: image {image!r} is neither in the import nor in the project")
        for tag in tags:
            if tag not in class_index:
                raise UserError(f"{path}:{line}: unknown class {tag!r}")
            entry.tag_indices.add(class_index[tag])


def _load_mask(path: Path, entry: _Entry, num_classes: int) -> np.ndarray:
    try:
        with PILImage.open(path) as im:
            if im.size != (entry.width, entry.height):
                raise UserError(
                    f"{path}: mask is {im.size[0]}x{im.size[1]} but image {entry.name} is "
                    f"{entry.width}x{entry.height}"
                )
            if im.mode not in _MASK_MODES:
                raise UserError(f"{path}: a mask must be an indexed or grayscale PNG, got mode {im.mode}")
            label_map = np.array(im)
            if im.mode == "1":
                label_map = label_map.astype(np.uint8)
    except UserError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise UserError(f"{path}: cannot read the mask ({exc})") from exc
    problem = label_map_problem(label_map, num_classes, (entry.height, entry.width))
    if problem:
        raise UserError(f"{path}: {problem}")
    return label_map.astype(np.uint8)


def _plan_masks(
    masks_dir: Path, plan: _Plan, report: ImportReport, num_classes: int, progress: ProgressFn,
    within: Sequence[Path] = (),
) -> None:
    files = {p.stem: confine(p, within, str(p)) for p in sorted(masks_dir.iterdir())
             if p.suffix.lower() == ".png" and p.is_file()}
    todo = [(n, e) for n, e in plan.by_name.items() if e.in_import and Path(n).stem in files]
    if not todo:
        raise UserError(
            f"masks folder {masks_dir}: none of its {len(files)} PNG files is named like an imported image"
        )
    used: set[str] = set()
    done: set[str] = set()  # by content: a duplicate's mask under another name is not read again
    for i, (name, entry) in enumerate(todo):
        used.add(Path(name).stem)
        if entry.sha256 not in done:
            if entry.has_mask:
                report.masks_kept += 1
            else:
                entry.set_mask(_load_mask(files[Path(name).stem], entry, num_classes))
        done.add(entry.sha256)
        progress(0.7 + 0.25 * (i + 1) / len(todo), f"read {i + 1}/{len(todo)} masks", {})
    unused = len(files) - len(used)
    if unused:
        logger.warning("%d mask files in %s match no imported image", unused, masks_dir)


def _plan_coco(
    coco: CocoDataset, plan: _Plan, report: ImportReport, classes: list[str], has_background: bool,
    progress: ProgressFn,
) -> None:
    full_class_list(list(coco.categories.values()), has_background)  # names checked like classes
    class_index = {n: i for i, n in enumerate(classes)}
    unknown = sorted({n for n in coco.categories.values() if n not in class_index})
    if unknown:
        raise UserError(f"COCO categories {unknown[:5]} are not classes of the project")
    class_of_category = {cid: class_index[n] for cid, n in coco.categories.items()}
    todo = [(coco.images[n], e) for n, e in plan.by_name.items() if e.in_import and n in coco.images]
    skipped = len(coco.images) - len(todo)
    if skipped:
        logger.warning("%d images of the COCO file are not in the import", skipped)
    done: set[str] = set()
    for i, (coco_image, entry) in enumerate(todo):
        if (coco_image.width, coco_image.height) != (entry.width, entry.height):
            raise UserError(
                f"COCO image {coco_image.file_name} is {coco_image.width}x{coco_image.height} but the file "
                f"is {entry.width}x{entry.height}"
            )
        if entry.sha256 not in done:
            if entry.has_mask:
                report.masks_kept += 1
            else:
                entry.set_mask(rasterize(coco_image, class_of_category, has_background))
        done.add(entry.sha256)
        progress(0.7 + 0.25 * (i + 1) / len(todo), f"rasterised {i + 1}/{len(todo)} COCO masks", {})


def _load_label_studio(export: Path, config_xml: Path | None) -> tuple[list[ExportTask], LabelConfig]:
    """The export's tasks and the config to read them with: the given one, else one inferred from
    the labels the export uses."""
    config = None
    if config_xml is not None:
        try:
            text = config_xml.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{config_xml}: cannot read the labelling config") from exc
        try:
            config = parse_label_config(text)
        except LabelStudioError as exc:
            raise UserError(f"{config_xml}: {exc}") from exc
    try:
        tasks = read_export(export, config.data_key if config else "image")
        if config is None:
            names = label_names_in(tasks)
            if not names:
                raise UserError(f"{export}: no task has an annotation with labels")
            config = config_for_names(names)
    except LabelStudioError as exc:
        raise UserError(str(exc)) from exc
    return tasks, config


def _plan_label_studio(
    tasks: list[ExportTask], config: LabelConfig, plan: _Plan, report: ImportReport, classes: list[str],
    progress: ProgressFn,
) -> None:
    """Tags and masks of each task's newest annotation, for images of the import or the project
    (matched by our content hash where the task has it, else by file name)."""
    class_index = {n: i for i, n in enumerate(classes)}
    done: set[str] = set()
    for i, t in enumerate(tasks):
        entry = plan.entries.get(t.sha256 or "") or plan.by_name.get(t.name)
        if entry is None:
            raise UserError(f"task {t.task_id}: image {t.name!r} is neither in the import nor in the project")
        if t.results is None or entry.sha256 in done:
            continue
        done.add(entry.sha256)
        try:
            labels = read_results(t.results, config, class_index, entry.width, entry.height,
                                  where=f"task {t.task_id}")
        except LabelStudioError as exc:
            raise UserError(str(exc)) from exc
        entry.tag_indices |= labels.tags
        if labels.label_map is not None:
            if entry.has_mask:
                report.masks_kept += 1
            else:
                entry.set_mask(labels.label_map)
        progress(0.7 + 0.25 * (i + 1) / len(tasks), f"read {i + 1}/{len(tasks)} Label Studio tasks", {})


def _write(studio: Studio, plan: _Plan, report: ImportReport, created: dict[str, int]) -> None:
    with studio.Session.begin() as session:
        project = project_repo.get_project_by_name(session, report.project)
        if project is None:
            project = project_repo.create_project(session, report.project, has_background=plan.has_background)
        if plan.classes is not None:
            project.has_background = plan.has_background
            project_repo.set_classes(session, project, plan.classes)
        class_ids = {c.index: c.id for c in project_repo.list_classes(session, project.id)}
        report.project_id, report.classes = project.id, len(class_ids)
        for entry in plan.entries.values():
            if entry.image_id is None:
                image = image_repo.add_image(
                    session, project.id, name=entry.name, sha256=entry.sha256, path=entry.relpath,
                    width=entry.width, height=entry.height,
                )
                entry.image_id = image.id
                report.images_added += 1
            if entry.tag_indices:
                report.tags_added += label_repo.add_tags(
                    session, entry.image_id, (class_ids[i] for i in entry.tag_indices)
                )
            if entry.mask_png is not None:
                label_repo.put_mask_png(
                    session, entry.image_id, entry.mask_png, is_partial=entry.mask_partial
                )
                report.masks_added += 1
        _confirm_files(studio, plan, created)


def _confirm_files(studio: Studio, plan: _Plan, created: dict[str, int]) -> None:
    """Touch every file the new rows point to, before they commit: a sweep or a failing
    concurrent import then keeps them. A file already gone fails the import (nothing written)."""
    for entry in plan.entries.values():
        if not entry.in_import:
            continue
        mtime = studio.images.touch(entry.relpath)
        if mtime is None and entry.reread is not None:  # set aside by a clean-up: store it again
            stored = studio.images.put(entry.reread(), Path(entry.relpath).suffix[1:])
            if stored.relpath != entry.relpath:
                raise UserError(f"{entry.name} changed on disk while importing; run the import again")
            mtime = stored.mtime_ns
            if stored.created:
                created[entry.relpath] = mtime
        if mtime is None:
            raise UserError(
                f"stored file of {entry.name} vanished while importing (a concurrent clean-up); "
                "nothing was imported, run it again"
            )
        if entry.relpath in created:
            created[entry.relpath] = mtime


def import_dataset(
    studio: Studio,
    path: str | Path | None,
    options: ImportOptions | None = None,
    *,
    project: str,
    staged_upload: bool = False,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ImportReport:
    """Import the images of a folder or .zip into ``project`` (created if missing).

    With ``staged_upload`` (implied for any folder directly under ``<data dir>/uploads/``),
    ``path`` is a folder made by :func:`services.uploads.stage_upload`: its images and zips are
    imported as one, and the folder is deleted when the import ends, however it ends.

    ``options`` (:class:`ImportOptions`): classes come from ``classes_file`` (one name per line;
    with ``has_background`` a "background" class is index 0 and line k is index k, without it
    line k (0-based) is index k) or, failing
    that, from the COCO categories. ``tags_csv`` has columns ``image,tags`` (``;``-separated class
    names); ``masks_dir`` holds single-channel PNGs named like the images (``IGNORE_INDEX`` =
    unknown); ``coco_json`` is a COCO instances file rasterised into masks; ``label_studio_json`` a
    Label Studio JSON export (tags and masks of each task's newest annotation, read with the
    labelling config ``label_config`` or one inferred from the labels it uses; ``path`` may then be
    None when the project holds every task's image). Images already in the
    project (same content) are skipped and keep their masks; tags are added, never duplicated.
    With ``within`` (the web UI's import roots) every file read must resolve under one of those
    folders: a symbolic link inside a root to a file outside it is refused.
    """
    o = options or ImportOptions()
    labels = {"tags_csv": o.tags_csv, "masks_dir": o.masks_dir, "coco_json": o.coco_json,
              "label_studio_json": o.label_studio_json, "label_config": o.label_config}
    if path is not None and (staged_upload or uploads.is_staged(studio, path)):
        with uploads.consumed(studio, path) as staged:
            return _import(studio, staged, project, o.classes_file, o.has_background, labels, o.max_pixels,
                           progress, should_stop, upload=True)
    roots = tuple(Path(root).expanduser().resolve() for root in o.within)
    return _import(studio, None if path is None else Path(path), project, o.classes_file, o.has_background,
                   labels, o.max_pixels, progress, should_stop, upload=False, within=roots)


def _import(
    studio: Studio,
    path: Path | None,
    project: str,
    classes_file: str | Path | None,
    has_background: bool,
    labels: dict[str, str | Path | None],
    max_pixels: int | None,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
    *,
    upload: bool,
    within: tuple[Path, ...] = (),
) -> ImportReport:
    progress = progress or no_progress
    should_stop = should_stop or never_stop
    max_pixels = studio.max_pixels if max_pixels is None else max_pixels
    if max_pixels <= 0:
        raise UserError(f"the pixel limit must be positive, got {max_pixels}")
    project = project.strip()
    if not project or len(project) > 200:
        raise UserError("a project name must have 1 to 200 characters")
    source = path.expanduser() if path is not None else None
    if source is not None and not source.exists():
        raise UserError(f"import path {source} does not exist")
    classes_path = _existing_path(classes_file, "class file", within=within)
    tags_path = _existing_path(labels.get("tags_csv"), "tags CSV", within=within)
    masks_path = _existing_path(labels.get("masks_dir"), "masks folder", is_dir=True, within=within)
    coco_path = _existing_path(labels.get("coco_json"), "COCO file", within=within)
    ls_path = _existing_path(labels.get("label_studio_json"), "Label Studio export", within=within)
    ls_config_path = _existing_path(labels.get("label_config"), "labelling config", within=within)
    if sum(p is not None for p in (masks_path, coco_path, ls_path)) > 1:
        raise UserError("give one of a masks folder, a COCO file or a Label Studio export, not several")
    if source is None and ls_path is None:
        raise UserError("give a folder or .zip of images to import")
    coco = load_coco(coco_path) if coco_path is not None else None
    ls_tasks, ls_config = _load_label_studio(ls_path, ls_config_path) if ls_path is not None else (None, None)
    to_set, classes, has_background = _resolve_classes(studio, project, classes_path, coco, has_background,
                                                       ls_config)
    if not classes and (tags_path or masks_path or coco):
        raise UserError(f"project {project!r} has no classes yet: give a class file")

    report = ImportReport(project=project)
    plan = _Plan(classes=to_set, has_background=has_background)
    created: dict[str, int] = {}
    content_store.sweep_unreferenced_files(studio)
    content_store.sweep_orphan_features(studio)
    try:
        _existing_entries(studio, project, plan)
        with _sources(source, upload, within) as sources:
            progress(0.0, f"reading {len(sources)} images", {})
            _scan_images(studio, sources, plan, report, created, max_pixels, progress, should_stop)
            if tags_path is not None:
                _plan_tags(tags_path, plan, {n: i for i, n in enumerate(classes)})
            if masks_path is not None:
                _plan_masks(masks_path, plan, report, len(classes), progress, within)
            if coco is not None:
                _plan_coco(coco, plan, report, classes, has_background, progress)
            if ls_tasks is not None and ls_config is not None:
                _plan_label_studio(ls_tasks, ls_config, plan, report, classes, progress)
            if should_stop():
                raise Cancelled("import cancelled")
            progress(0.95, "writing to the database", {})
            try:
                with concurrent_changes():
                    _write(studio, plan, report, created)
            except ConcurrentChange as exc:
                raise UserError(
                    f"project {project!r} changed while importing; nothing was imported, run it again"
                ) from exc
    except BaseException:
        content_store.discard_created(studio, created)
        raise
    progress(1.0, report.summary(), {})
    logger.info("import: %s", report.summary())
    return report


@contextlib.contextmanager
def _sources(source: Path | None, upload: bool, within: tuple[Path, ...]) -> Iterator[list[ImageSource]]:
    """The images to read: none without a path (labels for the project's images only)."""
    if source is None:
        yield []
        return
    with (open_upload_sources(source) if upload else open_sources(source, within)) as sources:
        yield sources
