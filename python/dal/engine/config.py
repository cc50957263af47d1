"""The training configuration: every setting in one tree of dataclasses, read from YAML strictly
(unknown keys and wrong types are errors that name the key), written back with the run.

Sections: ``model`` (:class:`~dal.models.ModelConfig`), ``loss`` (:class:`~dal.models.LossConfig`),
``data`` (:class:`DataConfig`), ``train`` (:class:`TrainConfig`), ``scoring``
(:class:`ScoringConfig`), ``preprocessing`` (:class:`~dal.data.PreprocessConfig`),
``augmentation`` (:class:`~dal.data.Augmentation`). ``configs/default.yaml`` is the default,
written out.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dal.data.augment import Augmentation
from dal.data.preprocess import PreprocessConfig
from dal.errors import ConfigError, clip, short_repr
from dal.models.config import LossConfig, ModelConfig

CONFIG_MAX_BYTES = 1_000_000  # a config is a page of settings; more is not one
POLARITIES = ("lesion", "absolute")  # scoring.polarity


@dataclass
class DataConfig:
    """Where the scans come from.

    Attributes:
        data: a data folder (any layout ``dal.data.find_cases`` reads); None: the embedded
            synthetic population, generated on the fly.
        contrast: the contrast to train on from ``data`` (None: the only one each case has).
        val: a folder of labelled volumes for validation; None: synthetic lesion volumes.
        synthetic_contrasts: contrasts of the synthetic training population.
        train_volumes: synthetic training subjects.
        val_contrasts, val_lesions: the synthetic validation volumes: one subject per pair.
        val_healthy: synthetic healthy validation subjects per contrast (the thresholds). Four:
            with one, each contrast's 1% threshold flagged 5.5% of the synthetic test's healthy
            FLAIR brains and 7.8% of the real ones; with four, 2.9% and 4.2% (raw residual; 1.9%
            and 0.3% with ``scoring.normalise`` and ``flip_average``: README, Accuracy).
        heldout_fraction: share of ``data`` kept out of training to calibrate the thresholds
            (healthy scans of the same kind as the training data), when ``val`` has no healthy case.
        cache: folder for generated synthetic volumes (None: ``$DAL_CACHE`` or ~/.cache/dal).
        min_brain_fraction: least share of a slice's pixels in the brain for it to be trained on.
    """

    data: str | None = None
    contrast: str | None = None
    val: str | None = None
    synthetic_contrasts: tuple[str, ...] = ("t1", "t2", "flair", "pd")
    train_volumes: int = 32
    val_contrasts: tuple[str, ...] = ("t1", "t2", "flair")
    val_lesions: tuple[str, ...] = ("tumour", "stroke", "wmh")
    val_healthy: int = 4
    heldout_fraction: float = 0.1
    cache: str | None = None
    min_brain_fraction: float = 0.05

    def __post_init__(self):
        if self.train_volumes < 1:
            raise ConfigError(f"data.train_volumes: expected at least 1, got {self.train_volumes}")
        if self.val_healthy < 0:
            raise ConfigError(f"data.val_healthy: expected at least 0, got {self.val_healthy}")
        if not 0 <= self.heldout_fraction < 1:
            raise ConfigError(f"data.heldout_fraction: expected a fraction in [0, 1), got {self.heldout_fraction}")


@dataclass
class TrainConfig:
    """The optimisation.

    Attributes:
        batch_size: slices per step (per process under torchrun).
        lr: Adam learning rate.
        weight_decay: AdamW weight decay.
        max_steps: stop after this many steps (None: no step limit).
        minutes: stop after this much training time (None: no time limit).
        seed: the seed of everything random (data, initialisation, noise).
        deterministic: deterministic algorithms (a resumed run then ends with the same weights).
        amp: mixed precision of the training step: "off", "bf16" (bfloat16 autocast) or "auto"
            (bf16 on CUDA; on a CPU with native bfloat16, whichever of the two a timed step of the
            model measures faster at the start of the run, kept when it resumes; float32 on other
            CPUs). Scoring always runs in float32.
        device: "auto" (CUDA when present), "cpu" or "cuda[:N]".
        threads: torch intra-op threads on the CPU (0: torch's default).
        log_every: steps between TensorBoard scalars.
        val_every: steps between validations (0: once per epoch of the training slices).
        val_minutes: minutes of training between validations, instead of ``val_every`` (None:
            use ``val_every``). Under a time budget, models of different speed then spend the
            same share of it on validation.
        checkpoint_every: steps between resumable checkpoints (0: at each validation only).
        init: start from the weights of this checkpoint ("pretrained": the shipped default) instead
            of a random initialisation: fine-tuning, e.g. on your own healthy scans. Its model
            settings must build the same network (the training settings may differ).
    """

    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    max_steps: int | None = None
    minutes: float | None = None
    seed: int = 0
    deterministic: bool = True
    amp: str = "auto"
    device: str = "auto"
    threads: int = 0
    log_every: int = 10
    val_every: int = 0
    val_minutes: float | None = None
    checkpoint_every: int = 50
    init: str | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size: expected at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr: expected a positive number, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ConfigError(f"train.max_steps: expected at least 0, got {self.max_steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"train.minutes: expected a positive number, got {self.minutes}")
        if self.val_minutes is not None and not self.val_minutes > 0:
            raise ConfigError(f"train.val_minutes: expected a positive number, got {self.val_minutes}")
        if self.amp not in ("off", "bf16", "auto"):
            raise ConfigError(f"train.amp: expected off, bf16 or auto, got {self.amp!r}")
        for name in ("log_every", "val_every", "checkpoint_every", "threads", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: expected at least 0, got {getattr(self, name)}")


def median_mm_for(median_mm: float, contrast_median_mm: dict[str, float], contrast: str | None) -> float:
    """The median cube's side for a scan of ``contrast`` (None: unknown): its own, else ``median_mm``."""
    return contrast_median_mm.get(contrast, median_mm) if contrast else median_mm


@dataclass
class ScoringConfig:
    """Post-processing of the residual (docs/design.md: sizes in millimetres).

    Attributes:
        median_mm: side of the median cube.
        contrast_median_mm: the median cube's side for scans of these contrasts instead (T1 and T2
            by default: 10 mm, where the PHI's errors on healthy tissue are larger than on FLAIR and
            a 5 mm median leaves them; FLAIR keeps 5 mm, which small white-matter lesions need).
        erode_mm: erosion radius of the brain mask.
        batch_size: slices per forward pass.
        min_component_voxels: components smaller than this are removed before thresholded Dice.
        disagreement: weight of DAL's anatomy disagreement term, ``w * [A != A_hat]`` added to
            the residual before the median (docs/design.md's optional term; 0: off).
        polarity: "lesion": only the departure in the direction lesions take on the scan's
            contrast counts (darker than the PHI on T1, brighter on T2, FLAIR and PD; both where
            the contrast is unknown; see :data:`dal.engine.scoring.LESION_SIGN`); "absolute":
            ``|x - PHI|`` on every contrast (checkpoints before this setting).
        normalise: divide each scan's residual by its median ``|x - PHI|`` over the brain (how far
            the PHI misses healthy tissue on that scan), so that one threshold holds across scans
            whose PHI misses by different amounts (noise, thick slices, a real brain); a scaling per
            scan, so each scan's AP is unchanged. False: the raw residual (checkpoints before it).
        flip_average: the PHI is the mean of the slice's PHI and that of its left-right mirror
            (mirrored back): the model's errors on healthy tissue partly differ between the two and
            average out, a lesion stays out of both (twice the model's time).
        population: score the scan against the healthy population as well, in MNI152 space
            (needs ``preprocessing.register``; :mod:`dal.engine.population`): the residual divided
            by its spread over healthy scans at that place (plus that spread's median over the
            brain), plus ``population_weight`` times the scan's one-sided z-score against the
            population's intensities. Fitted after training on healthy scans
            (``population_volumes``), stored in the checkpoint. False: the plain residual.
        population_weight: the weight of the population's intensity z-score (0: the residual's
            spread alone).
        population_median_mm: the median cube's side of that z-score for scans of these
            contrasts, where it differs from the residual's: the z-score is then filtered on its
            own and added after the residual's median. FLAIR's 2 mm (one voxel of model space:
            no median) keeps its WMH of a few mm, which a lesion-free PHI residual still needs 5 mm
            to clear of healthy errors (README, Accuracy).
        population_registration_mm: the misregistration the population's intensity std allows
            for (:func:`~dal.engine.population.allow_for_misregistration`): an affine
            registration leaves a real brain's folds mm from the population's.
        tissue_prior: the weight of the anatomy against MNI152's tissue maps, in MNI152 space
            (``preprocessing.register``; DAL, whose PHI has an anatomy): where the PHI's anatomy
            has CSF or grey matter at a place that is white matter in MNI152 (probability above one
            half), up to this weight is added after the medians
            (:func:`~dal.engine.population.tissue_prior_term`). 0: off (checkpoints before it).
        population_volumes: synthetic healthy subjects per contrast the population is fitted on
            (training on the synthetic population; with ``--data``, the training scans are), and
            the z-score baseline's (``model.kind`` zscore).
    """

    median_mm: float = 5.0
    contrast_median_mm: dict[str, float] = field(default_factory=lambda: {"t1": 10.0, "t2": 10.0})
    erode_mm: float = 2.0
    batch_size: int = 32
    min_component_voxels: int = 5
    disagreement: float = 0.0
    polarity: str = "lesion"
    normalise: bool = True
    flip_average: bool = True
    population: bool = False
    population_weight: float = 0.6
    population_median_mm: dict[str, float] = field(default_factory=lambda: {"flair": 2.0})
    population_registration_mm: float = 6.0
    tissue_prior: float = 0.5
    population_volumes: int = 24

    def median_for(self, contrast: str | None) -> float:
        """The median cube's side for a scan of ``contrast`` (None: unknown), mm."""
        return median_mm_for(self.median_mm, self.contrast_median_mm, contrast)

    def population_median_for(self, contrast: str | None) -> float:
        """The median cube's side of the population's z-score for a scan of ``contrast``, mm."""
        return median_mm_for(self.median_for(contrast), self.population_median_mm, contrast)

    def __post_init__(self):
        sides = {"median_mm": self.median_mm, **{f"contrast_median_mm.{c}": v for c, v in self.contrast_median_mm.items()},
                 **{f"population_median_mm.{c}": v for c, v in self.population_median_mm.items()}}
        for name, side in sides.items():
            if not side >= 0:
                raise ConfigError(f"scoring.{name}: expected a size in mm >= 0, got {side}")
        if not self.disagreement >= 0:
            raise ConfigError(f"scoring.disagreement: expected a weight >= 0, got {self.disagreement}")
        if self.polarity not in POLARITIES:
            raise ConfigError(f"scoring.polarity: expected one of {', '.join(POLARITIES)}, got {self.polarity!r}")
        if not self.population_weight >= 0:
            raise ConfigError(f"scoring.population_weight: expected a weight >= 0, got {self.population_weight}")
        if not self.population_registration_mm >= 0:
            raise ConfigError(f"scoring.population_registration_mm: expected a size in mm >= 0, got "
                              f"{self.population_registration_mm}")
        if not self.tissue_prior >= 0:
            raise ConfigError(f"scoring.tissue_prior: expected a weight >= 0, got {self.tissue_prior}")
        if self.population_volumes < 2:
            raise ConfigError(f"scoring.population_volumes: expected at least 2, got {self.population_volumes}")


# How a checkpoint scored before each of these settings existed: a checkpoint whose config lacks
# the key was calibrated so, whatever today's default is.
SCORING_BEFORE_SETTING = {"contrast_median_mm": {}, "polarity": "absolute", "normalise": False, "flip_average": False,
                          "population_median_mm": {}, "tissue_prior": 0.0}


def checkpoint_scoring(config: dict) -> dict:
    """The scoring settings of a checkpoint's stored ``config`` (a plain dict), with the
    settings it predates as they were before them (:data:`SCORING_BEFORE_SETTING`)."""
    return {**SCORING_BEFORE_SETTING, **(config.get("scoring") or {})}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self):
        if self.scoring.population and not self.preprocessing.register:
            raise ConfigError("scoring.population: needs preprocessing.register (the population's maps are in MNI152 "
                              "space); set preprocessing.register: true")
        if self.scoring.population and self.data.data is not None and self.data.contrast is None:
            raise ConfigError("scoring.population: with --data, the population is fitted on the training scans of one "
                              "contrast: give it (--contrast, data.contrast)")

    def to_dict(self) -> dict:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        return _build(cls, data, "")

    def replace(self, overrides: dict) -> "Config":
        """A copy with ``{"section.key": value}`` overrides applied (checked like the YAML)."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in data or not isinstance(data[section], dict) or key not in data[section]:
                raise ConfigError(f"{dotted}: unknown setting")
            data[section][key] = value
        return Config.from_dict(data)


def _to_plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _check(value, annotation, where: str):
    """``value`` converted to ``annotation`` (int, float, bool, str, tuples, mappings, X | None,
    nested dataclasses), or a ConfigError naming ``where``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check(value, option, where)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where + ".")
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {short_repr(value)}")
        return {_check(k, key_type, f"{where} key"): _check(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {short_repr(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {short_repr(list(value))}")
        return tuple(_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {short_repr(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {short_repr(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {short_repr(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {short_repr(value)}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {_type_name(annotation)}")


def _build(cls, data, prefix: str):
    section = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(data).__name__} {short_repr(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"expected {', '.join(known)}")
    values = {name: _check(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{section}: {error}") from None


def load_config(path: str | Path | None = None) -> Config:
    """The default config, updated by a YAML file (any subset of keys) when given."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(CONFIG_MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"config {path}: cannot read it: {error.strerror}") from None
    if len(raw) > CONFIG_MAX_BYTES:
        raise ConfigError(f"config {path}: larger than {CONFIG_MAX_BYTES:,} bytes: not a dal config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"config {path}: not a text file (byte {error.start} is not UTF-8); expected YAML") from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path}: not valid YAML: {clip(error, 500)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping of sections, got {type(data).__name__}")
    defaults = Config().to_dict()
    unknown = sorted(set(data) - set(defaults))
    if unknown:
        raise ConfigError(f"config {path}: unknown section(s) {', '.join(unknown)}; expected {', '.join(defaults)}")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config {path}: {section}: expected a mapping, got {type(values).__name__}")
        defaults[section].update(values)
    try:
        return Config.from_dict(defaults)
    except ConfigError as error:
        raise ConfigError(f"config {path}: {error}") from None


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without aliases: a few hundred bytes of nested aliases expand to gigabytes
    (billion laughs), and a config of settings has no use for them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"line {mark.line + 1}: an alias (*name); dal configs do not accept aliases, "
                                 "write the values out")
        return super().compose_node(parent, index)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
