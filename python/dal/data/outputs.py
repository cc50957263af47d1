"""The one way dal writes into an output folder: only files it owns, each group all or nothing.

Every command that writes (``synth``, ``train``, ``infer``, ``evaluate``) opens its folder with
:func:`output_folder`, which

- locks it (:mod:`dal.data.locks`): a second process gets one line saying who holds it;
- keeps a journal of the files dal wrote there, ``FOLDER/.dal-outputs.jsonl``. A name that exists
  and is not in it (a scan, a BIDS sidecar, a hand-made label, the user's own ``config.yaml``)
  is never replaced; a name in it is replaced only with ``overwrite`` (``--overwrite``);
- writes a group of files (the outputs of one scan, one synthetic case, the reports of an
  evaluation) by :meth:`OutputFolder.write`: every file to a temporary name, the group recorded as
  pending in the journal, all renamed, the group recorded as done. A group still pending when the
  folder is next opened was cut short by a kill: its files are removed, so a group is there whole
  or not at all;
- removes the temporaries (``.dal-tmp-*``) a killed process left behind.

Temporary names are short (``.dal-tmp-PID-XXXXXXXX`` and the suffix), so an output whose name is
as long as the file system allows can still be written.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from dal.data.locks import folder_lock
from dal.errors import OutputError, clip, os_error_line

JOURNAL_NAME = ".dal-outputs.jsonl"
TEMPORARY_PREFIX = ".dal-tmp-"
_open: dict[Path, "OutputFolder"] = {}


def default_mode(directory: bool = False) -> int:
    """The mode a plain open/mkdir would give (0o666/0o777 less the umask): mkstemp and mkdtemp
    make private files, which the renamed outputs should not stay."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def temporary_path(folder: Path, suffix: str = "", directory: bool = False) -> Path:
    """A new hidden temporary file (or folder) in ``folder`` with the mode of a plain file; the
    suffix is kept (nibabel compresses by the name)."""
    prefix = f"{TEMPORARY_PREFIX}{os.getpid()}-"
    if directory:
        path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=folder))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        os.close(handle)
        path = Path(name)
    path.chmod(default_mode(directory))
    return path


