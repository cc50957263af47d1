"""Checkpoints: safetensors weights and plain JSON metadata, written atomically, read without
ever running code from the file.

One file (``.safetensors``) holds:

- tensors: ``model.<name>`` (the model's state dict); in resumable checkpoints also
  ``optimizer.<param index>.<name>`` (the optimizer's tensors) and ``rng.torch`` (torch's CPU
  generator state);
- header metadata (JSON strings): ``format`` ("dal-checkpoint"), ``format_version``,
  ``dal_version``, ``model_kind``, ``config`` (the resolved training config), ``preprocessing``
  (for :class:`~dal.data.PreprocessConfig`), ``thresholds`` ("fpr_0.01", "fpr_0.05" over every
  healthy validation scan; "fpr_0.01/t1", ... over those of one contrast), ``metrics``
  and ``training``: how the weights were trained (``seconds``, ``steps``, ``hardware``, summed
  over resumed legs; ``init``, the checkpoint they started from), in resumable checkpoints also
  the run's state and the optimizer's plain settings; ``population`` (contrasts, scans) where the
  checkpoint scores against the healthy population;
- ``population.<contrast>.<map>``: that population's maps (:mod:`dal.engine.population`).

Files written by ``torch.save`` or ``pickle`` are refused: unpickling can run arbitrary code.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dal._version import __version__
from dal.data.layouts import CONTRASTS
from dal.data.outputs import write_atomic
from dal.engine.population import HealthyPopulation
from dal.errors import ArgumentError, CheckpointError, short_repr

FORMAT = "dal-checkpoint"
FORMAT_VERSION = 1
FPRS = (0.01, 0.05)  # the false-positive rates every checkpoint is calibrated at
DEFAULT_FPR = 0.01  # dal infer's lesion mask


def threshold_key(fpr: float, contrast: str | None = None) -> str:
    """The checkpoint's threshold key of a false-positive rate, pooled over every contrast
    (0.01 -> "fpr_0.01") or calibrated on the healthy scans of one (0.01, "t1" -> "fpr_0.01/t1")."""
    if not any(abs(fpr - allowed) < 1e-12 for allowed in FPRS):
        raise ArgumentError(f"fpr: expected one of {FPRS} (the rates the checkpoint is calibrated at), got {fpr}")
    return f"fpr_{fpr:g}" + (f"/{contrast}" if contrast else "")


THRESHOLD_KEYS = tuple(threshold_key(fpr) for fpr in FPRS)  # the pooled ones


def parse_threshold_key(key: str) -> tuple[float, str | None] | None:
    """(fpr, contrast or None) of a threshold key ("fpr_0.01/t1" -> (0.01, "t1")), or None when
    ``key`` is not one: a pooled key, or one of them "/" a known contrast."""
    pooled, slash, contrast = str(key).partition("/")
    if pooled not in THRESHOLD_KEYS or (slash and contrast not in CONTRASTS):
        return None
    return float(pooled[len("fpr_"):]), contrast or None


def is_threshold_key(key: str) -> bool:
    """Whether ``key`` names a threshold (:func:`parse_threshold_key`)."""
    return parse_threshold_key(key) is not None


def threshold_for(thresholds: dict, fpr: float, contrast: str | None = None) -> tuple[float, str] | None:
    """(value, key) of the threshold at ``fpr`` for a scan of ``contrast``: the one calibrated on
    that contrast's healthy scans when the checkpoint has it, else the pooled one; None when
    neither is there. Contrasts differ in how far the PHI misses healthy tissue, so one pooled
    threshold flags more than ``fpr`` of one contrast's healthy brain and less of another's."""
    for key in ((threshold_key(fpr, contrast.lower()),) if contrast else ()) + (threshold_key(fpr),):
        if key in thresholds:
            return float(thresholds[key]), key
    return None


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip archive
_PICKLE_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")  # after pickle's 0x80 (protocol 2 and later)


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``model`` is in eval mode on ``map_location``."""

    model: nn.Module
    model_kind: str
    config: dict
    preprocessing: dict
    thresholds: dict
    version: str
    metrics: dict = field(default_factory=dict)
    training: dict | None = None
    optimizer_state: dict | None = None
    rng_state: torch.Tensor | None = None
    path: Path | None = None
    population: HealthyPopulation | None = None


