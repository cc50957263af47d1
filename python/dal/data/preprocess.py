"""Preprocessing: a scan to the model's space and back, exactly onto the scan's own grid.

Model space is an axis-aligned RAS grid (array axes = right, anterior, superior) of
``spacing`` mm (2 mm by default) and a fixed ``shape``. :meth:`Preprocessor.forward`:

1. Reorientation and resampling in one step: the scan (any orientation: LPS, LAS, oblique) is
   read through its affine onto an axis-aligned RAS grid of ``spacing`` mm covering its field of
   view (SimpleITK linear interpolation, Gaussian anti-aliasing where the grid gets coarser).
   With ``register=True`` the grid is instead MNI152 space, through an affine registration.
2. Brain mask: the given one (resampled, nearest neighbour); else computed. ``"otsu"``, for
   skull-stripped scans (the field's convention: BraTS ships them, IXI is stripped with HD-BET
   first): Otsu's threshold, lowered to catch dark CSF, then closing, hole filling and the largest
   component. ``"template"``, for scans with a skull: the MNI152 brain mask brought over by affine
   registration, coarse but honest. ``"auto"`` uses the given mask, else ``"otsu"``.
   Optionally (``bias_correction``), SimpleITK's N4 bias field correction inside the mask, fitted
   on a grid four times coarser (the field is smooth; it adds about 1 to 3 s per scan).
3. Crop/pad to ``shape``, centred on the brain (whole voxels: no interpolation).
4. Intensity: zero outside the mask, and scaled so that the median of the healthy bulk of the
   brain maps to ``norm_target``. The bulk is found by rejecting, twice, voxels further than
   2.5 robust standard deviations (1.4826 MAD) from the median: a large bright tumour or dark
   stroke leaves it, bright CSF of T2 scans too, so the scale is that of grey and white matter.
   A high percentile would belong to the tumour and darken every healthy voxel. Nothing is
   clipped: lesions may lie above 1.

:meth:`Preprocessor.inverse` maps a model-space array (a score map, a pseudo-healthy image) back
onto the scan's own voxel grid, affine and header, by resampling through the same affine maps.

The configuration (:class:`PreprocessConfig`) is plain data (:meth:`~PreprocessConfig.to_dict`)
stored in every checkpoint, so inference preprocesses exactly as training did.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from dal.data.io import DataError, Scan, image_like, load_mask, load_scan, save_nifti
from dal.data.masks import otsu_brain_mask
from dal.data.registration import AffineRegistration, register_to_mni
from dal.data.resample import field_of_view_grid, resample, voxel_map
from dal.data.templates import brain_centre, load_mni152
from dal.errors import ArgumentError, ConfigError, reject_unknown_keys

MASK_METHODS = ("auto", "given", "otsu", "template")


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing parameters (plain data: they go into checkpoints).

    Attributes:
        spacing: model-space voxel size, mm (isotropic).
        shape: model-space grid (right, anterior, superior), voxels.
        mask: "auto", "given", "otsu" or "template" (see the module docstring).
        norm_target: the value the median of the healthy bulk maps to. 0.4 keeps the brightest
            healthy tissue of the usual contrasts (CSF in T2) near 1.
        antialias: Gaussian anti-aliasing before downsampling.
        register: work in MNI152 space through an affine registration.
        bias_correction: N4 bias field correction (SimpleITK) in model resolution.
    """

    spacing: float = 2.0
    shape: tuple[int, int, int] = (96, 112, 96)
    mask: str = "auto"
    norm_target: float = 0.4
    antialias: bool = True
    register: bool = False
    bias_correction: bool = False

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) != 3 or min(self.shape) < 4:
            raise ConfigError(f"shape: expected 3 sizes of at least 4 voxels, got {self.shape}")
        if not 0.25 <= float(self.spacing) <= 8:
            raise ConfigError(f"spacing: expected 0.25 to 8 mm, got {self.spacing}")
        if self.mask not in MASK_METHODS:
            raise ConfigError(f"mask: expected one of {MASK_METHODS}, got {self.mask!r}")
        if not float(self.norm_target) > 0:
            raise ConfigError(f"norm_target: expected a positive number, got {self.norm_target}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        reject_unknown_keys(data, cls, "preprocessing config")
        return cls(**data)


@dataclass
class GridState:
    """What :meth:`Preprocessor.inverse` needs: the scan's grid and how model space maps onto it."""

    scan_shape: tuple[int, int, int]
    scan_affine: np.ndarray
    scan_header: nib.Nifti1Header | None
    model_affine: np.ndarray        # model voxel -> model world (RAS mm; MNI space when registered)
    world_to_scan: np.ndarray       # model world -> scan world (identity unless registered)
    scale: float                    # intensity factor applied by forward
    path: Path | None = None

    def to_dict(self) -> dict:
        """Plain data (the header is left out: the scan file holds it)."""
        return {"scan_shape": list(self.scan_shape), "scan_affine": self.scan_affine.tolist(),
                "model_affine": self.model_affine.tolist(), "world_to_scan": self.world_to_scan.tolist(),
                "scale": self.scale, "path": None if self.path is None else str(self.path)}

    @classmethod
    def from_dict(cls, data: dict) -> "GridState":
        return cls(scan_shape=tuple(data["scan_shape"]), scan_affine=np.asarray(data["scan_affine"], float),
                   scan_header=None, model_affine=np.asarray(data["model_affine"], float),
                   world_to_scan=np.asarray(data["world_to_scan"], float), scale=float(data["scale"]),
                   path=None if data.get("path") is None else Path(data["path"]))


@dataclass
class Preprocessed:
    """A scan in model space: ``image`` and ``mask`` of the config's shape, and the way back."""

    image: np.ndarray
    mask: np.ndarray
    state: GridState


def n4_bias_correction(image: np.ndarray, mask: np.ndarray, shrink: int = 4) -> np.ndarray:
    """``image`` divided by the bias field N4 (SimpleITK) estimates inside ``mask``, on a grid
    ``shrink`` times coarser (the field is smooth), evaluated back at full resolution."""
    volume = sitk.GetImageFromArray(np.maximum(image, 0).astype(np.float32))
    brain = sitk.GetImageFromArray(mask.astype(np.uint8))
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50, 50, 30])
    corrector.Execute(sitk.Shrink(volume, [shrink] * 3), sitk.Shrink(brain, [shrink] * 3))
    log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(volume))
    return (image / np.exp(log_field)).astype(np.float32)


