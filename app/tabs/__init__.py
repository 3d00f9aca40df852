"""The page's tabs, one module each (its layout ``build``, its wiring ``wire`` and its handlers).

:data:`TABS` is the one list of tab ids and labels, in page order; every tab is made by :func:`new_tab`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

TABS: dict[str, str] = {
    "projects": "Projects",
    "import": "Import",
    "browse": "Browse",
    "tag": "Tag",
    "paint": "Paint",
    "train": "Train",
    "review": "Review",
    "export": "Export",
}


def new_tab(tab_id: str) -> Any:
    """The ``gr.Tab`` of ``tab_id`` (a key of :data:`TABS`), to be entered with ``with``."""
    return gr.Tab(TABS[tab_id], id=tab_id, elem_id=f"tab-{tab_id}")


def select(tab_id: str) -> Any:
    """The update that shows tab ``tab_id``."""
    return gr.Tabs(selected=tab_id)