def _optimizer_tensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict split into flat tensors and plain JSON data."""
    tensors, plain_state = {}, {}
    for index, values in state_dict["state"].items():
        plain_state[str(index)] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                plain_state[str(index)][name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain_state": plain_state}


def _optimizer_state(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(values) for i, values in plain["plain_state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, model_kind: str, config: dict,
                    preprocessing: dict, thresholds: dict | None = None, metrics: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None, training: dict | None = None,
                    population: HealthyPopulation | None = None) -> Path:
    """Write a checkpoint atomically (a temporary file in the same folder, then ``os.replace``):
    a reader, or a run killed mid-write, sees the old file or the new one, never half of one.

    Args:
        path: the ``.safetensors`` file.
        model: the model (a DistributedDataParallel wrapper is unwrapped).
        model_kind: "dal", "ae" or "dae".
        config: the resolved training config (plain data).
        preprocessing: the preprocessing config (``PreprocessConfig.to_dict()``).
        thresholds: score thresholds at 1% and 5% false positives, keys "fpr_0.01", "fpr_0.05"
            (pooled) and "fpr_0.01/<contrast>", ... (:func:`is_threshold_key`).
        metrics: validation metrics to keep with the weights.
        optimizer: for a resumable checkpoint: the optimizer.
        training: plain data on the training (seconds, steps, hardware; the run's state when resumable).
        population: the healthy population the scores are weighed against (``scoring.population``).
    """
    path = Path(path)
    thresholds = dict(thresholds or {})
    unknown = sorted(key for key in thresholds if not is_threshold_key(key))
    if unknown:
        raise ArgumentError(f"thresholds: unknown keys {unknown}; expected {THRESHOLD_KEYS}, each alone or followed "
                            f"by /<contrast> ({', '.join(CONTRASTS)})")
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in _unwrap(model).state_dict().items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "dal_version": __version__,
                "model_kind": model_kind, "config": config, "preprocessing": preprocessing,
                "thresholds": thresholds, "metrics": metrics or {}}
    if population is not None:
        tensors.update(population.to_tensors())
        metadata["population"] = population.metadata()
    if optimizer is not None:
        optimizer_tensors, optimizer_plain = _optimizer_tensors(optimizer.state_dict())
        tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in optimizer_tensors.items()})
        tensors["rng.torch"] = torch.get_rng_state()
        metadata["training"] = {**(training or {}), "optimizer": optimizer_plain}
    elif training is not None:
        metadata["training"] = training
    header = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}

    def write(temporary: Path) -> None:
        save_file(tensors, str(temporary), metadata=header)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())

    return write_atomic(path, write)


def read_metadata(path: str | os.PathLike) -> dict:
    """The checkpoint's metadata as plain data (JSON decoded), checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        # A safetensors file: an 8-byte header length, then the JSON header. Its first byte can be
        # 0x80, pickle's first byte, so a file is called pickled only when it is not safetensors.
        if not (0 < size <= min(100_000_000, os.path.getsize(path) - 8) and handle.read(1) == b"{"):
            if head.startswith(_ZIP_MAGIC) or (head[:1] == b"\x80" and head[1:2] in _PICKLE_PROTOCOLS):
                raise CheckpointError(f"checkpoint {path}: holds a pickled object (torch.save or pickle); dal refuses "
                                      "to load it, since unpickling can run code. dal checkpoints are safetensors files.")
            raise CheckpointError(f"checkpoint {path}: truncated or corrupt (not a safetensors file)")
        handle.seek(8)
        try:
            header = json.loads(handle.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
            raise CheckpointError(f"checkpoint {path}: corrupt header (not a safetensors file)") from None
    raw = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: a safetensors file, but not a dal checkpoint (no dal metadata)")
    try:
        version = int(raw["format_version"])
        if version > FORMAT_VERSION:
            raise CheckpointError(f"checkpoint {path}: format version {version}, written by dal {raw.get('dal_version')}; "
                                  f"this dal {__version__} reads up to version {FORMAT_VERSION}: upgrade dal")
        metadata = {key: value if key in ("format", "format_version", "dal_version", "model_kind") else json.loads(value)
                    for key, value in raw.items()}
    except (KeyError, ValueError, TypeError, RecursionError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path}: corrupt dal metadata ({type(error).__name__}: {error})") from None
    _check_settings(metadata, path)
    return metadata


def _check_settings(metadata: dict, path: Path) -> None:
    """CheckpointError naming the file and the setting unless the thresholds are finite numbers
    and the scoring section holds what :class:`~dal.engine.config.ScoringConfig` expects."""
    from dal.engine.config import ConfigError, ScoringConfig, _build

    thresholds = metadata.get("thresholds")
    if not isinstance(thresholds, dict):
        raise CheckpointError(f"checkpoint {path}: thresholds: expected a mapping, got {short_repr(thresholds)}")
    for key, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckpointError(f"checkpoint {path}: threshold {short_repr(key)}: expected a finite number, got "
                                  f"{short_repr(value)}")
    config = metadata.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {path}: config: expected a mapping, got {type(config).__name__}")
    try:
        _build(ScoringConfig, config.get("scoring") or {}, "scoring.")
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {path}: its scoring settings are unusable: {error}") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint and rebuild its model (eval mode, on ``map_location``).

    Raises:
        CheckpointError: missing, corrupt or pickled file, a newer format, or weights that do not
            fit the model its config describes. The message names the file.
    """
    from dal.engine.config import ConfigError, _build
    from dal.models import ModelConfig, build_model

    path = Path(path)
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: corrupt or truncated weights ({error})") from None
    try:
        model_config = _build(ModelConfig, metadata["config"]["model"], "model.")
    except (ConfigError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: its model config is unusable ({error})") from None
    if model_config.kind != metadata.get("model_kind"):
        raise CheckpointError(f"checkpoint {path}: model_kind {metadata.get('model_kind')!r} differs from its "
                              f"config's {model_config.kind!r}")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint {path}: its weights {name} hold NaN or infinite values")
    volume_shape = _volume_shape(metadata, path)
    _check_fits(model_config, volume_shape, weights, path)
    model = build_model(model_config, volume_shape=volume_shape)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path}: the weights do not fit a {model_config.kind} model of its "
                              f"config: {error}") from None
    model.to(map_location).eval()
    population = None
    if metadata.get("population") is not None:
        if volume_shape is None or not isinstance(metadata["population"], dict):
            raise CheckpointError(f"checkpoint {path}: a population without model space's shape, or not a mapping")
        population = HealthyPopulation.from_tensors(tensors, metadata["population"], volume_shape, f"checkpoint {path}")
    training = metadata.get("training")
    optimizer_state = None
    if training is not None and "optimizer" in training:
        optimizer_state = _optimizer_state(tensors, training.pop("optimizer"))
    return Checkpoint(model=model, model_kind=model_config.kind, config=metadata["config"],
                      preprocessing=metadata["preprocessing"], thresholds=metadata["thresholds"],
                      version=metadata["dal_version"], metrics=metadata.get("metrics", {}), training=training,
                      optimizer_state=optimizer_state, rng_state=tensors.get("rng.torch"), path=path,
                      population=population)


def _volume_shape(metadata: dict, path: Path) -> tuple[int, int, int] | None:
    """Model space's shape, from the preprocessing settings (it sizes the z-score's volumes)."""
    shape = (metadata.get("preprocessing") or {}).get("shape")
    if shape is None:
        return None
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and 0 < s <= 4096 for s in shape)):
        raise CheckpointError(f"checkpoint {path}: preprocessing.shape: expected 3 sizes of 1 to 4096, got "
                              f"{short_repr(shape)}")
    return tuple(shape)


def _check_fits(model_config, volume_shape, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Build the model of the config without memory (on the meta device) and compare its tensors
    with the file's, so that a config declaring a huge model (``channels: 1000000``) is refused
    before anything is allocated: the weights in the file bound the model."""
    from dal.models import build_model

    try:
        with torch.device("meta"):
            expected = {name: tuple(t.shape) for name, t in
                        build_model(model_config, volume_shape=volume_shape).state_dict().items()}
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: its model config is unusable ({error})") from None
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [name for name in expected if name in weights and tuple(weights[name].shape) != expected[name]]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(weights[wrong[0]].shape)} in the file, "
                 f"{expected[wrong[0]]} in its config)" if wrong else ""]
        raise CheckpointError(f"checkpoint {path}: the weights do not fit the {model_config.kind} model its config "
                              f"describes: tensors {'; '.join(p for p in parts if p)}")