def healthy_bulk_median(values: np.ndarray, rounds: int = 2, width: float = 2.5) -> float:
    """Median of the bulk of ``values`` after rejecting, ``rounds`` times, those further than
    ``width`` robust standard deviations (1.4826 MAD) from the median."""
    values = values[values > 0]
    if values.size == 0:
        raise DataError("no positive intensity inside the brain mask")
    for _ in range(rounds):
        median = np.median(values)
        spread = 1.4826 * np.median(np.abs(values - median))
        if spread <= 0:
            break
        kept = values[np.abs(values - median) <= width * spread]
        if kept.size < 0.2 * values.size:
            break
        values = kept
    return float(np.median(values))


def crop_or_pad(volume: np.ndarray, start: np.ndarray, shape) -> np.ndarray:
    """``volume[start : start + shape]``, zero where that window leaves the volume (start may be negative)."""
    out = np.zeros(shape, dtype=volume.dtype)
    source = tuple(slice(max(s, 0), min(s + n, size)) for s, n, size in zip(start, shape, volume.shape))
    target = tuple(slice(src.start - s, src.stop - s) for src, s in zip(source, start))
    if all(src.stop > src.start for src in source):
        out[target] = volume[source]
    return out


# Raised whenever the same scan and config give other model-space arrays (2: the registration sees
# the given brain mask): model-space volumes cached by another version are not reused.
PREPROCESSING_VERSION = 2


def mni_model_affine(config: PreprocessConfig) -> np.ndarray:
    """The voxel-to-world affine of model space when it is MNI152 space (``register``): a grid of
    ``config.spacing`` mm and ``config.shape`` centred on the template brain."""
    affine = np.diag([config.spacing] * 3 + [1.0])
    affine[:3, 3] = brain_centre() - config.spacing * (np.array(config.shape) - 1) / 2
    return affine


def mni_tissue(config: PreprocessConfig) -> np.ndarray:
    """MNI152's tissue maps (3, X, Y, Z: CSF, GM, WM probabilities) on the model space of
    ``config`` when it is MNI152 space (:func:`mni_model_affine`)."""
    template = load_mni152(2)
    index_map = voxel_map(template.affine, mni_model_affine(config))
    return np.stack([resample(t, index_map, config.shape, antialias=config.antialias) for t in template.tissue])


