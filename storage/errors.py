"""Errors storage raises instead of the driver's: callers outside storage/ never see SQLAlchemy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError


class ConcurrentChange(Exception):
    """A uniqueness rule failed: another writer added the same rows in the meantime."""


class StaleVersion(Exception):
    """A compare-and-set write found another version than the one its caller read: someone else
    saved (or deleted) the same labels in between; nothing was written."""


@contextmanager
def concurrent_changes() -> Iterator[None]:
    """Raise :class:`ConcurrentChange` for an ``IntegrityError`` inside the block (wrap the whole
    ``with Session.begin()`` so that the commit is inside too)."""
    try:
        yield
    except IntegrityError as exc:
        raise ConcurrentChange(str(exc.orig)) from exc
