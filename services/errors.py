"""Errors the services raise for bad user input; the CLI prints them as one line, the UI shows them.

:func:`environment_problem` names the other failures a user can fix outside the app (a full disk,
a missing or unreadable file, an unreachable database) in one line, for the CLI's ``error:``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and nothing was changed."""


def environment_problem(exc: BaseException) -> str | None:
    """One line for a failure of the machine rather than of the code (``OSError`` such as ENOSPC,
    a file deleted or unreadable, a database that cannot be written), else None."""
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc) or type(exc).__name__
        where = exc.filename if exc.filename is not None else None
        return f"{what}: {where}" if where is not None else what
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OperationalError):
        return f"the database failed: {str(exc.orig).strip() or type(exc.orig).__name__}"
    return None
