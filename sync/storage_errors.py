"""Naming the real SQLite failure behind a failed transaction."""

from __future__ import annotations

import sqlite3


def storage_error_text(exc: BaseException) -> str:
    """The message of the original error.

    On SQLITE_FULL (and some I/O errors) SQLite rolls the transaction back by itself, so the ROLLBACK
    issued by ``Database.transaction()`` fails with "cannot rollback - no transaction is active" and
    hides the cause ("database or disk is full") in ``__context__``.
    """
    cause = exc.__context__
    if "no transaction is active" in str(exc) and isinstance(cause, sqlite3.Error):
        return str(cause)
    return str(exc)
