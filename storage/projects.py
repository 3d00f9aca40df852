"""Repository functions for projects and their classes. The caller owns the session (no commits)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from storage.label_maps import default_color
from storage.models import ClassLabel, Image, ImageTag, Mask, Project, PseudoLabel, TrainingRun


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


def set_classes(
    session: Session, project: Project, names: Sequence[str], colors: Sequence[str | None] | None = None
) -> list[ClassLabel]:
    """Make ``names[i]`` the class with index ``i`` (colour ``colors[i]`` or the default colour).

    Rows of existing indices are updated in place (their tags stay attached), new indices are added
    and indices beyond ``len(names)`` are deleted. With ``project.has_background`` index 0 is the
    background class. The caller validates names (unique, non-empty) and colours.
    """
    colors = list(colors) if colors is not None else [None] * len(names)
    existing = {c.index: c for c in list_classes(session, project.id)}
    for index in sorted(i for i in existing if i >= len(names)):
        session.delete(existing.pop(index))
    # Rename through unique placeholders first: swapping two names must not collide midway.
    renamed = [c for c in existing.values() if c.name != names[c.index]]
    for c in renamed:
        c.name = f"\x00renaming-{c.index}"
    session.flush()
    result = []
    for index, name in enumerate(names):
        row = existing.get(index)
        if row is None:
            row = ClassLabel(project_id=project.id, index=index)
            session.add(row)
        row.name = name
        row.color = colors[index] or (row.color if row.color else default_color(index))
        row.is_background = project.has_background and index == 0
        result.append(row)
    session.flush()
    session.expire(project, ["classes"])
    return result


def max_used_class_index(session: Session, project_id: int) -> int:
    """The largest class index that tags refer to, or -1; masks/pseudo-labels count as using all."""
    labelled = session.scalar(
        select(
            exists().where(Mask.image_id == Image.id, Image.project_id == project_id)
            | exists().where(PseudoLabel.run_id == TrainingRun.id, TrainingRun.project_id == project_id)
        )
    )
    if labelled:
        return len(list_classes(session, project_id)) - 1
    used = session.scalars(
        select(ClassLabel.index)
        .join(ImageTag, ImageTag.class_id == ClassLabel.id)
        .where(ClassLabel.project_id == project_id)
        .order_by(ClassLabel.index.desc())
        .limit(1)
    ).first()
    return -1 if used is None else used
