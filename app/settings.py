"""Settings the app reads from its command line and environment: login, training defaults, the
upload size limit and how long uploads stay in Gradio's cache."""

from __future__ import annotations

import json
import os

from services.errors import UserError
from services.train_options import TrainOptions, train_options

AUTH_ENV = "SLRNET_AUTH"
TRAIN_OPTIONS_ENV = "SLRNET_TRAIN_OPTIONS"


MAX_UPLOAD_ENV = "SLRNET_MAX_UPLOAD_MB"
MAX_UPLOAD_MB = 2048  # one upload (a file or a zip); larger ones are refused before they are stored
UPLOAD_CACHE_ENV = "SLRNET_UPLOAD_CACHE_S"
UPLOAD_CACHE_S = 3600  # uploads (already copied for their import) leave Gradio's cache after this


def _positive_env(name: str, default: int, value: str | None) -> int:
    raw = os.environ.get(name) if value is None else value
    if not raw:
        return default
    try:
        number = int(float(raw))
    except ValueError:
        number = 0
    if number <= 0:
        raise UserError(f"${name} must be a positive number, got {raw!r}")
    return number


def max_upload_bytes(value: str | None = None) -> int:
    """The largest upload the web server accepts: ``$SLRNET_MAX_UPLOAD_MB`` megabytes (default
    :data:`MAX_UPLOAD_MB`)."""
    return _positive_env(MAX_UPLOAD_ENV, MAX_UPLOAD_MB, value) * 2**20


def upload_cache_seconds(value: str | None = None) -> int:
    """How long an upload stays in Gradio's cache: ``$SLRNET_UPLOAD_CACHE_S`` (default
    :data:`UPLOAD_CACHE_S`); the cache is swept every tenth of that."""
    return _positive_env(UPLOAD_CACHE_ENV, UPLOAD_CACHE_S, value)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ``(user, pass)``; None or empty -> no login. The password may hold colons."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth / $SLRNET_AUTH must look like user:password")
    return user, password


def train_defaults(raw: str | None = None) -> TrainOptions:
    """What the Train screen's options start at, from JSON, e.g. ``{"backbone": "tiny",
    "minutes": 0.5, "image_size": 64}`` (the fields of :func:`services.train_options.train_options`);
    ``raw`` defaults to ``$SLRNET_TRAIN_OPTIONS`` (handy for demos and tests on a CPU)."""
    raw = os.environ.get(TRAIN_OPTIONS_ENV, "") if raw is None else raw
    if not raw.strip():
        return TrainOptions()
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"${TRAIN_OPTIONS_ENV} is not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise UserError(f"${TRAIN_OPTIONS_ENV} must be a JSON object")
    unknown = set(values) - {"mode", "backbone", "epochs", "image_size", "device", "minutes"}
    if unknown:
        raise UserError(f"${TRAIN_OPTIONS_ENV}: unknown options {sorted(unknown)}")
    try:  # the rules of every other way to give these options
        return train_options(**values)
    except UserError as exc:
        raise UserError(f"${TRAIN_OPTIONS_ENV}: {exc}") from None
