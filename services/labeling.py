"""Labelling services for the UI and CLI: projects and classes, image tags, masks and their versions.

Each service runs in its own transaction and returns plain frozen records (never ORM rows).
Bad input raises :class:`UserError` and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from services.context import Studio
from services.errors import UserError
from services.lookups import image_in_project, resolve_image, resolve_project
from slrnet.config import IGNORE_INDEX
from storage import images as image_repo
from storage import labels as label_repo
from storage import projects as project_repo
from storage.errors import StaleVersion
from storage.label_maps import decode_label_png, is_hex_color
from storage.models import (
    TAG_SOURCES,
    Image,
    Mask,
    Project,
    utcnow,
)

logger = logging.getLogger(__name__)

BACKGROUND = "background"
MAX_CLASSES = IGNORE_INDEX  # indices 0..254; 255 is the ignore value


@dataclass(frozen=True)
class ClassInfo:
    """A class of a project; ``index`` is its value in label maps, ``id`` its row (for tags)."""

    id: int
    index: int
    name: str
    color: str
    is_background: bool


@dataclass(frozen=True)
class ProjectInfo:
    """A project and its classes in index order."""

    id: int
    name: str
    has_background: bool
    classes: tuple[ClassInfo, ...]

    def class_index(self) -> dict[str, int]:
        """Class name -> label value."""
        return {c.name: c.index for c in self.classes}


@dataclass(frozen=True)
class ImageInfo:
    """An image; ``width``/``height`` are of the upright (EXIF-oriented) picture."""

    id: int
    project_id: int
    name: str
    path: str  # relative to the data dir; load with studio.images.read_rgb(path)
    width: int
    height: int
    sha256: str


def project_info(session: Session, project: Project) -> ProjectInfo:
    """The record of a project row and its classes."""
    classes = tuple(
        ClassInfo(id=c.id, index=c.index, name=c.name, color=c.color, is_background=c.is_background)
        for c in project_repo.list_classes(session, project.id)
    )
    return ProjectInfo(
        id=project.id, name=project.name, has_background=project.has_background, classes=classes
    )


def image_info(image: Image) -> ImageInfo:
    """The record of an image row."""
    return ImageInfo(
        id=image.id,
        project_id=image.project_id,
        name=image.name,
        path=image.path,
        width=image.width,
        height=image.height,
        sha256=image.sha256,
    )


def full_class_list(class_names: Sequence[str], has_background: bool) -> list[str]:
    """Class names in label-value order, validated.

    With ``has_background`` index 0 is "background": kept if ``class_names`` starts with it,
    otherwise put in front (so ``class_names[k-1]`` gets index ``k``). Without, ``class_names[k]``
    gets index ``k``.
    """
    names = [n.strip() for n in class_names]
    if any(not n for n in names):
        raise UserError("class names must not be empty")
    if has_background and (not names or names[0].lower() != BACKGROUND):
        names.insert(0, BACKGROUND)
    seen: set[str] = set()
    for n in names:
        if any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in n):
            raise UserError(f"class name {n[:40]!r} has control characters")
        if n in seen:
            raise UserError(f"class {n!r} is listed twice")
        if len(n) > 200:
            raise UserError(f"class name too long: {n[:40]!r}...")
        seen.add(n)
    if len(names) > MAX_CLASSES:
        raise UserError(f"at most {MAX_CLASSES} classes are supported, got {len(names)}")
    return names


def label_map_problem(label_map: np.ndarray, num_classes: int, shape: tuple[int, int]) -> str | None:
    """Why ``label_map`` is not a valid mask of an image of ``shape`` (H, W), or None if it is."""
    if label_map.ndim != 2:
        return f"a mask must be single-channel, got shape {label_map.shape}"
    if label_map.shape != shape:
        h, w = label_map.shape
        return f"mask is {w}x{h} but its image is {shape[1]}x{shape[0]}"
    if not np.issubdtype(label_map.dtype, np.integer):
        return f"mask values must be integers, got {label_map.dtype}"
    values = np.unique(label_map)
    bad = values[(values != IGNORE_INDEX) & ((values < 0) | (values >= num_classes))]
    if bad.size:
        return (
            f"mask values {bad[:5].tolist()} are not class indices "
            f"(the project has {num_classes} classes, 0..{num_classes - 1}; {IGNORE_INDEX} = unknown)"
        )
    return None


def _check_colors(colors: Sequence[str | None] | None, count: int) -> list[str | None] | None:
    if colors is None:
        return None
    if len(colors) != count:
        raise UserError(f"got {len(colors)} colours for {count} classes")
    for c in colors:
        if c is not None and not is_hex_color(c):
            raise UserError(f"colour {c!r} is not #rrggbb")
    return list(colors)


def _check_project_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise UserError("a project name must have 1 to 200 characters")
    return name


def create_project(
    studio: Studio,
    name: str,
    class_names: Sequence[str],
    has_background: bool = True,
    colors: Sequence[str | None] | None = None,
) -> ProjectInfo:
    """Create a project; see :func:`full_class_list` for how ``class_names`` become indices.

    ``colors`` (``#rrggbb`` or None for the default) go with ``class_names`` as given.
    """
    name = _check_project_name(name)
    names = full_class_list(class_names, has_background)
    colors = _check_colors(colors, len(class_names))
    if colors is not None and len(names) > len(class_names):
        colors = [None, *colors]
    with studio.Session.begin() as session:
        if project_repo.get_project_by_name(session, name) is not None:
            raise UserError(f"project {name!r} already exists")
        project = project_repo.create_project(session, name, has_background=has_background)
        project_repo.set_classes(session, project, names, colors)
        return project_info(session, project)


def list_projects(studio: Studio) -> list[ProjectInfo]:
    """All projects, by name."""
    with studio.Session.begin() as session:
        return [project_info(session, p) for p in project_repo.list_projects(session)]


def get_project(studio: Studio, project: int | str) -> ProjectInfo:
    """A project by id or name."""
    with studio.Session.begin() as session:
        return project_info(session, resolve_project(session, project))


REMOVED_LABELS = ("unknown", "background")  # what the pixels of a removed class become


@dataclass(frozen=True)
class ClassEdit:
    """How a new class list relates to the old one: which old class each new line is (``keep``,
    class ids, None = a new class), and which classes are renamed or removed."""

    keep: tuple[int | None, ...]
    renamed: tuple[tuple[str, str], ...]  # (old name, new name)
    removed: tuple[ClassInfo, ...]


def plan_class_edit(
    old: Sequence[ClassInfo], new_names: Sequence[str], renames: Mapping[str, str] | None = None
) -> ClassEdit:
    """Match the new class list to the old classes: by name, plus ``renames`` (old -> new name).

    Without ``renames``, a list as long as the old one whose new names replace as many vanished
    ones is read as those lines edited in place: the k-th vanished class (in the old order) is
    renamed to the k-th new name. Any other vanished class is removed."""
    by_name = {c.name: c for c in old}
    renames = dict(renames or {})
    if len(set(renames.values())) < len(renames):
        raise UserError("two classes cannot be renamed to the same name")
    for before, after in renames.items():
        if before not in by_name:
            raise UserError(f"cannot rename {before!r}: the project has no such class")
        if after not in new_names:
            raise UserError(f"{before!r} is renamed to {after!r}, which the new class list lacks")
    if not renames and len(new_names) == len(old):
        vanished = [c.name for c in old if c.name not in new_names]
        appeared = [n for n in new_names if n not in by_name]
        if vanished and len(vanished) == len(appeared):
            renames = dict(zip(vanished, appeared, strict=True))
    target = {after: by_name[before] for before, after in renames.items()}
    keep = tuple(
        target[n].id if n in target else by_name[n].id if n in by_name and n not in renames else None
        for n in new_names
    )
    kept = {k for k in keep if k is not None}
    removed = tuple(c for c in old if c.id not in kept)
    renamed = tuple((before, after) for before, after in renames.items() if before != after)
    return ClassEdit(keep, renamed, removed)


def set_classes(
    studio: Studio,
    project: int | str,
    class_names: Sequence[str],
    colors: Sequence[str | None] | None = None,
    *,
    renames: Mapping[str, str] | None = None,
    removed_labels: str | None = None,
) -> ProjectInfo:
    """Rename, reorder, recolour, add or remove classes (``class_names`` as in :func:`create_project`).

    A class is who it was whatever its line or name (see :func:`plan_class_edit`): its tags stay
    attached, and when indices move every mask and pseudo-label is rewritten so each pixel keeps
    its class. Removing a class that labels use needs ``removed_labels``: its tags are deleted and
    its pixels become unknown (``"unknown"``) or background (``"background"``); without it the
    edit is refused and nothing changes. A model trained before the edit cannot predict after it.
    """
    if removed_labels is not None and removed_labels not in REMOVED_LABELS:
        raise UserError(f"a removed class's labels become one of {REMOVED_LABELS}, got {removed_labels!r}")
    try:
        with studio.Session.begin() as session:
            row = resolve_project(session, project)
            names = full_class_list(class_names, row.has_background)
            colors = _check_colors(colors, len(class_names))
            if colors is not None and len(names) > len(class_names):
                colors = [None, *colors]
            old = project_info(session, row).classes
            edit = plan_class_edit(old, names, renames)
            lut = _class_lut(old, edit, removed_labels, row.has_background)
            if edit.removed and removed_labels is None:
                used = project_repo.classes_with_tags(session, [c.id for c in edit.removed])
                if label_repo.label_maps_use(session, row.id, {c.index for c in edit.removed}):
                    used = {c.id for c in edit.removed}
                if used:
                    raise UserError(_removal_question(old, used))
            project_repo.set_classes(session, row, names, colors, keep=edit.keep)
            if not np.array_equal(lut, np.arange(256)):
                label_repo.remap_label_maps(session, row.id, lut)
            for before, after in edit.renamed:
                logger.info("project %r: class %r renamed to %r", row.name, before, after)
            return project_info(session, row)
    except StaleVersion as exc:
        raise UserError("a mask of the project was saved while the classes changed; nothing "
                        "was changed: save the classes again") from exc


def _class_lut(old: Sequence[ClassInfo], edit: ClassEdit, removed_labels: str | None,
               has_background: bool) -> np.ndarray:
    """``lut[old index] = new index`` for label maps; removed classes to unknown or background."""
    if removed_labels == "background" and not has_background:
        raise UserError("this project has no background class: the removed classes' pixels can only "
                        "become unknown")
    lut = np.arange(256, dtype=np.uint8)
    new_index = {class_id: i for i, class_id in enumerate(edit.keep) if class_id is not None}
    for c in old:
        lut[c.index] = new_index.get(c.id, 0 if removed_labels == "background" else IGNORE_INDEX)
    return lut


def _removal_question(old: Sequence[ClassInfo], used: set[int]) -> str:
    names = ", ".join(repr(c.name) for c in old if c.id in used)
    return (f"class(es) {names} still label images: say what their labels become when removed "
            f"(their tags are deleted; their pixels become {' or '.join(REMOVED_LABELS)})")


TAGS_CHANGED = (
    "the tags of {name} changed since you opened it (saved from another tab or by someone else); "
    "your tags were not saved: reopen the image to see the stored tags and tag it again"
)


def set_tags(
    session: Session,
    image: Image,
    class_ids: Sequence[int],
    source: str = "human",
    *,
    expected_version: int | None = None,
) -> list[int]:
    """Replace ``image``'s tags from ``source`` with these class ids (checked); returns them sorted.
    Human tags also mark the image checked, so one saved with no tags is no longer "untagged".

    With ``expected_version`` (the ``tags_version`` the user's view was read at) the save is refused
    with a UserError when another save came in between (compare-and-set: of two concurrent saves
    from one version exactly one wins)."""
    if source not in TAG_SOURCES:
        raise UserError(f"tag source must be one of {TAG_SOURCES}, got {source!r}")
    valid = {c.id for c in project_repo.list_classes(session, image.project_id)}
    unknown = sorted(set(class_ids) - valid)
    if unknown:
        raise UserError(f"class ids {unknown} are not classes of this image's project")
    name = image.name
    try:
        label_repo.set_tags(session, image.id, class_ids, source, expected_version=expected_version)
    except StaleVersion as exc:
        raise UserError(TAGS_CHANGED.format(name=repr(name))) from exc
    if source == "human":
        image.tags_checked_at = utcnow()
    return sorted(set(class_ids))


def set_image_tags(
    studio: Studio,
    image_id: int,
    class_ids: Sequence[int],
    source: str = "human",
    *,
    expected_version: int | None = None,
) -> list[int]:
    """Replace the image's tags from ``source`` with these class ids; returns them sorted. With
    ``expected_version`` (from :func:`get_tags_version` or ``TagView.tags_version``) refused when
    the tags were saved since."""
    with studio.Session.begin() as session:
        return set_tags(session, resolve_image(session, image_id), class_ids, source,
                        expected_version=expected_version)


def get_tags_version(studio: Studio, image_id: int) -> int:
    """The version of the image's human tags, to pass as ``expected_version`` with its next save."""
    with studio.Session.begin() as session:
        return label_repo.tags_version(session, resolve_image(session, image_id).id)


def get_image_tags(studio: Studio, image_id: int, source: str = "human") -> list[int]:
    """Class ids of the image's tags from ``source``."""
    with studio.Session.begin() as session:
        return label_repo.get_tag_class_ids(session, resolve_image(session, image_id).id, source)


MASK_CHANGED = (
    "the mask of {name} changed since you opened it (saved from another tab or by someone else); "
    "your painting was not saved: reopen the image to see the stored mask and paint again"
)


def mask_version(mask: Mask | None) -> str:
    """A token that changes whenever the image's mask is saved, replaced or deleted ("" without one)."""
    mask_id, version = label_repo.mask_version(mask)
    return "" if mask is None else f"{mask_id}.{version}"


def _parse_mask_version(token: str) -> label_repo.MaskVersion:
    if token == "":
        return label_repo.NO_MASK
    mask_id, _, version = token.partition(".")
    if not (mask_id.isdigit() and version.isdigit()):
        return (-1, -1)  # from an older release: matches no mask, so the save is refused
    return int(mask_id), int(version)


@dataclass(frozen=True)
class SavedMask:
    is_partial: bool
    version: str  # the mask's new version (pass it with the next save of the same painting)
    labelled: float  # fraction of the pixels with a class


@dataclass(frozen=True)
class EditStart:
    """What the painter needs to open an image, read in one transaction."""

    image: ImageInfo
    project: ProjectInfo
    start: str  # the start actually used: "mask", "pseudo" or "empty"
    labels: np.ndarray | None  # (H, W) uint8 starting labels, None = all unknown
    version: str  # mask_version when it was read


EDIT_STARTS = ("mask", "pseudo", "empty")


def edit_start(studio: Studio, image_id: int, start: str = "mask") -> EditStart:
    """The image, its project and the labels painting starts from: its mask (none: nothing), the
    current model's pseudo-label (UserError without one) or nothing; with the mask's version."""
    if start not in EDIT_STARTS:
        raise UserError(f"painting starts from one of {EDIT_STARTS}, got {start!r}")
    with studio.Session.begin() as session:
        image = resolve_image(session, image_id)
        project = project_info(session, resolve_project(session, image.project_id))
        mask = label_repo.get_mask(session, image.id)
        labels = None
        if start == "mask":
            if mask is None:
                start = "empty"
            else:
                labels = decode_label_png(mask.png)
        elif start == "pseudo":
            row = label_repo.current_pseudo_label(session, image.project_id, image.id)
            if row is None:
                raise UserError(f"{image.name!r} has no pseudo-label yet; train a model first")
            labels = decode_label_png(row.png)
        return EditStart(image_info(image), project, start, labels, mask_version(mask))


def _checked_label_map(session: Session, image: Image, mask: np.ndarray) -> np.ndarray:
    num_classes = len(project_repo.list_classes(session, image.project_id))
    problem = label_map_problem(np.asarray(mask), num_classes, (image.height, image.width))
    if problem:
        raise UserError(problem)
    label_map = np.asarray(mask).astype(np.uint8)
    if (label_map == IGNORE_INDEX).all():
        raise UserError("the mask labels no pixel; use Clear mask to delete it instead")
    return label_map


def _expected(expected_version: str | None) -> label_repo.MaskVersion | None:
    return None if expected_version is None else _parse_mask_version(expected_version)


def save_mask(
    studio: Studio,
    image_id: int,
    mask: np.ndarray,
    *,
    source: str = "human",
    expected_version: str | None = None,
) -> SavedMask:
    """Save the image's full-resolution mask (``IGNORE_INDEX`` = unknown).

    With ``expected_version`` (the :func:`mask_version` the painting started from) the save is
    refused with a UserError when the stored mask changed meanwhile, e.g. from another tab: the
    write is compare-and-set, so of two saves from one version exactly one wins.
    """
    with studio.Session.begin() as session:
        image = resolve_image(session, image_id)
        label_map = _checked_label_map(session, image, mask)
        name = image.name  # a failed write expires the row
        try:
            row = label_repo.put_mask(session, image.id, label_map, source=source,
                                      expected=_expected(expected_version))
        except StaleVersion as exc:
            raise UserError(MASK_CHANGED.format(name=repr(name))) from exc
        labelled = float((label_map != IGNORE_INDEX).mean())
        return SavedMask(row.is_partial, mask_version(row), labelled)


def get_mask(studio: Studio, image_id: int) -> np.ndarray | None:
    """The image's mask (``(H, W) uint8``), or None."""
    with studio.Session.begin() as session:
        return label_repo.get_mask_array(session, resolve_image(session, image_id).id)


def delete_mask(studio: Studio, image_id: int, *, expected_version: str | None = None) -> bool:
    """Delete the image's mask (the Paint tab's "Clear mask"); True when there was one. With
    ``expected_version``, refused when the mask changed since that version was read."""
    with studio.Session.begin() as session:
        image = resolve_image(session, image_id)
        image_id, name = image.id, image.name
        try:
            return label_repo.delete_mask(session, image_id, expected=_expected(expected_version))
        except StaleVersion as exc:
            raise UserError(MASK_CHANGED.format(name=repr(name))) from exc


def get_image(studio: Studio, image_id: int) -> ImageInfo:
    """An image by id."""
    with studio.Session.begin() as session:
        return image_info(resolve_image(session, image_id))


def is_project_image(studio: Studio, project: int | str, image_id: int | None) -> bool:
    """Whether ``image_id`` names one of the project's images (False for None or a deleted image)."""
    if image_id is None:
        return False
    with studio.Session.begin() as session:
        try:
            return image_in_project(session, resolve_project(session, project).id, image_id) is not None
        except UserError:
            return False


def image_counts(studio: Studio, project: int | str) -> dict[str, int]:
    """How many of the project's images match each filter (keys: ``ImageFilter`` values)."""
    with studio.Session.begin() as session:
        return image_repo.image_counts(session, resolve_project(session, project).id)
