"""The training loop of ``dal train``: DAL or a baseline on 2D slices, validated on labelled
volumes, with resumable atomic checkpoints, TensorBoard logs and optional DistributedDataParallel.

Run folder (``--out``)::

    config.yaml             the resolved configuration
    last.safetensors        resumable: weights, optimizer, RNG, step (every ``checkpoint_every``
                            steps and at each validation)
    best.safetensors        the weights with the best validation AP, with the thresholds
    (both hold ``training``: seconds, steps and hardware so far, summed over resumed legs, and
    the checkpoint the run started from with ``--init``, with its own ``training``)
    metrics.jsonl           one line per validation
    tensorboard/            scalars and image grids

Determinism: with a fixed seed, ``deterministic`` on, a step limit and one process, the run is a
function of its config: slices are visited in a permutation drawn from ``(seed, epoch)``, each
slice's augmentation from ``(seed, epoch, index)``, and the checkpoint keeps the step, the epoch,
the position in it and torch's generator, so a resumed run ends with the weights of an
uninterrupted one. (A time budget, ``--minutes``, ends wherever the clock says.)
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from dal._version import __version__
from dal.data.dataset import ModelVolume, SliceDataset
from dal.data.io import DataError, write_text_atomic
from dal.data.outputs import append_line
from dal.data.preprocess import Preprocessor
from dal.engine.checkpoint import FPRS, THRESHOLD_KEYS, load_checkpoint, save_checkpoint, threshold_key
from dal.engine.config import Config
from dal.engine.devices import resolve_device
from dal.engine.runs import TrainingError, prepare_run_folder, run_folder
from dal.engine.scoring import POPULATION_KEY, lesion_sign, population_statistic, score_volume
from dal.engine.sources import (cache_folder, folder_training_volumes, folder_validation_volumes,
                                synthetic_training_volumes, synthetic_validation_volumes, with_template_tissue)
from dal.metrics import evaluate, threshold_at_fpr
from dal.models import build_model

@dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    position: int = 0          # batches of the epoch already done
    seconds: float = 0.0       # training time so far (steps and validations), across resumes
    best_ap: float = -math.inf
    best_step: int = -1
    hardware: list[str] = field(default_factory=list)  # each leg's machine, once each
    init: dict | None = None   # the checkpoint the weights started from, and its training

    def to_dict(self) -> dict:
        return {**vars(self), "best_ap": None if self.best_ap == -math.inf else self.best_ap}

    @classmethod
    def from_dict(cls, data: dict) -> "RunState":
        data = dict(data)
        data["best_ap"] = -math.inf if data.get("best_ap") is None else data["best_ap"]
        return cls(**data)

    def record(self) -> dict:
        """The checkpoint's ``training`` entry: what these weights cost."""
        return {"seconds": round(self.seconds, 1), "steps": self.step, "hardware": list(self.hardware),
                "init": self.init}


# ------------------------------------------------------------------------------------ setup


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("DAL_DDP_BACKEND") != "gloo"
                                else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def autocast_context(amp: str, device: torch.device):
    """bfloat16 autocast when asked ("bf16"), or with "auto" on CUDA and on CPUs with native
    bfloat16 (oneDNN reports it: AVX512-BF16 or AMX). On this machine's CPU (avx512_bf16) a
    training step measured 2.2x faster for dae and 1.25x for dal in bfloat16
    (benchmarks/bench_models.py)."""
    use = amp == "bf16" or (amp == "auto" and (device.type == "cuda" or cpu_has_bf16()))
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


