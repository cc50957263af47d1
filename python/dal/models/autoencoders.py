"""The baselines in the same framework: a plain bottleneck autoencoder and a denoising
autoencoder (Kascenas et al. 2022), on the U-Net backbone DAL uses, raw-intensity thresholding
and the voxel-wise z-score against the healthy population.

Both train on the scans as they are (``batch["image"]``): they need no imaging invariance, and
the augmented views of DAL would only widen what they learn to rebuild.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dal.errors import ArgumentError
from dal.models.blocks import UNet
from dal.models.config import ModelConfig
from dal.models.losses import reconstruction_loss
from dal.models.population import voxel_statistics


class AutoEncoder(nn.Module):
    """Plain autoencoder: the U-Net without skips, squeezed to ``ae_latent`` channels at
    1/2^levels resolution (one level deeper than DAL's U-Nets, so the bottleneck cannot copy)."""

    kind = "ae"

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig(kind="ae")
        c = self.config
        self.net = UNet(1, 1, c.channels, c.levels + 1, skips=False, latent=c.ae_latent)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = reconstruction_loss(self.net(batch["image"]), batch["image"])
        return {"reconstruction": loss, "loss": loss}

    @torch.no_grad()
    def pseudo_healthy(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"phi": self.net(x)}


def coarse_noise(x: torch.Tensor, std: float, cells: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian noise drawn on a grid of ``cells`` across the short side of the slice and
    upsampled bilinearly to it (torch's global generator), zero outside ``mask``."""
    n, _, h, w = x.shape
    step = min(h, w) / cells
    grid = torch.randn(n, 1, max(1, round(h / step)), max(1, round(w / step)), device=x.device, dtype=x.dtype) * std
    noise = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
    return noise if mask is None else noise * mask


class DenoisingAutoEncoder(nn.Module):
    """Denoising autoencoder: the U-Net with skips learns to remove coarse noise added inside
    the brain; at inference its output on the scan itself is the PHI."""

    kind = "dae"

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig(kind="dae")
        c = self.config
        self.net = UNet(1, 1, c.channels, c.levels)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        noisy = x + coarse_noise(x, self.config.dae_noise_std, self.config.dae_noise_cells, batch.get("mask"))
        loss = reconstruction_loss(self.net(noisy), x)
        return {"reconstruction": loss, "loss": loss}

    @torch.no_grad()
    def pseudo_healthy(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"phi": self.net(x)}


class IntensityBaseline(nn.Module):
    """Raw-intensity thresholding, the simple baseline of docs/design.md: the PHI is zero, so the
    score is the scan's own intensity, median-filtered inside the eroded brain mask like every
    model's residual. Lesions brighter than all healthy tissue (FLAIR, T2) are found; dark ones
    (T1) are not. Nothing to learn: ``dal train --model intensity`` only calibrates its thresholds
    on the healthy validation volumes."""

    kind = "intensity"

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig(kind="intensity")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise RuntimeError("IntensityBaseline has nothing to train")

    @torch.no_grad()
    def pseudo_healthy(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"phi": torch.zeros_like(x)}


class ZScoreBaseline(nn.Module):
    """The voxel-wise z-score against the healthy population, the field's strong simple baseline
    (docs/design.md): model space is MNI152 space (its config registers every scan), each
    contrast's healthy population has its mean and standard deviation per voxel (a T1 is compared
    with T1s only), and the score is ``median(|x - mean| / std)`` inside the eroded brain mask,
    like every model's residual. Nothing to learn by gradient: ``dal train --model zscore`` fits
    the volumes (:meth:`fit_population`) on the healthy scans DAL's own population term is fitted
    on, and calibrates the thresholds.

    Where fewer than half a population's scans have brain, the voxel is left out (stored std 0,
    read as infinite: score 0). The std is floored at its 10th percentile over the brain, so that
    a voxel where the population happens to agree closely does not turn noise into a lesion.

    Buffers ``mean`` and ``std``: (P, X, Y, Z), one population per ``config.contrasts`` (P = 1,
    of scans of an unknown contrast, when it names none).
    """

    kind = "zscore"

    def __init__(self, config: ModelConfig | None = None, volume_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.config = config or ModelConfig(kind="zscore")
        shape = (max(1, len(self.config.contrasts)), *tuple(volume_shape or (0, 0, 0)))  # model space's (X, Y, Z)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.zeros(shape))

    @torch.no_grad()
    def fit_population(self, images: list, masks: list, contrasts: list[str]) -> None:
        """Each population's mean and standard deviation per voxel, from the (X, Y, Z) ``images``
        (with their ``masks``) of its contrast (``contrasts``: one per image)."""
        if not images or len(contrasts) != len(images):
            raise ArgumentError(f"images, contrasts: expected a contrast per image, at least one; got {len(images)} "
                                f"and {len(contrasts)}")
        if tuple(images[0].shape) != tuple(self.mean.shape[1:]):
            raise ArgumentError(f"images: expected model space's shape {tuple(self.mean.shape[1:])}, got {tuple(images[0].shape)}")
        for index, contrast in enumerate(self.config.contrasts or (None,)):
            chosen = [k for k, c in enumerate(contrasts) if contrast is None or c == contrast]
            if len(chosen) < 2:
                raise ArgumentError(f"contrasts: the {contrast or 'pooled'} population needs two scans or more, got "
                                    f"{len(chosen)}")
            # std finite, 0 outside: checkpoints refuse inf
            self.mean[index], self.std[index], _ = voxel_statistics([images[k] for k in chosen], [masks[k] for k in chosen])

    def expected_volume(self, volume: torch.Tensor, contrast: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (mean, std) of the population of ``contrast`` for a model-space ``volume`` (X, Y, Z)."""
        if not bool((self.std > 0).any()):
            raise RuntimeError("ZScoreBaseline: not fitted (dal train --model zscore fits it)")
        if tuple(volume.shape) != tuple(self.mean.shape[1:]):
            raise ArgumentError(f"volume: expected the population's shape {tuple(self.mean.shape[1:])}, got {tuple(volume.shape)}")
        index = 0
        if self.config.contrasts:
            if contrast not in self.config.contrasts:
                raise ArgumentError(f"contrast: this z-score holds healthy populations of {', '.join(self.config.contrasts)} "
                                    f"scans, got {contrast or 'an unknown contrast'}: give the scan's (--contrast)")
            index = self.config.contrasts.index(contrast)
        std = torch.where(self.std[index] > 0, self.std[index], torch.inf)
        return self.mean[index].to(volume.device), std.to(volume.device)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise RuntimeError("ZScoreBaseline has nothing to train by gradient")
