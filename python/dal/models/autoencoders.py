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
    """The voxel-wise z-score against the healthy training population, the field's strong simple
    baseline (docs/design.md): model space is MNI152 space (its config registers every scan), the
    healthy population's mean and standard deviation are kept per voxel, and the score is
    ``median(|x - mean| / std)`` inside the eroded brain mask, like every model's residual.
    Nothing to learn by gradient: ``dal train --model zscore`` fits the two volumes on the
    training scans (:meth:`fit_population`) and calibrates the thresholds.

    Where fewer than half the training scans have brain, the voxel is left out (stored std 0,
    read as infinite: score 0). The std is floored at its 10th percentile over the brain, so that
    a voxel where the population happens to agree closely does not turn noise into a lesion.
    """

    kind = "zscore"

    def __init__(self, config: ModelConfig | None = None, volume_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.config = config or ModelConfig(kind="zscore")
        shape = tuple(volume_shape or (0, 0, 0))  # model space's (X, Y, Z): the preprocessing's shape
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.zeros(shape))

    @torch.no_grad()
    def fit_population(self, images: list, masks: list) -> None:
        """Mean and standard deviation per voxel of the (X, Y, Z) ``images`` inside their ``masks``."""
        if not images:
            raise ArgumentError("images: expected at least one healthy volume")
        if tuple(images[0].shape) != tuple(self.mean.shape):
            raise ArgumentError(f"images: expected model space's shape {tuple(self.mean.shape)}, got {tuple(images[0].shape)}")
        self.mean, self.std, _ = voxel_statistics(images, masks)  # std finite, 0 outside: checkpoints refuse inf

    def expected_volume(self, volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The population's (mean, std) for a model-space ``volume`` (X, Y, Z)."""
        if not bool((self.std > 0).any()):
            raise RuntimeError("ZScoreBaseline: not fitted (dal train --model zscore fits it)")
        if tuple(volume.shape) != tuple(self.mean.shape):
            raise ArgumentError(f"volume: expected the population's shape {tuple(self.mean.shape)}, got {tuple(volume.shape)}")
        std = torch.where(self.std > 0, self.std, torch.inf)
        return self.mean.to(volume.device), std.to(volume.device)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise RuntimeError("ZScoreBaseline has nothing to train by gradient")
