"""Projects screen: create and choose a project, edit its classes and their colours."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.errors import reports_user_errors, shows_user_errors
from app.overlay import palette_html
from app.painter import PaintPalette
from app.tabs import TABS, new_tab, select
from app.wiring import on
from services import labeling, review
from services.context import Studio
from services.errors import UserError
from services.labeling import ProjectInfo
from storage.label_maps import is_hex_color

logger = logging.getLogger(__name__)

DEFAULT_CLASS_LINES = "person\ndog\ncat"


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
    overview = review.project_overview(studio, project)
    counts, model = overview.counts, overview.model
    model_text = f"model v{model.version} ({model.mode})" if model else "no model yet"
    tagged = counts["all"] - counts["untagged"]  # saved with no tags counts: it was looked at
    none = f" ({tagged - counts['tagged']} with no tags)" if tagged > counts["tagged"] else ""
    return (
        f"**{counts['all']}** images · {tagged} tagged{none} · {counts['has_mask']} with masks · "
        f"{counts['has_pseudo_label']} with pseudo-labels · {model_text}"
    )


def load_projects(studio: Studio, current: str | None, tab: str | None = None) -> dict[str, Any]:
    """Fill the project chooser, keeping ``current`` (e.g. the project this browser chose before
    a reload) when it still exists, and reopen tab ``tab`` when it is one."""
    names = project_names(studio)
    value = current if current in names else (names[0] if names else None)
    out: dict[str, Any] = {
        "project": gr.update(choices=names, value=value),
        "summary": project_summary(studio, value),
    }
    if tab in TABS:
        out["tabs"] = select(tab)
    return out


@reports_user_errors("Not created")
def create_project(studio: Studio, name: str, classes_text: str, has_background: bool) -> dict[str, Any]:
    """Create a project and choose it."""
    names, colors = parse_class_lines(classes_text or "")
    info = labeling.create_project(studio, name, names, has_background=has_background, colors=colors)
    logger.info("created project %r with %d classes", info.name, len(info.classes))
    return {
        "project": gr.update(choices=project_names(studio), value=info.name),
        "status": f"Created project **{info.name}** with {len(info.classes)} classes.",
    }


@shows_user_errors
def show_project(studio: Studio, project: str | None) -> dict[str, Any]:
    """The chosen project's class text, swatches and summary line."""
    if not project:
        return {"classes_text": "", "swatches": "", "summary": project_summary(studio, None)}
    info = labeling.get_project(studio, project)
    return {
        "classes_text": format_class_lines(info),
        "swatches": palette_preview(info),
        "summary": project_summary(studio, project),
    }


REMOVED_CHOICES = [  # what the labels of a removed class become (labeling.REMOVED_LABELS)
    ("Refuse while they label images", "refuse"),
    ("Their pixels become unknown", "unknown"),
    ("Their pixels become background", "background"),
]


@shows_user_errors
def save_classes(
    studio: Studio, project: str | None, classes_text: str, removed: str = "refuse"
) -> dict[str, Any]:
    """Rename, reorder, recolour, add or remove classes of the chosen project (each class keeps its
    labels; a removed class's tags go, its pixels become what ``removed`` says)."""
    if not project:
        raise UserError("choose or create a project first")
    names, colors = parse_class_lines(classes_text or "")
    info = labeling.set_classes(studio, project, names, colors,
                                removed_labels=None if removed == "refuse" else removed)
    return {
        "classes_text": format_class_lines(info),
        "swatches": palette_preview(info),
        "status": f"Saved {len(info.classes)} classes.",
    }


# --- layout and wiring -------------------------------------------------------------------------


def build() -> SimpleNamespace:
    with new_tab("projects"):
        with gr.Row():
            with gr.Column():
                gr.Markdown("### New project")
                name = gr.Textbox(label="Name", elem_id="new-project-name")
                classes = gr.Textbox(
                    label="Classes, one per line (optionally with a colour: cat #ff8800)",
                    value=DEFAULT_CLASS_LINES,
                    lines=6,
                    elem_id="new-project-classes",
                )
                background = gr.Checkbox(
                    label="Add a background class (index 0)", value=True, elem_id="new-project-bg"
                )
                create = gr.Button("Create project", variant="primary", elem_id="create-project")
            with gr.Column():
                gr.Markdown("### Classes of the chosen project")
                classes_text = gr.Textbox(
                    label="name #rrggbb, in label-value order (a class keeps its labels whatever its "
                          "line; editing a name renames it)", lines=8, elem_id="classes-text"
                )
                swatches = gr.HTML(elem_id="class-swatches")
                removed = gr.Radio(REMOVED_CHOICES, value="refuse", label="Labels of removed classes",
                                   elem_id="removed-labels")
                save = gr.Button("Save classes", elem_id="save-classes")
        status = gr.Markdown(elem_id="projects-status")
    return SimpleNamespace(**locals())


def wire(studio: Studio, ui: SimpleNamespace) -> None:
    p = ui.projects
    on(
        p.create.click,
        create_project,
        [p.name, p.classes, p.background],
        {"project": ui.project, "status": p.status},
        studio,
    )
    on(
        p.save.click,
        save_classes,
        [ui.project, p.classes_text, p.removed],
        {"classes_text": p.classes_text, "swatches": p.swatches, "status": p.status},
        studio,
    )
