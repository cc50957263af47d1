"""The run folder of ``dal train``: locked while a run writes it, holding only dal's files, and
resumable from any moment.

The files a run writes (:data:`RUN_FILES`) are claimed in the folder's journal
(:mod:`dal.data.outputs`) before anything is written, so a ``config.yaml`` of the user's own in
``--out`` is refused, never replaced. ``config.yaml`` is written first, before the data are
loaded, so a run killed at any moment leaves enough to go on from: ``--resume`` continues from
``last.safetensors``, dropping the lines of ``metrics.jsonl`` written after it, or, with no
checkpoint yet, starts the run again from step 0, saying so.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from dal.data.io import write_text_atomic
from dal.data.outputs import output_folder
from dal.engine.checkpoint import CheckpointError, read_metadata
from dal.engine.config import Config, dump_config
from dal.errors import DalError, TrainingError

RUN_FILES = ("config.yaml", "last.safetensors", "best.safetensors", "metrics.jsonl", "summary.json", "tensorboard")


@contextmanager
def run_folder(out: str | os.PathLike, rank: int = 0, resume: bool = False):
    """Lock ``out`` for the ``with`` block (only process 0 of a distributed run writes it). A new
    run that fails with a DalError before its first checkpoint (bad data, say) leaves nothing, so
    the same command can be run again once the input is fixed."""
    if rank != 0:
        yield
        return
    out = Path(out)
    created = not out.exists()
    try:
        with output_folder(out, "run folder") as folder:
            try:
                yield
            except DalError:
                if not resume and not (out / "last.safetensors").exists():
                    folder.remove()
                raise
    finally:
        if created:
            try:
                out.rmdir()  # only if empty: the run left nothing in it
            except OSError:
                pass


def _dal_checkpoint(path: Path) -> bool:
    try:
        read_metadata(path)
        return True
    except CheckpointError:
        return False


def prepare_run_folder(out: str | os.PathLike, config: Config, rank: int = 0, *, resume: bool = False,
                       overwrite: bool = False) -> bool:
    """Check and prepare ``out`` for a run; returns whether to load ``last.safetensors``.

    Raises:
        TrainingError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is given, or both are.
        OutputError: a file of :data:`RUN_FILES` in ``out`` was not written by dal.
    """
    out = Path(out)
    last = out / "last.safetensors"
    if resume and overwrite:
        raise TrainingError("--resume and --overwrite: give one of them (continue the run, or start it again)")
    if rank != 0:
        return resume and last.is_file()
    with output_folder(out, "run folder") as folder:  # the folder run_folder holds
        if folder.owner("last.safetensors") is None and last.is_file() and _dal_checkpoint(last):
            folder.adopt("run", RUN_FILES)  # a run folder of a dal from before the journal
        folder.claim("run", list(RUN_FILES))
        held = [name for name in RUN_FILES if (out / name).exists()]
        if overwrite:
            folder.remove()
            folder.claim("run", list(RUN_FILES))
        elif held and not resume:
            raise TrainingError(f"--out {out}: already holds a run ({', '.join(held)}); continue it with --resume, "
                                "or start it again with --overwrite")
        elif resume and last.is_file():
            _drop_metrics_after(out / "metrics.jsonl", read_metadata(last)["training"]["state"]["step"])
        elif resume:
            print(f"dal train: --resume: {out} has no checkpoint yet (the run stopped before its first): starting it "
                  "from step 0", flush=True)
            folder.remove()
            folder.claim("run", list(RUN_FILES))
            resume = False
        write_text_atomic(dump_config(config), out / "config.yaml")
    return resume


def _drop_metrics_after(path: Path, step: int) -> None:
    """Keep the validation records up to the checkpoint's step: those after it are done again."""
    if not path.is_file():
        return
    lines = path.read_text(errors="replace").splitlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError, RecursionError):
            continue  # a line cut short by a kill
    if kept != lines:
        write_text_atomic("".join(f"{line}\n" for line in kept), path)
