"""Statistics of a healthy population per voxel of model space: what the z-score baseline models,
and what DAL's population term (:mod:`dal.engine.population`) scores a scan against."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dal.errors import ArgumentError


def voxel_statistics(images: list, masks: list, smooth_voxels: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per voxel of ``images`` inside their ``masks``.

    A voxel counts as inside the population's brain where at least half the volumes (and two)
    have brain; elsewhere mean and std are 0. With ``smooth_voxels`` > 0 both are smoothed by a
    Gaussian of that sigma, normalised within the population's brain (a few dozen scans give a
    noisy std; neighbours agree). The std is floored at its 10th percentile over the brain, so
    that a voxel where the population happens to agree closely does not turn noise into a lesion.

    Args:
        images: (X, Y, Z) volumes (numpy or torch), all of one shape.
        masks: (X, Y, Z) brain masks, one per image.
        smooth_voxels: Gaussian sigma in voxels (0: none).

    Returns:
        (mean, std, inside): float32 (X, Y, Z) tensors and the bool mask of the population's brain.
    """
    if not images or len(images) != len(masks):
        raise ArgumentError(f"images, masks: expected as many masks as images, at least one; got {len(images)} and {len(masks)}")
    x = torch.stack([torch.as_tensor(i, dtype=torch.float64) for i in images])
    m = torch.stack([torch.as_tensor(k, dtype=torch.bool) for k in masks]).to(torch.float64)
    if x.shape != m.shape:
        raise ArgumentError(f"masks: expected the images' shape {tuple(x.shape[1:])}, got {tuple(m.shape[1:])}")
    count = m.sum(0)
    mean = (x * m).sum(0) / count.clamp_min(1)
    std = ((((x - mean) ** 2) * m).sum(0) / (count - 1).clamp_min(1)).sqrt()
    inside = count >= max(2, len(images) / 2)
    if smooth_voxels > 0:
        mean, std = (_smooth_within(v, inside, smooth_voxels) for v in (mean, std))
    floor = torch.quantile(std[inside].float(), 0.1).double() if inside.any() else torch.tensor(1.0, dtype=torch.float64)
    return torch.where(inside, mean, 0).float(), torch.where(inside, std.clamp_min(floor), 0).float(), inside


def _smooth_within(volume: torch.Tensor, inside: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``volume`` over the voxels ``inside`` only (normalised convolution),
    separable along each axis."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    weight = inside.to(torch.float64)
    values, weights = (volume * weight)[None, None], weight[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        padding = [0, 0, 0]
        padding[axis] = radius
        values, weights = (F.conv3d(v, kernel.view(shape), padding=padding) for v in (values, weights))
    return torch.where(inside, values[0, 0] / weights[0, 0].clamp_min(1e-12), volume)
