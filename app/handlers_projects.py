"""Projects screen: create and choose a project, edit its classes and their colours."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from app.errors import shows_user_errors
from app.overlay import palette_html
from app.paint import PaintPalette
from services import labeling, review
from services.context import Studio
from services.errors import UserError
from services.labeling import ProjectInfo
from storage.label_maps import is_hex_color

logger = logging.getLogger(__name__)


def parse_class_lines(text: str) -> tuple[list[str], list[str | None]]:
    """Lines ``name`` or ``name #rrggbb`` -> ``(names, colours)``; blank lines are skipped."""
    names: list[str] = []
    colors: list[str | None] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        name, _, last = line.rpartition(" ")
        if name and last.startswith("#"):
            if not is_hex_color(last):
                raise UserError(f"{last!r} is not a colour like #ff8800 (line {line!r})")
            names.append(name.strip())
            colors.append(last.lower())
        else:
            names.append(line)
            colors.append(None)
    if not names:
        raise UserError("give at least one class, one per line")
    return names, colors


def format_class_lines(project: ProjectInfo) -> str:
    """The editable text of a project's classes, one ``name #rrggbb`` per line in index order."""
    return "\n".join(f"{c.name} {c.color}" for c in project.classes)


def class_palette(project: ProjectInfo) -> PaintPalette:
    """The paint palette of a project (raises UserError when colours are too alike to paint)."""
    try:
        return PaintPalette.from_classes([(c.index, c.name, c.color) for c in project.classes])
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def palette_preview(project: ProjectInfo) -> str:
    """The class swatches of a project, with the "unknown" brush, as HTML."""
    try:
        palette = class_palette(project)
    except UserError as exc:
        return palette_html([(c.name, c.color) for c in project.classes]) + f"<p>⚠ {exc}</p>"
    return palette_html([(b.name, b.color) for b in palette.brushes])


def project_names(studio: Studio) -> list[str]:
    return [p.name for p in labeling.list_projects(studio)]


def project_summary(studio: Studio, project: str | None) -> str:
    """One line: image and label counts, and the current model version."""
    if not project:
        return "No project yet: create one on the **Projects** tab."
    counts = labeling.image_counts(studio, project)
    model = review.current_model(studio, project)
    model_text = f"model v{model.version} ({model.mode})" if model else "no model yet"
    return (
        f"**{counts['all']}** images · {counts['tagged']} tagged · {counts['has_mask']} with masks · "
        f"{counts['has_pseudo_label']} with pseudo-labels · {model_text}"
    )


@shows_user_errors
def load_projects(studio: Studio, current: str | None) -> tuple[Any, str]:
    """Fill the project chooser (keeping ``current`` when it still exists) and the summary line."""
    names = project_names(studio)
    value = current if current in names else (names[0] if names else None)
    return gr.update(choices=names, value=value), project_summary(studio, value)


@shows_user_errors
def create_project(studio: Studio, name: str, classes_text: str, has_background: bool) -> tuple[Any, str]:
    """Create a project and choose it; returns the chooser update and a status line."""
    names, colors = parse_class_lines(classes_text or "")
    info = labeling.create_project(studio, name, names, has_background=has_background, colors=colors)
    logger.info("created project %r with %d classes", info.name, len(info.classes))
    return (
        gr.update(choices=project_names(studio), value=info.name),
        f"Created project **{info.name}** with {len(info.classes)} classes.",
    )


@shows_user_errors
def show_project(studio: Studio, project: str | None) -> tuple[str, str, str]:
    """The chosen project's class text, swatches and summary line."""
    if not project:
        return "", "", project_summary(studio, None)
    info = labeling.get_project(studio, project)
    return format_class_lines(info), palette_preview(info), project_summary(studio, project)


@shows_user_errors
def save_classes(studio: Studio, project: str | None, classes_text: str) -> tuple[str, str, str]:
    """Rename, recolour or add classes of the chosen project."""
    if not project:
        raise UserError("choose or create a project first")
    names, colors = parse_class_lines(classes_text or "")
    info = labeling.set_classes(studio, project, names, colors)
    return format_class_lines(info), palette_preview(info), f"Saved {len(info.classes)} classes."
