"""The training loop of ``dal train``: DAL or a baseline on 2D slices, validated on labelled
volumes, with resumable atomic checkpoints, TensorBoard logs and optional DistributedDataParallel.
:func:`train` prepares the run folder and hands the run to a :class:`Trainer`, whose
:meth:`~Trainer.run` lists its steps (data, model, weights, logs, the steps, validation,
checkpoints), a method each.

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
uninterrupted one. (A time budget, ``--minutes``, ends wherever the clock says; so does
``amp: auto`` on a CPU with native bf16, which times a step each way at the start: give ``--amp``
``off`` or ``bf16`` to make the precision part of the config.)
"""
from __future__ import annotations

import copy
import datetime
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
from dal.engine.checkpoint import (
    FPRS,
    is_threshold_key,
    load_checkpoint,
    save_checkpoint,
    threshold_for,
    threshold_key,
)
from dal.engine.config import Config
from dal.engine.devices import resolve_device
from dal.engine.population import HealthyPopulation, fit_population, population_summary, white_matter_prior
from dal.engine.runs import TrainingError, prepare_run_folder, run_folder
from dal.engine.scoring import POPULATION_KEY, lesion_sign, population_statistic, score_volume
from dal.engine.sources import (cache_folder, folder_training_volumes, folder_validation_volumes,
                                synthetic_population_volumes, synthetic_training_volumes, synthetic_validation_volumes,
                                with_template_tissue)
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
    amp: str | None = None     # the precision train.amp resolved to, "bf16" or "off" (kept for --resume)

    def to_dict(self) -> dict:
        return {**vars(self), "best_ap": None if self.best_ap == -math.inf else self.best_ap}

    @classmethod
    def from_dict(cls, data: dict) -> "RunState":
        data = dict(data)
        data["best_ap"] = -math.inf if data.get("best_ap") is None else data["best_ap"]
        return cls(**data)

    def record(self) -> dict:
        """The checkpoint's ``training`` entry: what these weights cost."""
        return {"seconds": round(self.seconds, 3), "steps": self.step, "hardware": list(self.hardware),
                "init": self.init}


