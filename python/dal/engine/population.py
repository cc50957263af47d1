"""The healthy population in MNI152 space (``scoring.population``): what a healthy scan of each
contrast looks like at each place, and how far the model's PHI misses it there.

A 2 mm PHI misses healthy tissue most at CSF borders, in the cortex and around the ventricles,
and a lesion's residual there hides among those errors. Measured on healthy scans registered to
MNI152, the spread (standard deviation) of the residual at each place says how much it varies
there; the scan's residual divided by that spread (plus its median over the brain, so that a place
of small spread does not blow noise up) weighs each voxel by how unusual it is there. (Taking the
healthy mean off as well, ``(r - mean) / std``, scored lower on the README's tuning set: 0.506
against 0.517.) The scan's one-sided z-score against the population's intensities (the z-score
baseline's signal, per contrast) is added with ``scoring.population_weight``: it sees the lesions
the PHI partly rebuilds. Both come from :func:`~dal.models.population.voxel_statistics` of
healthy scans, per contrast, smoothed by 2 mm (a few dozen scans give noisy maps). With a
population, ``scoring.disagreement`` is added in the population's units.

In the checkpoint the maps are stored at half model space's resolution in float16 (tensors
``population.<contrast>.<map>``, with the fraction of each block inside the population's brain;
at 2 mm, 4 mm maps of 1 MB a contrast instead of 8 MB); they are smooth, and on the README's
tuning set the halving changed mean AP by 0.001.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dal.data.preprocess import PreprocessConfig, mni_tissue
from dal.errors import ArgumentError, CheckpointError
from dal.models.population import voxel_statistics

MAPS = ("residual_std", "mean", "std")  # the residual's spread; the intensities' mean and std
SMOOTH_MM = 2.0
STORED_DOWNSAMPLING = 2


@dataclass
class HealthyPopulation:
    """Per contrast, (X, Y, Z) float32 maps of model space: ``residual_std`` (filled with its
    median outside the population's brain), ``mean`` and ``std`` of the intensities (0 outside);
    ``volumes``: how many healthy scans each contrast was fitted on."""

    maps: dict[str, dict[str, torch.Tensor]]
    volumes: dict[str, int]
    registration_mm: float = 0.0

    def for_contrast(self, contrast: str | None) -> dict[str, torch.Tensor] | None:
        """The maps of ``contrast``, or None (an unknown contrast, or one not fitted)."""
        return self.maps.get(contrast) if contrast else None

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors, float16: each map averaged over 2x2x2 blocks (the intensities'
        over the population's brain only), and ``brain``, the fraction of each block inside it."""
        tensors = {}
        for contrast, maps in self.maps.items():
            inside = (maps["std"] > 0).float()[None, None]
            fraction = _pool(inside)
            stored = {"residual_std": _pool(maps["residual_std"][None, None]), "brain": fraction}
            for name in ("mean", "std"):
                stored[name] = torch.where(fraction > 0, _pool(maps[name][None, None] * inside) / fraction.clamp_min(1e-6), 0)
            tensors.update({f"population.{contrast}.{name}": value[0, 0].half().contiguous() for name, value in stored.items()})
        return tensors

    def metadata(self) -> dict:
        return {"contrasts": sorted(self.maps), "volumes": self.volumes, "smooth_mm": SMOOTH_MM,
                "stored_downsampling": STORED_DOWNSAMPLING, "registration_mm": self.registration_mm}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict, shape: tuple[int, int, int],
                     where: str) -> "HealthyPopulation":
        """The maps back at model space's ``shape`` from a checkpoint's tensors: trilinear, the
        intensities' maps normalised by the brain fraction (no blending with the zeros outside),
        the population's brain wherever that fraction is above 0."""
        maps: dict[str, dict[str, torch.Tensor]] = {}
        for contrast in metadata.get("contrasts", []):
            stored = {}
            for name in (*MAPS, "brain"):
                key = f"population.{contrast}.{name}"
                if key not in tensors:
                    raise CheckpointError(f"{where}: its population lacks the tensor {key}")
                value = tensors[key].float()
                expected = tuple(-(-size // STORED_DOWNSAMPLING) for size in shape)
                if tuple(value.shape) != expected or not bool(torch.isfinite(value).all()):
                    raise CheckpointError(f"{where}: its population tensor {key}: expected a finite volume of shape "
                                          f"{expected} (model space {tuple(shape)} halved), got {tuple(value.shape)}")
                stored[name] = value[None, None]

            def up(volume: torch.Tensor) -> torch.Tensor:
                return F.interpolate(volume, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]

            fraction = up(stored["brain"])
            inside = fraction > 1e-3  # any inside block nearby: the normalised interpolation is its value
            maps[contrast] = {"residual_std": up(stored["residual_std"])}
            for name in ("mean", "std"):
                maps[contrast][name] = torch.where(inside, up(stored[name] * stored["brain"]) / fraction.clamp_min(1e-6), 0)
        return cls(maps, {str(k): int(v) for k, v in (metadata.get("volumes") or {}).items()},
                   float(metadata.get("registration_mm", 0.0)))


def _pool(volume: torch.Tensor) -> torch.Tensor:
    return F.avg_pool3d(volume, STORED_DOWNSAMPLING, ceil_mode=True)


def fit_population(residuals: dict[str, list], images: dict[str, list], masks: dict[str, list],
                   spacing_mm: float, registration_mm: float = 0.0) -> HealthyPopulation:
    """The population of healthy scans, per contrast: each one's residual before the median
    (``score_volume(..., residual_map=True)``), its model-space image and brain mask, lists per
    contrast (at least two scans each), the intensities' std allowing for ``registration_mm``
    (:func:`allow_for_misregistration`). Returned as a checkpoint stores it (4 mm, float16)."""
    maps, volumes = {}, {}
    for contrast in sorted(residuals):
        if len(residuals[contrast]) < 2:
            raise ArgumentError(f"population: {contrast}: expected at least 2 healthy scans, got {len(residuals[contrast])}")
        sigma = SMOOTH_MM / spacing_mm
        _, residual_std, inside = voxel_statistics(residuals[contrast], masks[contrast], sigma)
        mean, std, _ = voxel_statistics(images[contrast], masks[contrast], sigma)
        std = allow_for_misregistration(mean, std, spacing_mm, registration_mm)
        typical = residual_std[inside].median() if bool(inside.any()) else torch.tensor(1.0)
        maps[contrast] = {"residual_std": torch.where(inside, residual_std, typical), "mean": mean, "std": std}
        volumes[contrast] = len(residuals[contrast])
    fitted = HealthyPopulation(maps, volumes, float(registration_mm))
    # As the checkpoint will hold it: thresholds calibrated on these maps hold for dal infer's.
    shape = tuple(next(iter(maps.values()))["std"].shape) if maps else ()
    return HealthyPopulation.from_tensors(fitted.to_tensors(), fitted.metadata(), shape, "the fitted population") if maps else fitted


def allow_for_misregistration(mean: torch.Tensor, std: torch.Tensor, spacing_mm: float,
                              registration_mm: float) -> torch.Tensor:
    """The (X, Y, Z) intensities' ``std`` widened by what a misregistration of ``registration_mm``
    would add: ``sqrt(std^2 + (registration_mm |grad mean|)^2)``, 0 outside the population's brain
    (where ``std`` is 0). An affine registration leaves a real brain's folds and ventricles mm away
    from the population's; at a border of the mean (CSF against tissue) that shift alone moves the
    intensity more than the healthy subjects' spread does, and the z-score would read the shift as
    a lesion. The population brain's own edge (the mean falls to 0 outside it) is such a border too."""
    if registration_mm <= 0:
        return std
    slope = torch.sqrt(sum(g ** 2 for g in torch.gradient(mean, spacing=spacing_mm)))
    return torch.where(std > 0, torch.sqrt(std ** 2 + (registration_mm * slope) ** 2), 0)


def population_residual(residual: torch.Tensor, image: torch.Tensor, brain: torch.Tensor,
                        maps: dict[str, torch.Tensor], weight: float, sign: int | None) -> torch.Tensor:
    """The residual against the population (all (X, Y, Z)): ``residual / (median + spread)`` of
    the residual's spread ``maps["residual_std"]`` (its median over ``brain``), plus ``weight``
    times :func:`population_z`."""
    spread = maps["residual_std"]
    if tuple(spread.shape) != tuple(residual.shape):
        raise ArgumentError(f"population: maps of shape {tuple(spread.shape)} for a volume of {tuple(residual.shape)}")
    typical = spread[brain].median() if bool(brain.any()) else spread.median()
    weighed = residual / (typical + spread).clamp_min(1e-6)  # a population that never missed: no 0 / 0
    return weighed + weight * population_z(image, maps, sign) if weight > 0 else weighed


def population_z(image: torch.Tensor, maps: dict[str, torch.Tensor], sign: int | None) -> torch.Tensor:
    """The (X, Y, Z) ``image``'s z-score ``(image - mean) / std`` against the population's
    intensities, on the lesion's side ``sign`` (both sides with None), 0 outside the population's brain."""
    inside = maps["std"] > 0
    z = (image - maps["mean"]) / torch.where(inside, maps["std"], 1.0)
    z = (sign * z).clamp_min(0) if sign is not None else z.abs()
    return torch.where(inside, z, 0)


def white_matter_prior(config: PreprocessConfig) -> torch.Tensor | None:
    """MNI152's (X, Y, Z) white-matter probability on the model space of ``config``, or None
    where model space is not MNI152 space (no ``register``)."""
    return _white_matter(config.spacing, tuple(config.shape), config.antialias) if config.register else None


@functools.lru_cache(maxsize=4)  # validation asks for it once a volume
def _white_matter(spacing: float, shape: tuple[int, int, int], antialias: bool) -> torch.Tensor:
    config = PreprocessConfig(spacing=spacing, shape=shape, antialias=antialias, register=True)
    return torch.from_numpy(mni_tissue(config)[2].astype("float32"))


def tissue_prior_term(anatomy: torch.Tensor, white_matter: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z): where the PHI's anatomy (tissue indices: 0 background, 1 CSF, 2 GM, 3 WM) has
    CSF or grey matter at a place MNI152's white-matter probability ``white_matter`` is above
    one half, that probability's excess over it, scaled to 0..1 (1 where it is certain); else 0.
    A lesion of the white matter that the encoder takes for grey matter or CSF (T1 and T2 WMH:
    on the test sets 61 to 86% of their voxels) makes a PHI that paints it so; its intensity
    residual is then small, but its anatomy is out of place (``scoring.tissue_prior``)."""
    if tuple(anatomy.shape) != tuple(white_matter.shape):
        raise ArgumentError(f"white_matter: expected the anatomy's shape {tuple(anatomy.shape)}, "
                            f"got {tuple(white_matter.shape)}")
    excess = ((white_matter - 0.5) / 0.5).clamp_min(0)
    return torch.where((anatomy == 1) | (anatomy == 2), excess, 0)


def population_summary(population: HealthyPopulation | None) -> str:
    """In words, for logs: which contrasts on how many scans."""
    if population is None:
        return "none"
    return ", ".join(f"{c} ({population.volumes.get(c, '?')} scans)" for c in sorted(population.maps))
