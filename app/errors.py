"""Turning service errors into messages the browser shows."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import gradio as gr

from services.errors import UserError, user_message

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def shows_user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a handler so a :class:`UserError` becomes a ``gr.Error`` (a toast; outputs unchanged),
    and any other failure the line :func:`services.errors.user_message` gives (its traceback in
    the log; a database driver's text never reaches the browser)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            logger.info("%s: %s", fn.__name__, exc)
            raise gr.Error(str(exc), print_exception=False) from exc
        except gr.Error:
            raise
        except Exception as exc:
            logger.exception("%s failed", fn.__name__)
            raise gr.Error(user_message(exc), print_exception=False) from exc

    return wrapper


def reports_user_errors(prefix: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a handler of a save so a :class:`UserError` is a toast and also replaces its view's
    status line (``{"status": "<prefix>: <why>"}``, nothing else changes): no earlier "Saved" stays
    under a refused save."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except UserError as exc:
                logger.info("%s: %s", fn.__name__, exc)
                gr.Warning(str(exc))
                return {"status": f"**{prefix}:** {exc}"}  # type: ignore[return-value]

        return wrapper

    return decorate
