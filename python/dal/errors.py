"""dal's errors, in one place, and how an operating-system error is said in one line.

Every error dal raises about an input, an output, a setting or an argument is a :class:`DalError`
whose message names the file, the option or the argument; the command line prints it on one
line and exits 1, as it does any :class:`OSError` (disk full, read-only folder, name too long),
through :func:`os_error_line`. Anything else is a bug in dal. The subclasses a caller may catch::

    DalError
    ├── ArgumentError    (also ValueError)    an argument of a dal function out of its range
    ├── ConfigError      (also ValueError)    a setting: a key of the YAML config or its flag
    ├── DataError        (also ValueError)    a scan, mask, label or data folder that cannot be used
    ├── DeviceError      (also ValueError)    a device that is not there
    ├── CheckpointError  (also RuntimeError)  a checkpoint that cannot be read or does not fit
    ├── TrainingError    (also RuntimeError)  a run that cannot start
    ├── OutputError      (also RuntimeError)  outputs that cannot be written
    └── FolderInUse                          another process is writing the folder

The ops (``dal.ops``) and metrics (``dal.metrics``) take tensors and, like torch, raise
ValueError, TypeError or IndexError: the same type for the same bad argument on every path.
"""
from __future__ import annotations

import dataclasses
import errno
import os

MESSAGE_LIMIT = 1500  # characters of an error message; a hostile file must not print megabytes


class DalError(Exception):
    """An input, output or setting dal cannot use; the message names it and says what was expected,
    cut to MESSAGE_LIMIT characters (a value quoted from a hostile file may be megabytes)."""

    def __init__(self, message: str = ""):
        super().__init__(clip(message))


class ArgumentError(DalError, ValueError):
    """An argument of a dal function out of its range; the message names it and what was expected."""


class ConfigError(DalError, ValueError):
    """A configuration that cannot be used; the message names the key."""


class DataError(DalError, ValueError):
    """A scan, mask or data folder that dal cannot use; the message names the file and the problem."""


class DeviceError(DalError, ValueError):
    """A device that is not one of auto, cpu, cuda, cuda:N, or that this machine does not have."""


class CheckpointError(DalError, RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


class TrainingError(DalError, RuntimeError):
    """A run that cannot start (bad data, an occupied run folder); nothing was written."""


class OutputError(DalError, RuntimeError):
    """Outputs that cannot be written; the message names the path."""


class FolderInUse(DalError):
    """Another process is writing the folder; the message says which."""


def reject_unknown_keys(data: dict, cls, where: str) -> None:
    """A ConfigError naming ``where`` when ``data`` has keys that are not fields of dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(known)}")


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
