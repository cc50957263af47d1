"""dal's public functions: what the command line does, callable from Python.

``dal.train``, ``dal.evaluate`` and ``dal.synthesize`` are the commands ``dal train``, ``dal evaluate``
and ``dal synth``; :class:`dal.Detector` is ``dal infer``. Every error about an input, a setting or
an output is a :class:`dal.DalError` (see :mod:`dal.errors` for the subclasses).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from dal.errors import ConfigError


def train(out: str | os.PathLike, config: "str | os.PathLike | dal.engine.config.Config | None" = None, *,
          settings: dict[str, Any] | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True) -> dict:
    """Train DAL (or a baseline) and write its run folder ``out`` (checkpoints, metrics, logs).

    Args:
        out: the run folder.
        config: a YAML file of settings (any subset of ``configs/default.yaml``), a
            :class:`~dal.engine.config.Config`, or None for the defaults. With ``resume`` and no
            config, the run keeps the settings it was started with (``out/config.yaml``).
        settings: ``{"section.key": value}`` overrides, e.g. ``{"train.minutes": 30,
            "model.kind": "dae"}``; None values are ignored.
        resume: continue the run in ``out`` from its last checkpoint.
        overwrite: discard the run in ``out`` and start again.
        progress: a progress bar (on a terminal) and a line per checkpoint.

    Returns:
        A summary: ``steps``, ``seconds``, ``best_ap``, ``best_step`` and more.

    Raises:
        ConfigError: a setting that cannot be used; TrainingError: a run that cannot start;
        DataError: unusable data.
    """
    from dal.engine.config import Config, load_config
    from dal.engine.train import train as run_training

    if not isinstance(config, Config):
        if config is None and resume and (Path(out) / "config.yaml").is_file():
            config = Path(out) / "config.yaml"  # a resumed run keeps its own settings
        config = load_config(config)
    config = config.replace({key: value for key, value in (settings or {}).items() if value is not None})
    data = config.data.data
    if data is not None and not Path(data).is_dir():
        raise ConfigError(f"data.data {data}: no such folder")
    return run_training(config, out, resume=resume, overwrite=overwrite, progress=progress)


def evaluate(data: str | os.PathLike, out: str | os.PathLike | None = None, *,
             model: "str | os.PathLike | dal.Detector | None" = None, contrast: str | None = None,
             device: str = "auto", threads: int | None = None, register: bool | None = None,
             overlays: bool = True, progress: bool = False, overwrite: bool = False) -> dict:
    """Evaluate a checkpoint on the labelled scans under ``data``; write metrics.csv, metrics.json
    and report.html into ``out`` (None: write nothing).

    Args:
        data: a labelled data folder (BraTS-like, BIDS, ``dal synth``).
        model: a checkpoint, a loaded :class:`dal.Detector`, or None for the shipped one.
        contrast: evaluate only the scans of this contrast.
        device, threads, register: as :meth:`dal.Detector.load` (ignored for a Detector).
        overlays: draw the report's pictures and 3D viewer.

    Returns:
        The report: ``summary`` (means and pooled values), ``volumes`` (per volume), ``failures``,
        ``skipped`` and ``notes``.
    """
    from dal.engine.evaluate import evaluate_folder
    from dal.engine.infer import Detector

    detector = model if isinstance(model, Detector) else Detector.load(model, device=device, threads=threads,
                                                                         register=register)
    return evaluate_folder(detector, data, out, contrast=contrast, overlays=overlays, progress=progress,
                           overwrite=overwrite)


def synthesize(out: str | os.PathLike, count: int = 4, *, contrasts: Sequence[str] = ("t1", "t2", "flair"),
               lesions: Sequence[str] = ("none", "tumour", "stroke", "wmh"), seed: int = 0, spacing: float = 1.0,
               shape: tuple[int, int, int] = (160, 192, 160), overwrite: bool = False,
               anatomy: str | os.PathLike | None = None, tissue: str | os.PathLike | None = None,
               anatomy_mask: str | os.PathLike | None = None, anatomy_contrast: str = "t1",
               progress: bool = False) -> Path:
    """Write ``count`` synthetic cases (scans, brain masks, lesion labels, tissue maps) into ``out``
    in a BraTS-like layout with a manifest.json: from the MNI152 template, or with ``anatomy``
    lesions implanted into that real healthy scan (its ``tissue`` maps or labels and its
    ``anatomy_mask`` where given; the cases keep its grid, ``spacing`` and ``shape`` are ignored).
    The folder is a function of the arguments. Returns the manifest's path."""
    from dal.data.synthetic import write_dataset

    if anatomy is None and (tissue is not None or anatomy_mask is not None):
        raise ConfigError("tissue and anatomy_mask go with anatomy")
    real = None
    if anatomy is not None:
        from dal.data.anatomy import load_anatomy

        real = load_anatomy(anatomy, tissue=tissue, mask=anatomy_mask, contrast=anatomy_contrast)
    return write_dataset(out, count, contrasts, lesions, seed, spacing=spacing, shape=tuple(shape),
                         overwrite=overwrite, progress=progress, anatomy=real)
