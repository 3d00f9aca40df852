"""Repository functions for projects and their classes. The caller owns the session (no commits)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.label_maps import class_colors
from storage.models import ClassLabel, ImageTag, Project


def create_project(session: Session, name: str, *, has_background: bool = True) -> Project:
    """Add a project without classes."""
    project = Project(name=name, has_background=has_background)
    session.add(project)
    session.flush()
    return project


def get_project(session: Session, project_id: int) -> Project | None:
    """The project with this id, or None."""
    return session.get(Project, project_id)


def get_project_by_name(session: Session, name: str) -> Project | None:
    """The project with this name, or None."""
    return session.scalars(select(Project).where(Project.name == name)).one_or_none()


def list_projects(session: Session) -> list[Project]:
    """All projects, by name."""
    return list(session.scalars(select(Project).order_by(Project.name)))


def list_classes(session: Session, project_id: int) -> list[ClassLabel]:
    """A project's classes in index order."""
    return list(
        session.scalars(
            select(ClassLabel).where(ClassLabel.project_id == project_id).order_by(ClassLabel.index)
        )
    )


RENAMING_PREFIX = "\x1f"  # starts the names of classes mid-rename: no class name has control characters


def set_classes(
    session: Session,
    project: Project,
    names: Sequence[str],
    colors: Sequence[str | None] | None = None,
    *,
    keep: Sequence[int | None] | None = None,
) -> list[ClassLabel]:
    """Make ``names[i]`` the class with index ``i`` (colour ``colors[i]``, else its own or the
    default colour).

    ``keep[i]`` is the id of the existing class that becomes ``names[i]`` (renamed or moved as
    needed; its tags stay attached), None for a new class; by default an existing class keeps its
    row when its name is listed. Existing classes not kept are deleted with their tags. Label maps
    are not touched: remap them with :func:`storage.labels.remap_label_maps`. With
    ``project.has_background`` index 0 is the background class. The caller validates names
    (unique, non-empty, no control characters) and colours.
    """
    colors = list(colors) if colors is not None else [None] * len(names)
    existing = {c.id: c for c in list_classes(session, project.id)}
    if keep is None:
        by_name = {c.name: c.id for c in existing.values()}
        keep = [by_name.get(name) for name in names]
    kept = {class_id for class_id in keep if class_id is not None}
    for class_id in set(existing) - kept:
        session.delete(existing.pop(class_id))
    session.flush()
    # Move every changing row aside first: a swap of names or indices must not collide midway.
    moving = [existing[c] for i, c in enumerate(keep)
              if c is not None and (existing[c].index != i or existing[c].name != names[i])]
    for row in moving:
        row.index, row.name = -row.id, f"{RENAMING_PREFIX}{row.id}"
    session.flush()
    # a class keeps the colour given or the one it had; the others get the default rule's
    chosen = [colors[i] or (existing[c].color if c is not None else None) for i, c in enumerate(keep)]
    defaults = class_colors(names, chosen, 0 if project.has_background else None)
    result = []
    for index, (name, class_id) in enumerate(zip(names, keep, strict=True)):
        row = existing[class_id] if class_id is not None else None
        if row is None:
            row = ClassLabel(project_id=project.id)
            session.add(row)
        row.index, row.name = index, name
        row.color = defaults[index]
        row.is_background = project.has_background and index == 0
        result.append(row)
    session.flush()
    session.expire(project, ["classes"])
    return result


def classes_with_tags(session: Session, class_ids: Sequence[int]) -> set[int]:
    """Those of ``class_ids`` that some tag (human or model) refers to."""
    if not class_ids:
        return set()
    return set(session.scalars(select(ImageTag.class_id).where(ImageTag.class_id.in_(class_ids)).distinct()))
