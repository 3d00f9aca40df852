"""How the tabs wire events to handlers that return ``{view name: update}`` dicts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import gradio as gr


def bind(fn: Any, *args: Any) -> Any:
    """``fn`` with leading arguments bound, keeping its name for Gradio's API page."""
    bound = functools.partial(fn, *args)
    bound.__name__ = fn.__name__
    return bound


def on(
    event: Callable[..., Any],
    fn: Callable[..., Mapping[str, Any]],
    inputs: list[Any] | None,
    outputs: Mapping[str, Any],
    *bound: Any,
    **options: Any,
) -> Any:
    """Wire ``event`` to a handler returning ``{view name: update}``: the names are looked up in
    ``outputs`` (names it lacks are not shown by this event; outputs it does not name are left as
    they are). Errors are toasts, never "Error" badges over the outputs: the progress display is
    hidden unless ``show_progress`` says otherwise (a slow step shows its own loading state)."""

    def run(*args: Any) -> dict[Any, Any]:
        result = fn(*bound, *args)
        return {view: result.get(name, gr.skip()) for name, view in outputs.items()}

    run.__name__ = getattr(fn, "__name__", "handler")
    options.setdefault("show_progress", "hidden")
    return event(run, inputs, list(outputs.values()), **options)
