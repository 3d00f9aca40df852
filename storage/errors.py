"""Errors storage raises instead of the driver's: callers outside storage/ never see SQLAlchemy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

DISK_FULL = "the disk is full: free some space, then try again"


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


def describe_database_error(exc: BaseException) -> str | None:
    """One line for a user about a database failure, never the driver's text or SQL (that goes to
    the log); None when ``exc`` is not a database error. The one translation of driver errors."""
    if not isinstance(exc, SQLAlchemyError):
        return None
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    text = str(orig or exc).lower()
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if "disk is full" in text or "no space left" in text or sqlstate == "53100":
        return f"{DISK_FULL} (the database could not write)"
    if isinstance(exc, IntegrityError):
        return "another change to the same data came in at the same moment; nothing was saved: try again"
    if isinstance(exc, DataError):
        return "the database refused a value (text or number it cannot store); nothing was saved"
    if "locked" in text or "busy" in text or sqlstate in ("55P03", "40P01", "40001"):
        return "the database is busy (another process held it too long); nothing was saved: try again"
    if "readonly" in text or "read-only" in text:
        return "the database cannot be written (read-only file or server)"
    if isinstance(exc, OperationalError) and any(
            w in text for w in ("connect", "connection", "server closed", "terminat", "unable to open")):
        return "the database cannot be reached: check that it runs and the database URL"
    return f"the database failed ({type(orig or exc).__name__}); the details are in the server log"