class Preprocessor:
    """Scan -> model space (:meth:`forward`) and back (:meth:`inverse`); see the module docstring."""

    def __init__(self, config: PreprocessConfig | dict | None = None):
        if isinstance(config, dict):
            config = PreprocessConfig.from_dict(config)
        self.config = config or PreprocessConfig()

    def forward(self, scan: Scan | str | os.PathLike, mask: np.ndarray | str | os.PathLike | None = None,
                registration: AffineRegistration | None = None) -> Preprocessed:
        """Bring a scan to model space.

        Args:
            scan: a :class:`Scan` or a NIfTI path.
            mask: brain mask on the scan's grid (bool array or NIfTI path), optional.
            registration: a registration to MNI152 already computed (with ``register``), optional.

        Returns:
            :class:`Preprocessed` with float32 ``image`` and bool ``mask`` of ``config.shape``.
        """
        config = self.config
        if not isinstance(scan, Scan):
            scan = load_scan(scan)
        name = scan.path or "(in memory)"
        if isinstance(mask, (str, os.PathLike)):
            mask = load_mask(mask, scan)
        elif mask is not None:
            mask = np.asarray(mask)
            if mask.shape != scan.data.shape:
                raise DataError(f"mask for scan {name}: shape {mask.shape} differs from the scan's {scan.data.shape}")
        if config.mask == "given" and mask is None:
            raise DataError(f"scan {name}: the preprocessing config asks for a given brain mask "
                            "and none was given")

        if config.register or config.mask == "template":
            registration = registration or register_to_mni(scan, mask)
        if config.register:
            work_shape, work_affine = config.shape, mni_model_affine(config)
            world_to_scan = registration.matrix
        else:
            work_shape, work_affine = field_of_view_grid(scan.affine, scan.data.shape, config.spacing)
            world_to_scan = np.eye(4)

        to_scan = voxel_map(scan.affine, work_affine, world_to_scan)
        image = resample(scan.data, to_scan, work_shape, antialias=config.antialias)
        if mask is not None:
            # Linear interpolation of the mask and a 0.5 threshold: smoother than nearest neighbour.
            brain = resample(mask.astype(np.float32), to_scan, work_shape) >= 0.5
        elif config.mask == "template":
            template = load_mni152(2)
            to_template = voxel_map(template.affine, work_affine, np.linalg.inv(registration.matrix) @ world_to_scan)
            brain = resample(template.mask.astype(np.float32), to_template, work_shape) >= 0.5
        else:
            brain = otsu_brain_mask(image)
        if not brain.any():
            raise DataError(f"scan {name}: the brain mask is empty")
        if config.bias_correction:
            image = n4_bias_correction(image, brain)

        if config.register:
            start = np.zeros(3, int)
        else:
            index = np.argwhere(brain)
            centre = (index.min(axis=0) + index.max(axis=0) + 1) / 2
            start = np.round(centre - np.array(config.shape) / 2).astype(int)
            extent = index.max(axis=0) - index.min(axis=0) + 1
            if np.any(extent > np.array(config.shape)):
                warnings.warn(f"scan {name}: the brain mask spans {extent.tolist()} voxels of "
                              f"{config.spacing} mm, more than the model's {list(config.shape)}: its edges are cropped",
                              stacklevel=2)
            image, brain = crop_or_pad(image, start, config.shape), crop_or_pad(brain, start, config.shape)
        model_affine = work_affine.copy()
        model_affine[:3, 3] = work_affine[:3, :3] @ start + work_affine[:3, 3]

        try:
            scale = config.norm_target / healthy_bulk_median(image[brain])
        except DataError as error:
            raise DataError(f"scan {name}: cannot normalise intensities: {error}") from None
        image = np.where(brain, image * scale, 0).astype(np.float32)
        state = GridState(scan_shape=tuple(scan.data.shape), scan_affine=scan.affine.copy(), scan_header=scan.header,
                          model_affine=model_affine, world_to_scan=world_to_scan, scale=float(scale), path=scan.path)
        return Preprocessed(image=image, mask=brain, state=state)

    def to_model(self, volume: np.ndarray, state: GridState, interpolation: str = "nearest") -> np.ndarray:
        """Bring another volume on the scan's grid (a lesion label, a tissue map) to model space."""
        if volume.shape != tuple(state.scan_shape):
            raise DataError(f"volume: shape {volume.shape} differs from the scan's {tuple(state.scan_shape)}")
        to_scan = voxel_map(state.scan_affine, state.model_affine, state.world_to_scan)
        return resample(volume, to_scan, self.config.shape, interpolation=interpolation,
                        antialias=interpolation != "nearest" and self.config.antialias)

    def inverse(self, volume: np.ndarray, state: GridState, *, interpolation: str = "linear",
                restore_intensity: bool = False) -> np.ndarray:
        """Bring a model-space volume back onto the scan's voxel grid.

        Args:
            volume: array of ``config.shape`` (a score map, a pseudo-healthy image, a mask).
            state: the :class:`GridState` that ``forward`` returned with the scan.
            interpolation: "linear", "nearest" (labels) or "bspline".
            restore_intensity: undo the intensity scaling (for images, not for scores).

        Returns:
            float32 array of the scan's shape; zero outside the model grid.
        """
        volume = np.asarray(volume)
        if volume.shape != self.config.shape:
            raise ArgumentError(f"volume: expected the model shape {self.config.shape}, got {volume.shape}")
        to_model = voxel_map(state.model_affine, state.scan_affine, np.linalg.inv(state.world_to_scan))
        out = resample(volume, to_model, state.scan_shape, interpolation=interpolation)
        return out / state.scale if restore_intensity else out

    def inverse_image(self, volume: np.ndarray, state: GridState, *, dtype=np.float32, **kwargs) -> nib.Nifti1Image:
        """:meth:`inverse` as a NIfTI image with the scan's affine and header."""
        return image_like(self.inverse(volume, state, **kwargs), state.scan_affine, state.scan_header, dtype)

    def save_inverse(self, volume: np.ndarray, state: GridState, path: str | os.PathLike, *, dtype=np.float32,
                     **kwargs) -> Path:
        """:meth:`inverse` written to ``path`` (atomically) with the scan's affine and header."""
        return save_nifti(self.inverse(volume, state, **kwargs), state.scan_affine, path, state.scan_header, dtype)