def suffix_of(name: str) -> str:
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` on a temporary file beside ``path``, then renamed to ``path``: a reader, or a
    process killed mid-write, sees the old file or the new one, never half of one. An OSError
    (disk full, read-only folder) becomes an OutputError naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path.parent, suffix_of(path.name))
        write(tmp)
        tmp.chmod(default_mode())
        os.replace(tmp, path)
    except OSError as error:
        raise OutputError(f"output {os_error_line(error, path)}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def append_line(path: Path, line: str) -> None:
    """Append one line to a log (``metrics.jsonl``); an OSError becomes an OutputError naming it."""
    try:
        with open(path, "a") as stream:
            stream.write(line.rstrip("\n") + "\n")
    except OSError as error:
        raise OutputError(f"output {os_error_line(error, path)}") from None


def remove_dead_temporaries(folder: Path) -> None:
    """Remove the temporaries of processes no longer running (for folders no lock guards, such as
    the synthetic cache; under a lock every temporary is stale)."""
    for path in folder.glob(f"{TEMPORARY_PREFIX}*"):
        try:
            pid = int(path.name[len(TEMPORARY_PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            _remove(path)
        except (ValueError, PermissionError, OSError):
            pass  # not ours to judge, or a living process of another user


class OutputFolder:
    """An output folder held by this process (see the module docstring); make it with
    :func:`output_folder`."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what
        self.journal = path / JOURNAL_NAME
        self.groups: dict[str, list[str]] = {}   # group -> its files (names in the folder)
        self.owners: dict[str, str] = {}         # file -> its group
        self.pending: set[str] = set()
        try:
            name_max = os.pathconf(path, "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = 255
        self.name_max = name_max

    # -------------------------------------------------------------------- journal

    def _read(self) -> None:
        try:
            lines = self.journal.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
                if "write" in entry:
                    names = [str(n) for n in entry["files"]]
                    if not all(_plain_name(n) for n in names):
                        continue  # not a journal dal wrote: never act on a path outside the folder
                    self._set(str(entry["write"]), names)
                    self.pending.add(str(entry["write"]))
                elif "done" in entry:
                    self.pending.discard(str(entry["done"]))
            except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
                continue  # a line cut short by a kill: its group stays pending, and is removed

    def _set(self, group: str, names: list[str] | None) -> None:
        """Record that ``group`` holds ``names`` (None: nothing any more)."""
        for name in self.groups.pop(group, []):
            self.owners.pop(name, None)
        if names is not None:
            self.groups[group] = list(names)
            self.owners.update(dict.fromkeys(names, group))

    def _append(self, *entries: dict) -> None:
        text = "".join(json.dumps(e) + "\n" for e in entries)
        with self._io(self.journal):
            with open(self.journal, "a") as stream:
                stream.write(text)

    def _compact(self) -> None:
        entries = [e for group, files in self.groups.items() for e in ({"write": group, "files": files},
                                                                        {"done": group})]
        if not entries:
            with self._io(self.journal):
                self.journal.unlink(missing_ok=True)  # a folder dal wrote nothing into keeps no trace of it
            return
        tmp = temporary_path(self.path, ".jsonl")
        with self._io(self.journal):
            try:
                tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
                os.replace(tmp, self.journal)
            finally:
                tmp.unlink(missing_ok=True)

    def _recover(self) -> None:
        for path in self.path.glob(f"{TEMPORARY_PREFIX}*"):
            with self._io(path):
                _remove(path)
        self._read()
        for group in sorted(self.pending):
            for name in self.groups[group]:
                with self._io(self.path / name):
                    if os.path.lexists(self.path / name):
                        _remove(self.path / name)
            self._set(group, None)
        self.pending.clear()
        self._compact()

    @contextmanager
    def _io(self, path: Path):
        try:
            yield
        except OSError as error:
            raise OutputError(f"output {os_error_line(error, path)}") from None

    # -------------------------------------------------------------------- ownership

    def owner(self, name: str) -> str | None:
        """The group that wrote ``name``, or None if dal did not write it here."""
        return self.owners.get(name)

    def owned(self) -> list[str]:
        """The names dal wrote here that are still there."""
        return [n for files in self.groups.values() for n in files if os.path.lexists(self.path / n)]

    def check(self, names: Iterable[str], *, overwrite: bool = False, inputs: Iterable = ()) -> None:
        """Raise OutputError, naming the file, unless every name can be written: not too long,
        not one of ``inputs``, absent, or written by dal here before and ``overwrite`` given."""
        protected = {Path(p).resolve() for p in inputs}
        for name in names:
            path = self.path / name
            if len(name.encode()) > self.name_max:
                raise OutputError(f"output {clip(str(path), 300)}: a name of {len(name.encode())} bytes; this file "
                                  f"system allows {self.name_max}: rename the input")
            if path.resolve() in protected:
                raise OutputError(f"output {path}: would overwrite an input file; choose another --out")
            if not os.path.lexists(path):
                continue
            if self.owner(name) is None:
                raise OutputError(f"output {path}: a file dal did not write is already there (an input, a sidecar, "
                                  "a file of your own?); dal never replaces it: choose another --out, or move it")
            if not overwrite:
                raise OutputError(f"output {path}: already written by an earlier run; give --overwrite to replace it")

    # -------------------------------------------------------------------- writing

    def claim(self, group: str, names: list[str], *, inputs: Iterable = ()) -> None:
        """Own ``names`` for files written later, each by its own atomic writer (a run folder's
        checkpoints and logs); any of them already there must be dal's."""
        self.check(names, overwrite=True, inputs=inputs)
        self.adopt(group, names)

    def adopt(self, group: str, names: Iterable[str]) -> None:
        """Own ``names`` without checking them: files a dal from before the journal wrote, known
        by their content (a run folder's dal checkpoint)."""
        self._set(group, list(names))
        self._append({"write": group, "files": list(names)}, {"done": group})

    def write(self, group: str, writers: dict[str, Callable[[Path], object]], *, overwrite: bool = False,
              inputs: Iterable = ()) -> dict[str, Path]:
        """Write a group of files all or nothing: ``writers`` maps each file name to a function
        that writes that file at the temporary path it is given (a name ending in ``/``: a folder,
        which the function fills). Files of an earlier write of ``group`` that this one does not
        make are removed. Returns name -> final path."""
        names = [n.rstrip("/") for n in writers]
        self.check(names, overwrite=overwrite, inputs=inputs)
        staged: dict[str, Path] = {}
        replaced: list[Path] = []
        try:
            for name, write in writers.items():
                final = self.path / name.rstrip("/")
                with self._io(final):
                    tmp = temporary_path(self.path, suffix_of(final.name), directory=name.endswith("/"))
                    staged[final.name] = tmp
                    try:
                        write(tmp)
                    except OutputError as error:  # a file of a folder being filled: name it where it will be
                        raise OutputError(str(error).replace(str(tmp), str(final))) from None
                    if not tmp.is_dir():
                        tmp.chmod(default_mode())  # a writer may have replaced the file
            old = [n for n in self.groups.get(group, []) if n not in staged]
            self._set(group, names + old)  # until done: a kill from here on removes all of them
            self._append({"write": group, "files": names + old})
            for name, tmp in staged.items():
                final = self.path / name
                with self._io(final):
                    if final.is_dir() and not final.is_symlink():  # a folder is not replaced by a rename
                        replaced.append(temporary_path(self.path, directory=True))
                        os.replace(final, replaced[-1])
                    os.replace(tmp, final)
            for name in old:
                with self._io(self.path / name):
                    if os.path.lexists(self.path / name):
                        _remove(self.path / name)
            self._set(group, names)
            self._append({"write": group, "files": names}, {"done": group})
        finally:
            for tmp in [*staged.values(), *replaced]:
                if os.path.lexists(tmp):
                    _remove(tmp)
        return {name: self.path / name for name in names}

    def remove(self, keep: Iterable[str] = ()) -> list[str]:
        """Remove every file dal wrote here, but those of the groups ``keep``; returns the groups removed."""
        keep = set(keep)
        gone = [group for group in self.groups if group not in keep]
        for group in gone:
            for name in self.groups[group]:
                with self._io(self.path / name):
                    if os.path.lexists(self.path / name):
                        _remove(self.path / name)
            self._set(group, None)
        self._compact()
        return gone


@contextmanager
def output_folder(path: str | os.PathLike, what: str = "output folder"):
    """Create, lock and open the output folder ``path`` (see the module docstring) for the
    ``with`` block; within one process, opening it again gives the same :class:`OutputFolder`.

    A folder this call created is removed again at the end of the block if nothing is left in it.

    Raises:
        OutputError: ``path`` is not a folder dal can write (the message names it and why).
        dal.data.locks.FolderInUse: another process writes it.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{what} {path}: exists and is not a folder")
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{what} {path}: cannot be created: {os_error_line(error, path)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: not writable")
    key = path.resolve()
    if key in _open:
        yield _open[key]
        return
    try:
        lock = folder_lock(path, what)
        lock.__enter__()
    except OSError as error:
        raise OutputError(f"{what} {path}: cannot be locked: {os_error_line(error, path / '.dal-lock')}") from None
    try:
        folder = OutputFolder(path, what)
        folder._recover()
        _open[key] = folder
        yield folder
    finally:
        _open.pop(key, None)
        lock.__exit__(None, None, None)
        if created:
            _remove_if_empty(path)


def _remove_if_empty(path: Path) -> None:
    """Remove the folder ``path`` if nothing is in it: a command that created its ``--out`` and
    then failed, or wrote nothing, leaves no empty folder behind."""
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (or gone): it stays
