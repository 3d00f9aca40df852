"""Errors the services raise for bad user input, and the one translation of any failure into the
line a user sees (:func:`user_message`): the CLI prints it, the UI shows it, a failed job stores it.

:func:`environment_problem` names the failures a user can fix outside the app (a full disk, a
missing or unreadable file, an unreachable or busy database) in one line, never a driver's text.
"""

from __future__ import annotations

import errno

from storage.errors import DISK_FULL, ConcurrentChange, StaleVersion, describe_database_error


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and nothing was changed."""


def environment_problem(exc: BaseException) -> str | None:
    """One line for a failure of the machine rather than of the code (``OSError`` such as ENOSPC,
    a file deleted or unreadable, a database that cannot be written), else None."""
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename is not None else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{DISK_FULL}{where}"
        what = exc.strerror or str(exc) or type(exc).__name__
        return f"{what}{where}"
    if isinstance(exc, StaleVersion | ConcurrentChange):
        return "another change to the same data came in at the same moment; nothing was saved: try again"
    return describe_database_error(exc)


def user_message(exc: BaseException) -> str:
    """The line a user sees for ``exc``: a UserError's text, an environment problem's line, else
    ``Type: message`` of a fault in the code (its traceback belongs in the log)."""
    if isinstance(exc, UserError):
        return str(exc)
    problem = environment_problem(exc)
    if problem is not None:
        return problem
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