# ------------------------------------------------------------------------------------ setup


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # Process 0 alone validates and, at the end, fits the healthy population (minutes of
        # synthesis) while the others wait at a barrier: longer than NCCL's default 10 minutes.
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("DAL_DDP_BACKEND") != "gloo"
                                else "gloo", timeout=datetime.timedelta(hours=2))
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def autocast_context(amp: str, device: torch.device):
    """bfloat16 autocast for ``amp`` "bf16", none for "off" (the resolved train.amp)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()


def bf16_step_is_faster(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[bool, dict[str, float]]:
    """Whether a training step of ``model`` on ``batch`` (forward and backward, on a copy of the
    model; a warm-up each way, then the best of two rounds that alternate the two, so that neither
    pays for the allocator's first growth) is faster with bfloat16 autocast than in float32 on this
    CPU, and the seconds of each. Native bf16 does not mean faster: a DAE step
    measured 1.6x faster in bf16 on an AMD EPYC's AVX512-BF16 and 1.3x slower on a Xeon's without
    AMX (``benchmarks/bench_models.py``). Torch's generator is left as it was."""
    probe, generator = copy.deepcopy(model).train(), torch.get_rng_state()
    seconds = {"off": math.inf, "bf16": math.inf}
    for measured in (False, True, True):
        for amp in seconds:
            start = time.perf_counter()
            with autocast_context(amp, torch.device("cpu")):
                losses = probe(batch)
            losses["loss"].backward()
            probe.zero_grad(set_to_none=True)
            if measured:
                seconds[amp] = min(seconds[amp], time.perf_counter() - start)
    torch.set_rng_state(generator)
    return seconds["bf16"] < seconds["off"], seconds


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


def _load_data(config: Config, rank: int) -> tuple[list[ModelVolume], list[ModelVolume]]:
    """Training volumes and validation volumes, with a message on where they come from and on the
    anatomical prior."""
    data = config.data
    preprocessor = Preprocessor(config.preprocessing)
    cache = cache_folder(data.cache)
    train, template_prior = _training_volumes(config, preprocessor, cache)
    val = _validation_volumes(config, preprocessor, cache)
    train, val, held = _hold_out_healthy(config, train, val)
    if not any(not v.healthy for v in val):
        raise TrainingError("validation: no labelled volume with a lesion (the best checkpoint is chosen by AP)")
    if data.data is None:
        source = f"{len(train)} synthetic subjects ({', '.join(data.synthetic_contrasts)})"
    else:
        source = f"{len(train)} scans from {data.data}" + (f"; {held} held out for the thresholds" if held else "")
    _say(f"training on {source}; validating on {sum(not v.healthy for v in val)} lesion and "
         f"{sum(v.healthy for v in val)} healthy volume(s); anatomical prior "
         f"{_prior_description(config, train, template_prior)}", rank)
    return train, val


def _training_volumes(config: Config, preprocessor: Preprocessor, cache) -> tuple[list[ModelVolume], bool]:
    """The training volumes, and whether their tissue maps are the MNI152 template's."""
    data = config.data
    if data.data is None:
        return synthetic_training_volumes(data.train_volumes, data.synthetic_contrasts, config.train.seed,
                                          preprocessor, cache), False
    try:
        train = folder_training_volumes(data.data, data.contrast, preprocessor)
    except DataError as error:
        raise TrainingError(f"--data {data.data}: {error}") from None
    if config.preprocessing.register and not all(v.tissue is not None for v in train):
        return with_template_tissue(train, preprocessor), True
    return train, False


def _validation_volumes(config: Config, preprocessor: Preprocessor, cache) -> list[ModelVolume]:
    """The labelled volumes of ``--val``, or synthetic ones (with real training data, only those
    with a lesion: never calibrate on synthetic scans for real data)."""
    data = config.data
    if data.val is not None:
        try:
            return folder_validation_volumes(data.val, data.contrast, preprocessor)
        except DataError as error:
            raise TrainingError(f"--val {data.val}: {error}") from None
    val = synthetic_validation_volumes(data.val_contrasts, data.val_lesions, data.val_healthy, config.train.seed,
                                       preprocessor, cache)
    return val if data.data is None else [v for v in val if not v.healthy]


def _hold_out_healthy(config: Config, train: list[ModelVolume],
                      val: list[ModelVolume]) -> tuple[list[ModelVolume], list[ModelVolume], int]:
    """(training, validation, how many held out): with real training data and no healthy
    validation volume, ``data.heldout_fraction`` of the training scans, drawn from the seed, become
    the healthy validation volumes the thresholds are calibrated on."""
    data = config.data
    if data.data is None or any(v.healthy for v in val):
        return train, val, 0
    held = max(1, round(data.heldout_fraction * len(train))) if data.heldout_fraction > 0 else 0
    if held == 0 or held >= len(train):
        raise TrainingError(f"--data {data.data}: {len(train)} scan(s): too few to hold out healthy scans for the "
                            "thresholds (give --val with healthy cases, or more scans)")
    order = np.random.default_rng(config.train.seed).permutation(len(train))
    heldout = [ModelVolume(v.image, v.mask, None, v.name, None, data.contrast or "", "none")
               for v in (train[i] for i in order[:held])]
    return [train[i] for i in sorted(order[held:])], val + heldout, held


def _prior_description(config: Config, train: list[ModelVolume], template_prior: bool) -> str:
    """Whether the anatomical prior is on, and from which tissue maps, in words."""
    if config.model.kind != "dal":
        return "not used by this model"
    if config.loss.prior <= 0:
        return "off (loss.prior is 0)"
    if template_prior:
        return "on (MNI152 tissue maps: the scans are registered to MNI152 space)"
    if all(v.tissue is not None for v in train):
        return "on (tissue maps of the training scans)"
    return ("OFF: the training scans have no tissue maps (give tissue labels with the data, or register "
            "the scans to MNI152 space with --register, to turn it on)")


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


def validate(model: nn.Module, volumes: list[ModelVolume], config: Config, device: torch.device,
             population: HealthyPopulation | None = None):
    """Scores every validation volume (against ``population`` where given); returns (metrics,
    thresholds, example). AP, AUROC and Dice are means over the lesion volumes (``ap_<contrast>``,
    ``ap_<lesion>`` per group); the thresholds come from the healthy ones (1% and 5% false
    positives); ``example`` is the (volume, scored maps) pair with the largest lesion, for the
    image grid."""
    largest = max((v for v in volumes if not v.healthy), key=lambda v: int(v.label.sum()), default=None)
    scored = [(volume, _score_validation_volume(model, volume, config, device, anatomy_maps=volume is largest,
                                                population=population)) for volume in volumes]
    healthy = [(v, o) for v, o in scored if v.healthy]
    lesion = [(v, o) for v, o in scored if not v.healthy]
    thresholds, reference = _calibration(healthy)
    at_5_percent = [threshold_for(thresholds, 0.05, v.contrast or None)[0] for v, _ in lesion] if thresholds else None
    result = evaluate([o["score"] for _, o in lesion], [torch.from_numpy(v.label) for v, _ in lesion],
                      [torch.from_numpy(v.mask) for v, _ in lesion], threshold=at_5_percent,
                      min_size=config.scoring.min_component_voxels)
    metrics = {"ap": result.mean_average_precision, "auroc": result.mean_auroc, "best_dice": result.mean_best_dice,
               "pooled_ap": result.pooled.average_precision}
    if thresholds:
        metrics["dice_fpr_0.05"] = result.mean_dice_at_threshold
    metrics.update(reference)
    metrics.update(_group_aps([volume for volume, _ in lesion], result.per_volume))
    example = next(pair for pair in lesion if pair[0] is largest)
    return metrics, thresholds, example


def _score_validation_volume(model: nn.Module, volume: ModelVolume, config: Config, device: torch.device,
                             anatomy_maps: bool = False, population: HealthyPopulation | None = None,
                             residual_map: bool = False) -> dict:
    scoring = config.scoring
    return score_volume(model, volume.image, volume.mask, config.preprocessing.spacing,
                        median_mm=scoring.median_for(volume.contrast or None),
                        erode_mm=scoring.erode_mm, batch_size=scoring.batch_size, device=device,
                        disagreement=scoring.disagreement,
                        sign=lesion_sign(scoring.polarity, volume.contrast or None, config.model.kind),
                        normalise=scoring.normalise, flip_average=scoring.flip_average,
                        population=population.for_contrast(volume.contrast) if population else None,
                        population_weight=scoring.population_weight,
                        population_median_mm=scoring.population_median_for(volume.contrast or None),
                        residual_map=residual_map, tissue_prior=scoring.tissue_prior,
                        white_matter=white_matter_prior(config.preprocessing),
                        contrast=volume.contrast or None, anatomy_maps=anatomy_maps)


def healthy_population_volumes(config: Config, train: list[ModelVolume]) -> list[ModelVolume]:
    """The healthy population a scan is compared with (``scoring.population``, the z-score), in
    MNI152 space: ``scoring.population_volumes`` synthetic healthy subjects per contrast (a
    population of its own seed stream), or with ``--data`` the healthy training scans ``train``;
    only the contrasts with two or more (scans of an unknown contrast, with ``--data``, are one)."""
    if config.data.data is None:
        volumes = synthetic_population_volumes(config.scoring.population_volumes, config.data.synthetic_contrasts,
                                               config.train.seed, Preprocessor(config.preprocessing),
                                               cache_folder(config.data.cache))
    else:
        volumes = [v for v in train if v.healthy]
    counts = {c: sum(v.contrast == c for v in volumes) for c in {v.contrast for v in volumes}}
    volumes = [v for v in volumes if counts[v.contrast] >= 2]
    if not volumes:
        raise TrainingError(f"no contrast has two healthy scans to fit the healthy population on (scans per "
                            f"contrast: {counts or 'none'})")
    return volumes


def fit_healthy_population(model: nn.Module, config: Config, train: list[ModelVolume],
                           device: torch.device) -> HealthyPopulation:
    """``scoring.population``: the healthy population (:func:`healthy_population_volumes`) of
    ``model``'s residuals and intensities, per contrast."""
    volumes = healthy_population_volumes(config, train)
    groups: dict[str, tuple[list, list, list]] = {}
    for volume in volumes:
        residuals, images, masks = groups.setdefault(volume.contrast, ([], [], []))
        residuals.append(_score_validation_volume(model, volume, config, device, residual_map=True)["residual"])
        images.append(volume.image)
        masks.append(volume.mask)
    return fit_population({c: g[0] for c, g in groups.items()}, {c: g[1] for c, g in groups.items()},
                          {c: g[2] for c, g in groups.items()}, config.preprocessing.spacing,
                          config.scoring.population_registration_mm)


def _calibration(healthy: list[tuple[ModelVolume, dict]]) -> tuple[dict, dict]:
    """(thresholds, reference) from the scored healthy volumes: the thresholds at 1% and 5% false
    positives over all of them and over those of each contrast, and the population statistic of a
    healthy scan; both empty without healthy volumes."""
    if not healthy:
        return {}, {}
    groups = {None: healthy}
    for volume, scored in healthy:
        if volume.contrast:
            groups.setdefault(volume.contrast, []).append((volume, scored))
    thresholds = {threshold_key(fpr, contrast): threshold_at_fpr([o["score"] for _, o in group], fpr,
                                                                 [torch.from_numpy(v.mask) for v, _ in group])
                  for contrast, group in groups.items() for fpr in FPRS}
    # What a healthy scan of the training kind leaves: dal infer's population distance is relative to it.
    reference = {POPULATION_KEY: float(np.median([population_statistic(o["score"][torch.from_numpy(v.mask)].numpy()
                                                                       * o["residual_scale"]) for v, o in healthy]))}
    return thresholds, reference


def _group_aps(volumes: list[ModelVolume], per_volume) -> dict[str, float]:
    """Mean AP per contrast (``ap_<contrast>``) and per lesion type (``ap_<lesion>``), in name order."""
    groups: dict[str, list[float]] = {}
    for volume, metrics in zip(volumes, per_volume):
        for group in (f"ap_{volume.contrast}" if volume.contrast else None, f"ap_{volume.lesion}" if volume.lesion else None):
            if group and not math.isnan(metrics.average_precision):
                groups.setdefault(group, []).append(metrics.average_precision)
    return {group: float(np.mean(values)) for group, values in sorted(groups.items())}


def calibrate(model: nn.Module, config: Config,
              device: torch.device = torch.device("cpu")) -> tuple[dict, dict, HealthyPopulation | None]:
    """(metrics, thresholds, population) of a trained ``model`` on ``config``'s validation data,
    scored as ``config.scoring`` says (with ``scoring.population``, against the healthy population
    fitted first): what a checkpoint holds, computed again when a scoring setting changes
    (``scripts/checkpoint_variant.py --recalibrate``)."""
    train, volumes = _load_data(config, rank=0)
    population = fit_healthy_population(model, config, train, device) if config.scoring.population else None
    metrics, thresholds, _ = validate(model, volumes, config, device, population)
    return metrics, thresholds, population


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


# ------------------------------------------------------------------------------------ the run


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
        return Trainer(config, Path(out), resume, progress).run()


class _ImageRate:
    """Images per second of training steps alone (validations left out): over the last couple of
    seconds, for the progress line, and over every step of this process, for the summary."""

    WINDOW_S = 2.0

    def __init__(self):
        self.current = float("nan")
        self.step_seconds, self.step_images = 0.0, 0
        self.restart_window()

    def restart_window(self) -> None:
        self.window_start, self.window_images = time.perf_counter(), 0

    def count(self, images: int, step_started: float) -> None:
        self.window_images += images
        now = time.perf_counter()
        self.step_seconds, self.step_images = self.step_seconds + now - step_started, self.step_images + images
        if now - self.window_start > self.WINDOW_S:
            self.current, self.window_start, self.window_images = self.window_images / (now - self.window_start), now, 0

    def overall(self) -> float | None:
        return round(self.step_images / self.step_seconds, 1) if self.step_seconds > 0 else None


class Trainer:
    """One leg of a run in the prepared run folder ``out`` (:func:`train` prepares it), in the
    manner of nnU-Net's ``nnUNetTrainer``: :meth:`run` lists the steps, each a method. Every
    process trains; process 0 alone validates, logs and writes."""

    def __init__(self, config: Config, out: Path, resume: bool, progress: bool):
        self.config, self.out, self.resume, self.progress = config, out, resume, progress
        self.rank, self.world = _distributed()
        self.last_path, self.best_path = out / "last.safetensors", out / "best.safetensors"
        self.state = RunState()
        self.thresholds: dict = {}  # the latest validation's, saved with every checkpoint
        self.writer = self.bar = None

    def run(self) -> dict:
        """Train until the steps or the minutes run out; returns :func:`train`'s summary."""
        self.set_up_process()
        self.load_data()
        self.create_model()
        if self.resume:
            self.load_last_checkpoint()
        else:
            self.start_weights()
        self.choose_precision()
        self.start_leg()
        self.open_logs()
        self.train_steps()
        self.fit_population()
        return self.finish()

    # ---------------------------------------------------------------- set-up

    def set_up_process(self) -> None:
        tc = self.config.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        torch.use_deterministic_algorithms(tc.deterministic, warn_only=True)
        self.device = resolve_device(tc.device, self.rank)

    def load_data(self) -> None:
        """The training and validation volumes, and the slices the steps draw their batches from."""
        tc = self.config.train
        self.train_volumes, self.val_volumes = _load_data(self.config, self.rank)
        self.dataset = SliceDataset(self.train_volumes, self.config.augmentation, seed=tc.seed,
                                    min_brain_fraction=self.config.data.min_brain_fraction)
        if len(self.dataset) < tc.batch_size * self.world:
            raise TrainingError(f"train.batch_size: {tc.batch_size} x {self.world} process(es) is more than the "
                                f"{len(self.dataset)} training slices")
        self.steps_per_epoch = len(self.dataset) // (tc.batch_size * self.world)
        self.val_every = tc.val_every or self.steps_per_epoch

    def create_model(self) -> None:
        """The model from the seed (fitted to the population, for zscore) and its optimizer (none
        for the baselines that learn nothing)."""
        torch.manual_seed(self.config.train.seed)
        population = None
        if self.config.model.kind == "zscore":
            population = healthy_population_volumes(self.config, self.train_volumes)
            contrasts = sorted({v.contrast for v in population} - {""})
            self.config = self.config.replace({"model.contrasts": contrasts})
        # channels-last: oneDNN's convolutions of few channels are faster in it on the CPU (the bf16
        # step of DAL 1.56x, of DAE 1.35x: benchmarks/bench_models.py); inputs of one channel are
        # channels-last already.
        self.model = build_model(self.config.model, self.config.loss, self.config.preprocessing.shape).to(
            self.device, memory_format=torch.channels_last)
        self.learns = any(parameter.requires_grad for parameter in self.model.parameters())  # not intensity, zscore
        if population is not None:
            self.model.fit_population([v.image for v in population], [v.mask for v in population],
                                      [v.contrast for v in population])
            _say(f"fitted the healthy population's mean and std per voxel on {len(population)} scans "
                 f"({', '.join(self.config.model.contrasts) or 'one contrast'})", self.rank)
        self.optimizer = (torch.optim.AdamW(self.model.parameters(), lr=self.config.train.lr,
                                            weight_decay=self.config.train.weight_decay) if self.learns else None)

    def start_weights(self) -> None:
        """A new run: this process's seed (noise and drop-out differ per process) and, with
        ``train.init``, a checkpoint's weights."""
        tc = self.config.train
        torch.manual_seed(tc.seed + 1000 * self.rank)
        if tc.init is not None:
            self.state.init = _initial_weights(self.model, tc.init, self.rank)

    def choose_precision(self) -> None:
        """train.amp as this run trains: "bf16" or "off" as asked; "auto" is bf16 on CUDA, float32 on a
        CPU without native bf16, and on one with it whichever a timed step of this model measures
        faster (process 0 times, every process follows), once per run: a resumed run keeps it."""
        amp, tc = self.state.amp, self.config.train
        if tc.amp != "auto" or not self.learns:
            amp = tc.amp if self.learns else "off"
        elif amp is None and (self.device.type == "cuda" or not cpu_has_bf16()):
            amp = "bf16" if self.device.type == "cuda" else "off"
        elif amp is None:
            faster = False
            if self.rank == 0:
                first = self.epoch_batches()[0]
                faster, seconds = bf16_step_is_faster(self.model, _collate([self.dataset[int(i)] for i in first],
                                                                           self.device))
                _say(f"train.amp auto: {'bf16' if faster else 'float32'}, the faster step on this CPU (float32 "
                     f"{seconds['off']:.2f} s, bf16 {seconds['bf16']:.2f} s)", self.rank)
            if self.world > 1:
                flag = torch.tensor([float(faster)])
                dist.broadcast(flag, 0)
                faster = bool(flag.item())
            amp = "bf16" if faster else "off"
        self.state.amp = amp

    def start_leg(self) -> None:
        """This leg's machine in the record, and the model wrapped for DistributedDataParallel
        (after its weights are loaded: DDP starts every process from process 0's)."""
        hardware = hardware_description(self.device, self.world)
        if hardware not in self.state.hardware:
            self.state.hardware.append(hardware)
        self.net = self.model
        if self.world > 1 and self.learns:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ---------------------------------------------------------------- checkpoints

    def load_last_checkpoint(self) -> None:
        """A resumed run: weights, optimizer, torch's generator, the run's state and thresholds
        from ``last.safetensors``, made with the same model settings."""
        checkpoint = load_checkpoint(self.last_path)
        if checkpoint.model.config != self.config.model:  # as built: a setting added since takes its default
            raise TrainingError(f"--resume: the model settings differ from those of {self.last_path}")
        self.model.load_state_dict(checkpoint.model.state_dict())
        if self.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        torch.set_rng_state(checkpoint.rng_state)
        self.state = RunState.from_dict(checkpoint.training["state"])
        self.thresholds = checkpoint.thresholds
        _say(f"resuming {self.out} at step {self.state.step} (epoch {self.state.epoch})", self.rank)

    def save(self, path: Path, metrics: dict | None = None, resumable: bool = True) -> None:
        """Process 0 writes a checkpoint: a resumable one with the optimizer and the run's state, the
        best one with what its weights cost alone."""
        if self.rank != 0:
            return
        config = self.config
        save_checkpoint(path, self.model, model_kind=config.model.kind, config=config.to_dict(),
                        preprocessing=config.preprocessing.to_dict(),
                        thresholds={k: v for k, v in self.thresholds.items() if is_threshold_key(k)},
                        metrics=metrics, optimizer=self.optimizer if resumable else None,
                        training={**self.state.record(), "state": self.state.to_dict()} if resumable
                        else self.state.record())

    def checkpoint_due(self) -> bool:
        every = self.config.train.checkpoint_every
        return bool(every) and self.state.step % every == 0

    # ---------------------------------------------------------------- the steps

    def train_steps(self) -> None:
        """Steps until the step limit or the time budget, every process stopping at the same step;
        a validation when due and at the end, a checkpoint in between as ``checkpoint_every`` says."""
        self.model.train()
        self.started = time.perf_counter() - self.state.seconds
        self.rate = _ImageRate()
        self.last_validated = self.state.step if self.resume else -1
        self.validated_at = self.state.seconds
        tc = self.config.train
        stop = not self.learns or (tc.max_steps is not None and self.state.step >= tc.max_steps)
        while not stop:
            for indices in self.epoch_batches():
                step_started = time.perf_counter()
                losses = self.step(indices)
                self.count_step(step_started)
                self.log_step(losses)
                stop = self.out_of_budget()
                if self.state.position == self.steps_per_epoch:
                    self.state.epoch, self.state.position = self.state.epoch + 1, 0
                if stop or self.validation_due():
                    self.validate_between_steps()
                elif self.checkpoint_due():
                    self.save(self.last_path)
                    self.log_checkpoint(losses)
                if stop:
                    break
        if self.last_validated != self.state.step:
            self.validate_and_save()

    def epoch_batches(self) -> torch.Tensor:
        """This process's batches (rows of slice indices) left in the epoch: the epoch's permutation,
        drawn from (seed, epoch), cut into steps x processes x batch, from the position on."""
        tc = self.config.train
        self.dataset.set_epoch(self.state.epoch)
        order = torch.randperm(len(self.dataset),
                               generator=torch.Generator().manual_seed(tc.seed * 100003 + self.state.epoch))
        batches = order[: self.steps_per_epoch * tc.batch_size * self.world].view(
            self.steps_per_epoch, self.world, tc.batch_size)[:, self.rank]
        return batches[self.state.position:]

    def step(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step on the slices ``indices``; returns the losses."""
        batch = _collate([self.dataset[int(i)] for i in indices], self.device)
        with autocast_context(self.state.amp, self.device):
            losses = self.net(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        losses = {key: value.detach() for key, value in losses.items()}
        self.optimizer.step()
        return losses

    def count_step(self, step_started: float) -> None:
        self.state.step += 1
        self.state.position += 1
        self.state.seconds = time.perf_counter() - self.started
        self.rate.count(self.config.train.batch_size * self.world, step_started)

    def out_of_budget(self) -> bool:
        """Out of steps or minutes; under DDP, as soon as one process is, so that all stop together."""
        tc = self.config.train
        out_of_steps = tc.max_steps is not None and self.state.step >= tc.max_steps
        out_of_time = tc.minutes is not None and self.state.seconds >= 60 * tc.minutes
        stop = out_of_steps or out_of_time
        if self.world > 1:
            flag = torch.tensor([float(stop)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    # ---------------------------------------------------------------- validation

    def validation_due(self) -> bool:
        tc = self.config.train
        if tc.val_minutes is not None:
            return self.state.seconds - self.validated_at >= 60 * tc.val_minutes
        return self.state.step % self.val_every == 0

    def validate_between_steps(self) -> None:
        """A validation in the loop: its time counts as the run's, not in the images' rate."""
        self.validate_and_save()
        self.state.seconds = self.validated_at = time.perf_counter() - self.started
        self.rate.restart_window()
        if self.bar is not None:
            self.bar.unpause()

    def validate_and_save(self) -> None:
        """Process 0 validates, logs, keeps the weights as best if their AP is, and saves the last
        checkpoint; every process waits for it."""
        if self.rank == 0:
            state = self.state
            _say(f"step {state.step}: validating on {len(self.val_volumes)} volume(s)", self.rank)
            metrics, self.thresholds, example = validate(self.model, self.val_volumes, self.config, self.device)
            self.log_validation(metrics, example)
            ap = metrics["ap"] if metrics["ap"] is not None else -math.inf
            if ap > state.best_ap:
                state.best_ap, state.best_step = ap, state.step
                self.save(self.best_path, metrics, resumable=False)
            _say(f"step {state.step}: validation AP {ap:.3f} (best {state.best_ap:.3f} at step {state.best_step})",
                 self.rank)
            self.save(self.last_path, metrics)
        self.last_validated = self.state.step
        self.model.train()
        if self.world > 1:
            dist.barrier()

    def fit_population(self) -> None:
        """With ``scoring.population``, process 0 fits the healthy population of the best weights
        (once, at the end: it depends on the weights) and writes best.safetensors again with it,
        its thresholds and metrics calibrated against it (the best step was chosen on the plain
        residual)."""
        if not self.config.scoring.population or self.rank != 0 or not self.best_path.exists():
            return
        best = load_checkpoint(self.best_path, self.device)
        plain_ap = best.metrics.get("plain_residual_ap", best.metrics.get("ap"))  # a resumed run's best may have it
        _say("fitting the healthy population of the best weights (scoring.population)", self.rank)
        population = fit_healthy_population(best.model, self.config, self.train_volumes, self.device)
        metrics, thresholds, _ = validate(best.model, self.val_volumes, self.config, self.device, population)
        save_checkpoint(self.best_path, best.model, model_kind=best.model_kind, config=best.config,
                        preprocessing=best.preprocessing, metrics={**metrics, "plain_residual_ap": plain_ap},
                        thresholds={k: v for k, v in thresholds.items() if is_threshold_key(k)},
                        training=best.training, population=population)
        _say(f"population: {population_summary(population)}; validation AP against it {metrics['ap']:.3f} (plain "
             f"residual {plain_ap if plain_ap is not None else float('nan'):.3f}; summary.json's best_ap is the plain "
             "one)", self.rank)

    # ---------------------------------------------------------------- logs

    def open_logs(self) -> None:
        """TensorBoard and the progress bar (process 0), and a word on a run with no end."""
        tc = self.config.train
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.state.step if self.resume else None)
            if self.progress:
                from tqdm import tqdm

                # disable=None: no bar where stderr is no terminal (a log file), a line per checkpoint instead.
                self.bar = tqdm(total=tc.max_steps, initial=self.state.step, desc=f"dal train {self.config.model.kind}",
                                unit="step", dynamic_ncols=True, disable=None)
        if self.learns and tc.max_steps is None and tc.minutes is None:
            _say("neither --max-steps nor --minutes: training runs until you stop it (Ctrl-C); last.safetensors keeps "
                 f"it resumable (every {tc.checkpoint_every or self.val_every} steps; --resume continues it)", self.rank)

    def log_step(self, losses: dict[str, torch.Tensor]) -> None:
        """The progress bar, and every ``log_every`` steps the losses and the rate in TensorBoard."""
        if self.rank != 0:
            return
        step, log_every = self.state.step, self.config.train.log_every
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{float(losses['loss']):.4f}", img_s=f"{self.rate.current:.0f}", refresh=False)
        if log_every and step % log_every == 0:
            for key, value in losses.items():
                self.writer.add_scalar(f"train/{key}", float(value), step)
            if not math.isnan(self.rate.current):
                self.writer.add_scalar("train/images_per_second", self.rate.current, step)

    def log_checkpoint(self, losses: dict[str, torch.Tensor]) -> None:
        """A line per checkpoint where there is no progress bar (a log file)."""
        if self.bar is None or self.bar.disable:
            max_steps = self.config.train.max_steps
            limit = f"/{max_steps}" if max_steps else ""
            _say(f"step {self.state.step}{limit}: loss {float(losses['loss']):.4f}, {self.rate.current:.0f} images/s, "
                 f"{self.state.seconds / 60:.1f} min", self.rank)

    def log_validation(self, metrics: dict, example: tuple[ModelVolume, dict]) -> None:
        """A line of ``metrics.jsonl``, the scalars and the image grid of the largest lesion in TensorBoard."""
        state = self.state
        record = {"step": state.step, "epoch": state.epoch, "seconds": round(state.seconds, 1), **metrics,
                  **{f"threshold_{k}": v for k, v in self.thresholds.items()}}
        append_line(self.out / "metrics.jsonl", json.dumps(record, allow_nan=False))
        for key, value in metrics.items():
            if value is not None:
                self.writer.add_scalar(f"val/{key}", value, state.step)
        volume, scored = example
        self.writer.add_image("val/scan_anatomy_restored_phi_score_label",
                              _image_grid(volume, scored, self.config.model.classes), state.step)

    def finish(self) -> dict:
        """Close the logs; process 0 writes ``summary.json``; returns it with the trained model."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        state = self.state
        summary = {"steps": state.step, "epochs": state.epoch, "seconds": round(state.seconds, 1),
                   "images_per_second": self.rate.overall(),
                   "best_ap": None if state.best_ap == -math.inf else state.best_ap, "best_step": state.best_step,
                   "last": str(self.last_path), "best": str(self.best_path), "version": __version__}
        if self.rank == 0:
            write_text_atomic(json.dumps(summary, indent=1, allow_nan=False), self.out / "summary.json")
        if self.world > 1:
            dist.barrier()
        return {**summary, "model": self.model}
