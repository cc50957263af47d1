"""One process at a time in a folder dal writes: an advisory lock (``flock``) on ``FOLDER/.dal-lock``.

The kernel drops a ``flock`` when its process dies, however it dies, so the lock of a killed run
is never in the way: the next process simply takes it. The file holds who took it (pid, host,
start time, command) for the message the next process prints while the holder is alive. The
holder removes the file when it is done; taking a lock checks that the file it locked is still the
one at the path, so a process that opened the file just before its holder removed it cannot hold
a lock no one else sees.

Within one process the lock is re-entrant: ``dal infer`` holds its ``--out`` for the batch, and
each :meth:`DetectionResult.save` in it takes the same lock again.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from dal.errors import FolderInUse

LOCK_NAME = ".dal-lock"
_held: dict[Path, int] = {}  # resolved folder -> how many times this process holds it


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text()[:4096])
        return (f"pid {int(info['pid'])} on {str(info['host'])[:100]} (since {str(info['started'])[:40]}: "
                f"{str(info['command'])[:200]})")
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return "another process"  # it has the lock but has not written who it is yet


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder"):
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block.

    Raises:
        FolderInUse: another living process holds it; the message names the folder (as
            ``what FOLDER``) and the holder.
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = folder / LOCK_NAME
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise FolderInUse(f"{what} {folder}: in use by {_holder(path)}; wait for it to end, or choose "
                              "another folder") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(handle)  # the file was removed by the holder we raced with: lock the new one
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(handle, 0)
        os.write(handle, json.dumps(info).encode())
        _held[key] = 1
        yield
    finally:
        _held.pop(key, None)
        try:
            os.unlink(path)  # before the lock is dropped: see the module docstring
        except FileNotFoundError:
            pass
        os.close(handle)