def hardware_description(device: torch.device, processes: int = 1) -> str:
    """The machine a leg trains on, for the checkpoint: the GPU's name, or the CPU's model,
    threads and the vector instructions torch uses."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        model = next((line.split(":", 1)[1].strip() for line in _cpu_info() if line.startswith("model name")),
                     platform.processor() or platform.machine())
        name = f"{model}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
    return f"{processes} x {name}" if processes > 1 else name


def _cpu_info() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _collate(items: list[dict], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]).to(device, non_blocking=True) for key in items[0]}


def _say(message: str, rank: int) -> None:
    """A line of news; above the progress bar while there is one (tqdm.write), not glued to it."""
    if rank == 0:
        from tqdm import tqdm

        tqdm.write(f"dal train: {message}", file=sys.stdout)


def _load_data(config: Config, rank: int):
    """Training volumes, validation volumes and a message on the anatomical prior."""
    data = config.data
    preprocessor = Preprocessor(config.preprocessing)
    template_prior, held = False, 0
    cache = cache_folder(data.cache)
    seed = config.train.seed
    if data.data is None:
        train = synthetic_training_volumes(data.train_volumes, data.synthetic_contrasts, seed, preprocessor, cache)
        source = f"{len(train)} synthetic subjects ({', '.join(data.synthetic_contrasts)})"
    else:
        try:
            train = folder_training_volumes(data.data, data.contrast, preprocessor)
        except DataError as error:
            raise TrainingError(f"--data {data.data}: {error}") from None
        if config.preprocessing.register and not all(v.tissue is not None for v in train):
            train = with_template_tissue(train, preprocessor)
            template_prior = True
    if data.val is not None:
        try:
            val = folder_validation_volumes(data.val, data.contrast, preprocessor)
        except DataError as error:
            raise TrainingError(f"--val {data.val}: {error}") from None
    else:
        val = synthetic_validation_volumes(data.val_contrasts, data.val_lesions, data.val_healthy, seed, preprocessor,
                                           cache)
        if data.data is not None:
            val = [v for v in val if not v.healthy]  # never calibrate on synthetic scans for real data
    if data.data is not None and not any(v.healthy for v in val):
        held = max(1, round(data.heldout_fraction * len(train))) if data.heldout_fraction > 0 else 0
        if held == 0 or held >= len(train):
            raise TrainingError(f"--data {data.data}: {len(train)} scan(s): too few to hold out healthy scans for the "
                                "thresholds (give --val with healthy cases, or more scans)")
        order = np.random.default_rng(seed).permutation(len(train))
        heldout = [train[i] for i in order[:held]]
        train = [train[i] for i in sorted(order[held:])]
        val += [ModelVolume(v.image, v.mask, None, v.name, None, data.contrast or "", "none") for v in heldout]
    if data.data is not None:
        source = f"{len(train)} scans from {data.data}" + (f"; {held} held out for the thresholds" if held else "")
    if not any(not v.healthy for v in val):
        raise TrainingError("validation: no labelled volume with a lesion (the best checkpoint is chosen by AP)")
    has_tissue = all(v.tissue is not None for v in train)
    if config.model.kind != "dal":
        prior = "not used by this model"
    elif config.loss.prior <= 0:
        prior = "off (loss.prior is 0)"
    elif template_prior:
        prior = "on (MNI152 tissue maps: the scans are registered to MNI152 space)"
    elif has_tissue:
        prior = "on (tissue maps of the training scans)"
    else:
        prior = ("OFF: the training scans have no tissue maps (give tissue labels with the data, or register "
                 "the scans to MNI152 space with --register, to turn it on)")
    _say(f"training on {source}; validating on {sum(not v.healthy for v in val)} lesion and "
         f"{sum(v.healthy for v in val)} healthy volume(s); anatomical prior {prior}", rank)
    return train, val


def _initial_weights(model: nn.Module, init: str, rank: int) -> dict:
    """Load ``init``'s weights (a checkpoint path, or "pretrained") into ``model``; returns the
    record of where they came from, with the training they had (for the checkpoint's lineage)."""
    from dal.pretrained import default_checkpoint

    path = default_checkpoint() if init == "pretrained" else Path(init)
    parent = load_checkpoint(path)
    if parent.model_kind != model.kind:
        raise TrainingError(f"train.init {path}: a {parent.model_kind} checkpoint; this run trains {model.kind}")
    try:
        model.load_state_dict(parent.model.state_dict())
    except RuntimeError as error:
        raise TrainingError(f"train.init {path}: its weights do not fit this run's model settings "
                            f"({str(error).splitlines()[0]})") from None
    training = {k: v for k, v in (parent.training or {}).items() if k in ("seconds", "steps", "hardware", "init")}
    history = (f"trained {training['steps']} steps in {training['seconds'] / 60:.0f} min" if training
               else "no training record")
    ap = parent.metrics.get("ap")
    _say(f"starting from the weights of {path} ({history}; validation AP {'none' if ap is None else f'{ap:.3f}'})", rank)
    return {"checkpoint": path.name, "dal_version": parent.version, "validation_ap": ap,
            "training": training or None}


# ------------------------------------------------------------------------------------ validation


def validate(model: nn.Module, volumes: list[ModelVolume], config: Config, device: torch.device):
    """Scores every validation volume; returns (metrics, thresholds, example). AP, AUROC and Dice
    are means over the lesion volumes (``ap_<contrast>``, ``ap_<lesion>`` per group); the
    thresholds come from the healthy ones (1% and 5% false positives); ``example`` is the
    (volume, scored maps) pair with the largest lesion, for the image grid."""
    spacing = config.preprocessing.spacing
    scored = []
    for volume in volumes:
        out = score_volume(model, volume.image, volume.mask, spacing, median_mm=config.scoring.median_mm,
                           erode_mm=config.scoring.erode_mm, batch_size=config.scoring.batch_size, device=device,
                           disagreement=config.scoring.disagreement,
                           sign=lesion_sign(config.scoring.polarity, volume.contrast or None, config.model.kind))
        scored.append((volume, out))
    healthy = [(v, o) for v, o in scored if v.healthy]
    lesion = [(v, o) for v, o in scored if not v.healthy]
    thresholds, reference = {}, {}
    if healthy:
        masks = [torch.from_numpy(v.mask) for v, _ in healthy]
        thresholds = {threshold_key(fpr): threshold_at_fpr([o["score"] for _, o in healthy], fpr, masks) for fpr in FPRS}
        # What a healthy scan of the training kind leaves: dal infer's population distance is relative to it.
        reference[POPULATION_KEY] = float(np.median([population_statistic(o["score"][torch.from_numpy(v.mask)].numpy())
                                                      for v, o in healthy]))
    result = evaluate([o["score"] for _, o in lesion], [torch.from_numpy(v.label) for v, _ in lesion],
                      [torch.from_numpy(v.mask) for v, _ in lesion], threshold=thresholds.get("fpr_0.05"),
                      min_size=config.scoring.min_component_voxels)
    metrics = {"ap": result.mean_average_precision, "auroc": result.mean_auroc, "best_dice": result.mean_best_dice,
               "pooled_ap": result.pooled.average_precision}
    if thresholds:
        metrics["dice_fpr_0.05"] = result.mean_dice_at_threshold
    metrics.update(reference)
    groups: dict[str, list[float]] = {}
    for (volume, _), per_volume in zip(lesion, result.per_volume):
        for group in (f"ap_{volume.contrast}" if volume.contrast else None, f"ap_{volume.lesion}" if volume.lesion else None):
            if group and not math.isnan(per_volume.average_precision):
                groups.setdefault(group, []).append(per_volume.average_precision)
    metrics.update({group: float(np.mean(values)) for group, values in sorted(groups.items())})
    example = max(lesion, key=lambda pair: int(pair[0].label.sum()))
    return metrics, thresholds, example


def calibrate(model: nn.Module, config: Config, device: torch.device = torch.device("cpu")) -> tuple[dict, dict]:
    """(metrics, thresholds) of a trained ``model`` on ``config``'s validation data, scored as
    ``config.scoring`` says: what a checkpoint holds, computed again when a scoring setting
    changes (``scripts/checkpoint_variant.py --recalibrate``)."""
    _, volumes = _load_data(config, rank=0)
    metrics, thresholds, _ = validate(model, volumes, config, device)
    return metrics, thresholds


def _image_grid(volume: ModelVolume, scored: dict, classes: int) -> torch.Tensor:
    """One row of panels of the slice with most lesion: scan, anatomy, restored anatomy (DAL),
    PHI, residual score, label; each scaled to [0, 1], anterior up."""
    z = int(np.argmax(volume.label.sum(axis=(0, 1))))
    panels = [torch.from_numpy(volume.image[:, :, z]).clamp(0, 1.5) / 1.5]
    panels += [scored[key][:, :, z].float() / (classes - 1) for key in ("anatomy", "restored_anatomy") if key in scored]
    panels += [scored["phi"][:, :, z].clamp(0, 1.5) / 1.5,
               scored["score"][:, :, z] / max(float(scored["score"].max()), 1e-6),
               torch.from_numpy(volume.label[:, :, z] > 0).float()]
    return torch.cat([p.T.flip(0) for p in panels], 1)[None]


# ------------------------------------------------------------------------------------ the loop


def train(config: Config, out: str | os.PathLike, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> dict:
    """Train ``config.model.kind`` as ``config`` says, writing the run folder ``out``, which this
    process locks (:mod:`dal.engine.runs`).

    ``resume`` continues the run in ``out`` from its last checkpoint, or, killed before its first
    one, starts it again from step 0; ``overwrite`` discards the run in ``out`` and starts anew.

    Returns a summary: steps, epochs, seconds, images per second, best validation AP, the
    paths of the checkpoints (all also in ``summary.json``) and "model", this process's trained
    model (the last weights).
    """
    rank, _ = _distributed()
    if config.model.kind == "zscore" and not config.preprocessing.register:
        # Voxels are compared across subjects: only in a common space do they match.
        config = config.replace({"preprocessing.register": True})
        _say("--model zscore: working in MNI152 space (preprocessing.register on)", rank)
    with run_folder(out, rank, resume):
        resume = prepare_run_folder(out, config, rank, resume=resume, overwrite=overwrite)
        return _train(config, Path(out), resume, progress)


def _train(config: Config, out: Path, resume: bool, progress: bool) -> dict:
    rank, world = _distributed()
    tc = config.train
    last_path, best_path = out / "last.safetensors", out / "best.safetensors"
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.use_deterministic_algorithms(tc.deterministic, warn_only=True)
    device = resolve_device(tc.device, rank)

    train_volumes, val_volumes = _load_data(config, rank)
    dataset = SliceDataset(train_volumes, config.augmentation, seed=tc.seed,
                           min_brain_fraction=config.data.min_brain_fraction)
    if len(dataset) < tc.batch_size * world:
        raise TrainingError(f"train.batch_size: {tc.batch_size} x {world} process(es) is more than the "
                            f"{len(dataset)} training slices")

    torch.manual_seed(tc.seed)
    # channels-last: oneDNN's convolutions of few channels are faster in it on the CPU (the bf16
    # step of DAL 1.56x, of DAE 1.35x: benchmarks/bench_models.py); inputs of one channel are
    # channels-last already.
    model = build_model(config.model, config.loss, config.preprocessing.shape).to(device,
                                                                                  memory_format=torch.channels_last)
    learns = any(parameter.requires_grad for parameter in model.parameters())  # not intensity, not zscore
    if hasattr(model, "fit_population"):
        model.fit_population([v.image for v in train_volumes], [v.mask for v in train_volumes])
        _say(f"fitted the population's mean and std on {len(train_volumes)} scans", rank)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay) if learns else None
    state = RunState()
    thresholds: dict = {}
    if resume:
        checkpoint = load_checkpoint(last_path)
        if checkpoint.config["model"] != config.to_dict()["model"]:
            raise TrainingError(f"--resume: the model settings differ from those of {last_path}")
        model.load_state_dict(checkpoint.model.state_dict())
        if optimizer is not None:
            optimizer.load_state_dict(checkpoint.optimizer_state)
        torch.set_rng_state(checkpoint.rng_state)
        state = RunState.from_dict(checkpoint.training["state"])
        thresholds = checkpoint.thresholds
        _say(f"resuming {out} at step {state.step} (epoch {state.epoch})", rank)
    else:
        torch.manual_seed(tc.seed + 1000 * rank)  # noise and drop-out differ per process
        if tc.init is not None:
            state.init = _initial_weights(model, tc.init, rank)
    leg_hardware = hardware_description(device, world)
    if leg_hardware not in state.hardware:
        state.hardware.append(leg_hardware)
    net = model
    if world > 1 and learns:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"), purge_step=state.step if resume else None)
    steps_per_epoch = len(dataset) // (tc.batch_size * world)
    val_every = tc.val_every or steps_per_epoch
    model_kind = config.model.kind
    plain = config.to_dict()

    def save(path, metrics=None, resumable=True):
        if rank != 0:
            return
        save_checkpoint(path, model, model_kind=model_kind, config=plain, preprocessing=config.preprocessing.to_dict(),
                        thresholds={k: v for k, v in thresholds.items() if k in THRESHOLD_KEYS}, metrics=metrics,
                        optimizer=optimizer if resumable else None,
                        training={**state.record(), "state": state.to_dict()} if resumable else state.record())

    def run_validation():
        nonlocal thresholds
        if rank == 0:
            _say(f"step {state.step}: validating on {len(val_volumes)} volume(s)", rank)
            metrics, thresholds, example = validate(model, val_volumes, config, device)
            record = {"step": state.step, "epoch": state.epoch, "seconds": round(state.seconds, 1), **metrics,
                      **{f"threshold_{k}": v for k, v in thresholds.items()}}
            append_line(out / "metrics.jsonl", json.dumps(record, allow_nan=False))
            for key, value in metrics.items():
                if value is not None:
                    writer.add_scalar(f"val/{key}", value, state.step)
            volume, scored = example
            writer.add_image("val/scan_anatomy_restored_phi_score_label", _image_grid(volume, scored, config.model.classes),
                             state.step)
            ap = metrics["ap"] if metrics["ap"] is not None else -math.inf
            if ap > state.best_ap:
                state.best_ap, state.best_step = ap, state.step
                save(best_path, metrics, resumable=False)
            _say(f"step {state.step}: validation AP {ap:.3f} (best {state.best_ap:.3f} at step {state.best_step})", rank)
            save(last_path, metrics)
        model.train()
        if world > 1:
            dist.barrier()

    bar = None
    if rank == 0 and progress:
        from tqdm import tqdm

        # disable=None: no bar where stderr is no terminal (a log file), a line per checkpoint instead.
        bar = tqdm(total=tc.max_steps, initial=state.step, desc=f"dal train {model_kind}", unit="step",
                   dynamic_ncols=True, disable=None)
    if learns and tc.max_steps is None and tc.minutes is None:
        _say("neither --max-steps nor --minutes: training runs until you stop it (Ctrl-C); last.safetensors keeps "
             f"it resumable (every {tc.checkpoint_every or val_every} steps; --resume continues it)", rank)
    model.train()
    started = time.perf_counter() - state.seconds
    images_per_second = float("nan")
    step_seconds, step_images = 0.0, 0  # this process's training steps only, for the summary's rate
    window_start, window_images = time.perf_counter(), 0
    last_validated = state.step if resume else -1
    validated_at = state.seconds

    def validation_due() -> bool:
        if tc.val_minutes is not None:
            return state.seconds - validated_at >= 60 * tc.val_minutes
        return state.step % val_every == 0
    stop = not learns or (tc.max_steps is not None and state.step >= tc.max_steps)
    while not stop:
        dataset.set_epoch(state.epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(tc.seed * 100003 + state.epoch))
        order = order[: steps_per_epoch * tc.batch_size * world].view(steps_per_epoch, world, tc.batch_size)[:, rank]
        for batch_index in range(state.position, steps_per_epoch):
            step_started = time.perf_counter()
            batch = _collate([dataset[int(i)] for i in order[batch_index]], device)
            with autocast_context(tc.amp, device):
                losses = net(batch)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            losses = {key: value.detach() for key, value in losses.items()}
            optimizer.step()
            state.step += 1
            state.position = batch_index + 1
            state.seconds = time.perf_counter() - started
            window_images += tc.batch_size * world
            now = time.perf_counter()
            step_seconds, step_images = step_seconds + now - step_started, step_images + tc.batch_size * world
            if now - window_start > 2.0:
                images_per_second, window_start, window_images = window_images / (now - window_start), now, 0
            if rank == 0:
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(losses['loss']):.4f}", img_s=f"{images_per_second:.0f}", refresh=False)
                if tc.log_every and state.step % tc.log_every == 0:
                    for key, value in losses.items():
                        writer.add_scalar(f"train/{key}", float(value), state.step)
                    if not math.isnan(images_per_second):
                        writer.add_scalar("train/images_per_second", images_per_second, state.step)
            out_of_steps = tc.max_steps is not None and state.step >= tc.max_steps
            out_of_time = tc.minutes is not None and state.seconds >= 60 * tc.minutes
            stop = out_of_steps or out_of_time
            if world > 1:
                flag = torch.tensor([float(stop)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if state.position == steps_per_epoch:
                state.epoch, state.position = state.epoch + 1, 0
            if stop or validation_due():
                run_validation()
                last_validated = state.step
                state.seconds = validated_at = time.perf_counter() - started
                window_start, window_images = time.perf_counter(), 0  # the rate counts training alone
                if bar is not None:
                    bar.unpause()
            elif tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                save(last_path)
                if bar is None or bar.disable:
                    limit = f"/{tc.max_steps}" if tc.max_steps else ""
                    _say(f"step {state.step}{limit}: loss {float(losses['loss']):.4f}, {images_per_second:.0f} images/s, "
                         f"{state.seconds / 60:.1f} min", rank)
            if stop:
                break
    if last_validated != state.step:
        run_validation()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    summary = {"steps": state.step, "epochs": state.epoch, "seconds": round(state.seconds, 1),
               "images_per_second": round(step_images / step_seconds, 1) if step_seconds > 0 else None,
               "best_ap": None if state.best_ap == -math.inf else state.best_ap, "best_step": state.best_step,
               "last": str(last_path), "best": str(best_path), "version": __version__}
    if rank == 0:
        write_text_atomic(json.dumps(summary, indent=1, allow_nan=False), out / "summary.json")
    if world > 1:
        dist.barrier()
    return {**summary, "model": model}
