"""The one base class of dal's errors, and how an operating-system error is said in one line.

Every error dal raises about an input, an output or a setting is a :class:`DalError` whose
message names the file or the option; the command line prints it on one line and exits 1, as
it does any :class:`OSError` (disk full, read-only folder, name too long), through
:func:`os_error_line`.
"""
from __future__ import annotations

import errno
import os

MESSAGE_LIMIT = 1500  # characters of an error message; a hostile file must not print megabytes


class DalError(Exception):
    """An input, output or setting dal cannot use; the message names it and says what was expected,
    cut to MESSAGE_LIMIT characters (a value quoted from a hostile file may be megabytes)."""

    def __init__(self, message: str = ""):
        super().__init__(clip(message))


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def short_repr(value, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters."""
    return clip(repr(value), limit)


def os_error_line(error: OSError, path: str | os.PathLike | None = None) -> str:
    """``PATH: <the errno's meaning> (ENOSPC)``: ``path`` (the file being written, rather than its
    temporary), or the error's own file name (a write to an open file that hits a full disk names
    none)."""
    where = path if path is not None else error.filename
    meaning = os.strerror(error.errno) if error.errno else (error.strerror or str(error) or type(error).__name__)
    code = f" ({errno.errorcode[error.errno]})" if error.errno in errno.errorcode else ""
    line = f"{where}: {meaning}{code}" if where is not None else f"{meaning}{code}"
    if error.filename2 is not None and path is None:
        line = f"{line} (to {error.filename2})"
    return clip(line)
