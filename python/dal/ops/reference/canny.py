"""Pure-torch reference of the Canny edge detector (2D/3D)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dal.ops.reference._common import check_image, compute_dtype, shifted
from dal.ops.reference.sobel import components

__all__ = ["canny", "check_canny_args", "gaussian_taps"]


def check_canny_args(x: torch.Tensor, low: float, high: float, sigma: float, use_quantiles: bool) -> int:
    """Validates canny's arguments as the kernels do; returns the spatial dims (2 or 3)."""
    dims = check_image(x)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if math.isnan(low) or math.isnan(high):
        raise ValueError("low and high must not be NaN")
    if low > high:
        raise ValueError(f"low must be <= high, got low = {low} and high = {high}")
    if use_quantiles and not (low >= 0 and high <= 1):
        raise ValueError(f"low and high must be quantiles in [0, 1] with use_quantiles=True, got low = {low} and high = {high}")
    return dims


def gaussian_taps(sigma: float) -> list[float]:
    """scipy.ndimage's truncated Gaussian, radius int(4 sigma + 0.5): the normalised taps for
    offsets 0, 1, ..., radius (the kernel is symmetric)."""
    radius = int(4.0 * sigma + 0.5)
    if radius == 0:
        return [1.0]
    taps = [math.exp(-0.5 / (sigma * sigma) * (j * j)) for j in range(radius + 1)]
    total = taps[0] + 2 * sum(taps[1:])
    return [t / total for t in taps]


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian, replicate border; axes D, H, W in turn, each value summed as scipy
    sums a symmetric kernel (centre, then pairs from the outermost in)."""
    taps = gaussian_taps(sigma)
    for axis in range(2, x.dim()):
        out = taps[0] * x
        for j in range(len(taps) - 1, 0, -1):
            out = out + (shifted(x, axis, -j) + shifted(x, axis, j)) * taps[j]
        x = out
    return x


def _at_offsets(t: torch.Tensor, offsets: list[torch.Tensor]) -> torch.Tensor:
    """t at p + offset(p) for every voxel p; offsets per spatial axis (W, H[, D]), clamped at the border."""
    spatial = t.shape[2:]
    grids = torch.meshgrid(*[torch.arange(n, device=t.device) for n in spatial], indexing="ij")
    flat = torch.zeros_like(grids[0])
    for axis, n in enumerate(spatial):
        offset = offsets[len(spatial) - 1 - axis]  # offsets are ordered W, H, D
        flat = flat * n + (grids[axis] + offset).clamp(0, n - 1)
    return t.flatten(2).gather(2, flat.flatten(2)).view_as(t)


def _magnitude_along(g: torch.Tensor, mag: torch.Tensor, sign: int) -> torch.Tensor:
    """Magnitude interpolated at p + sign * g / max|g| (see dal/canny.h): linear on an edge of the
    3x3 neighbourhood in 2D, bilinear on a face of the 3x3x3 one in 3D."""
    dims = g.shape[2]
    a = g.abs()
    major = a.argmax(2)  # ties: the first axis, as the kernels choose
    minor1 = (major == 0).long()
    minor2 = torch.where(major == 2, 1, 2)

    def component(t, index):
        return t.gather(2, index.unsqueeze(2)).squeeze(2)

    def unit_step(index):  # +-1 along the axis `index`, in the direction of sign * g
        return F.one_hot(index, dims).movedim(-1, 2) * torch.where(g < 0, -sign, sign)

    def mag_at(step):
        return _at_offsets(mag, list(step.unbind(2)))

    a_major = component(a, major)
    w1 = component(a, minor1) / a_major
    along_major, along_minor1 = unit_step(major), unit_step(minor1)
    near = mag_at(along_major + along_minor1) * w1 + mag_at(along_major) * (1 - w1)
    if dims == 2:
        return near
    w2 = component(a, minor2) / a_major
    along_minor2 = unit_step(minor2)
    far = mag_at(along_major + along_minor1 + along_minor2) * w1 + mag_at(along_major + along_minor2) * (1 - w1)
    return torch.where(w2 == 0, near, far * w2 + near * (1 - w2))


def canny(
    x: torch.Tensor, low: float, high: float, sigma: float = 1.0, hysteresis: bool = True, use_quantiles: bool = False
) -> torch.Tensor:
    """Canny edges of (N, C, H, W) or (N, C, D, H, W) as a bool tensor of the same shape (see dal.ops.canny)."""
    dims = check_canny_args(x, low, high, sigma, use_quantiles)
    if x.numel() == 0:
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    smoothed = _gaussian(x.to(compute_dtype(x.dtype)), sigma)
    g = components(smoothed, normalized=False)
    mag = (g * g).sum(2).sqrt()
    if use_quantiles:
        q = torch.tensor([low, high], dtype=torch.float64, device=x.device)
        per_image = torch.quantile(mag.flatten(2).double(), q, dim=2).to(mag.dtype)  # (2, N, C)
        low_t, high_t = (t.view(*t.shape, *[1] * dims) for t in per_image)
    else:
        low_t, high_t = low, high
    interior = torch.zeros_like(mag, dtype=torch.bool)
    interior[(slice(None), slice(None), *[slice(1, -1)] * dims)] = True
    candidate = interior & (mag > 0) & (mag >= low_t)
    candidate &= (_magnitude_along(g, mag, 1) <= mag) & (_magnitude_along(g, mag, -1) <= mag)
    if not hysteresis:
        return candidate
    edges = candidate & (mag >= high_t)
    pool = F.max_pool3d if dims == 3 else F.max_pool2d
    while True:  # grow the strong edges through the candidates until nothing changes
        grown = candidate & (pool(edges.to(mag.dtype), 3, 1, 1) > 0)
        if torch.equal(grown, edges):
            return edges
        edges = grown
