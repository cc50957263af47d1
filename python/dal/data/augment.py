"""Imaging augmentations of a 2D slice: random changes of contrast that leave anatomy alone.

DAL's imaging invariance asks that two such changes of one slice give the same anatomy, so each
change touches intensity only, never geometry: per-tissue intensity remapping (where tissue maps
exist; else a random non-monotonic intensity curve), gamma, a multiplicative bias field, noise
and blur. Everything happens inside the brain mask; outside stays zero. Intensities are not
clipped above (lesions may exceed 1); negative values from noise are folded back (MRI magnitude).

Each call draws from the ``numpy.random.Generator`` it is given, so a data set that seeds one per
item (from its seed, the epoch and the item's index) is deterministic whatever worker runs it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.ndimage as ndi

from dal.errors import reject_unknown_keys


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random imaging changes (plain data: stored with the training config).

    Attributes:
        tissue_mean: range of the new mean intensity of each tissue (per-tissue remapping).
        tissue_contrast: range of the factor on the spread within each tissue.
        curve_knots: knots of the random intensity curve used where no tissue maps exist.
        gamma: range of log(gamma).
        bias: amplitude of the log bias field (a random quadratic polynomial over the slice).
        noise: range of the Gaussian noise standard deviation.
        blur: range of the Gaussian blur sigma, pixels.
        blur_probability: chance that a view is blurred at all.
    """

    tissue_mean: tuple[float, float] = (0.05, 1.0)
    tissue_contrast: tuple[float, float] = (0.6, 1.4)
    curve_knots: int = 6
    gamma: tuple[float, float] = (-0.4, 0.4)
    bias: float = 0.3
    noise: tuple[float, float] = (0.0, 0.04)
    blur: tuple[float, float] = (0.0, 1.0)
    blur_probability: float = 0.5

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Augmentation":
        reject_unknown_keys(data, cls, "augmentation config")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def __call__(self, image: np.ndarray, mask: np.ndarray, tissue: np.ndarray | None,
                 rng: np.random.Generator) -> np.ndarray:
        """One random view of ``image`` (H, W), ``mask`` (H, W) bool, ``tissue`` (K, H, W) or None."""
        x = image.astype(np.float32, copy=True)
        if tissue is not None:
            x = self.remap_tissues(x, mask, tissue, rng)
        else:
            x = self.random_curve(x, rng)
        x = np.maximum(x, 0) ** np.float32(np.exp(rng.uniform(*self.gamma)))
        x *= self.bias_field(x.shape, rng)
        if rng.random() < self.blur_probability:
            x = ndi.gaussian_filter(x, rng.uniform(*self.blur), truncate=3.0)
        x += rng.normal(0, rng.uniform(*self.noise), x.shape).astype(np.float32)
        return np.where(mask, np.abs(x), 0).astype(np.float32)

    def remap_tissues(self, x, mask, tissue, rng):
        """Give each tissue a new mean and spread, mixed by the tissue probabilities (partial volume)."""
        weights = tissue * mask
        totals = weights.reshape(len(tissue), -1).sum(axis=1)
        means = (weights * x).reshape(len(tissue), -1).sum(axis=1) / np.maximum(totals, 1e-6)
        targets = rng.uniform(*self.tissue_mean, len(tissue))
        spread = rng.uniform(*self.tissue_contrast)
        # x' = sum_k p_k (target_k + spread (x - mean_k)); the weights sum to one inside the brain.
        shift = np.tensordot(targets - spread * means, tissue, axes=1)
        return (spread * x + shift).astype(np.float32)

    def random_curve(self, x, rng):
        """A random, generally non-monotonic, piecewise-linear curve on [0, 1], continued linearly above."""
        knots = np.linspace(0, 1, self.curve_knots)
        values = np.sort(rng.uniform(0, 1, self.curve_knots)) if rng.random() < 0.5 else rng.uniform(0, 1, self.curve_knots)
        values[0] = 0.0
        slope = (values[-1] - values[-2]) / (knots[-1] - knots[-2])
        out = np.interp(x, knots, values)
        above = x > 1
        out[above] = values[-1] + slope * (x[above] - 1)
        return out.astype(np.float32)

    def bias_field(self, shape, rng):
        """exp of a random quadratic polynomial over the slice, coefficients up to ``bias``."""
        v, u = np.meshgrid(np.linspace(-1, 1, shape[1], dtype=np.float32), np.linspace(-1, 1, shape[0], dtype=np.float32))
        terms = np.stack([u, v, u * v, u * u - 1 / 3, v * v - 1 / 3])
        return np.exp(np.tensordot(rng.uniform(-self.bias, self.bias, len(terms)).astype(np.float32), terms, axes=1))
