"""Pure-torch references of the scoring ops: median filter, residual score, binary erode/dilate.

All use a cube window and the replicate border ("nearest": the volume's edge values continue
outward), so an edge voxel is neither eroded nor darkened by the border.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dal.ops.reference._common import compute_dtype

__all__ = [
    "MAX_KERNEL_SIZE",
    "binary_dilate",
    "binary_erode",
    "check_median_args",
    "check_morphology_args",
    "check_residual_args",
    "median_filter",
    "residual_score",
]

MAX_KERNEL_SIZE = 7
_SLAB = 8  # output depth slices per step: bounds the memory of the unfolded windows


def _check_volume(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dim() not in (4, 5):
        raise ValueError(f"{name} must be (N, C, H, W) or (N, C, D, H, W), got a tensor of {t.dim()} dimensions")


def check_median_args(x: torch.Tensor, kernel_size: int) -> None:
    """Validates median_filter's arguments as the kernels do."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor (float32, float64, bfloat16 or float16), got {got}")
    _check_volume(x, "x")
    if not (isinstance(kernel_size, int) and 1 <= kernel_size <= MAX_KERNEL_SIZE and kernel_size % 2 == 1):
        raise ValueError(f"kernel_size must be an odd integer in [1, {MAX_KERNEL_SIZE}], got {kernel_size}")


def _check_radius(radius: int, name: str) -> None:
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"{name} must be >= 0 (voxels), got {radius}")


def check_residual_args(x, phi, mask, kernel_size: int, erode: int) -> None:
    """Validates residual_score's arguments as the kernels do."""
    check_median_args(x, kernel_size)
    if not isinstance(phi, torch.Tensor) or phi.shape != x.shape or phi.dtype != x.dtype or phi.device != x.device:
        got = (tuple(phi.shape), phi.dtype, phi.device) if isinstance(phi, torch.Tensor) else type(phi).__name__
        raise ValueError(f"phi must have the shape of x {tuple(x.shape)}, its dtype and device, got {got}")
    if mask is not None:
        ok = (
            isinstance(mask, torch.Tensor)
            and mask.dim() == x.dim()
            and mask.shape[0] == x.shape[0]
            and mask.shape[1] in (1, x.shape[1])
            and mask.shape[2:] == x.shape[2:]
            and mask.device == x.device
        )
        if not ok:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must have the shape of x {tuple(x.shape)} (or one channel), on its device, got {got}")
    _check_radius(erode, "erode")


def _windows(padded: torch.Tensor, k: int, dims: int) -> torch.Tensor:
    """(B, *spatial + k - 1) padded -> (B, *spatial, k**dims) window values."""
    out = padded
    for axis in range(dims):
        out = out.unfold(1 + axis, k, 1)
    return out.reshape(*out.shape[: 1 + dims], -1)


def _box_reduce(x: torch.Tensor, k: int, reduce) -> torch.Tensor:
    """reduce(windows) over a cube of side k, replicate border, for (N, C, *spatial) x."""
    dims = x.dim() - 2
    r = k // 2
    flat = x.reshape(-1, *x.shape[2:])
    if r == 0:
        return x.clone()
    padded = F.pad(flat.unsqueeze(1), [r] * (2 * dims), mode="replicate").squeeze(1)
    if dims == 2:
        out = reduce(_windows(padded, k, 2))
    else:  # slab by slab along depth: the unfolded windows of a whole volume would not fit
        depth = flat.shape[1]
        out = torch.cat([reduce(_windows(padded[:, d : d + _SLAB + 2 * r], k, 3)) for d in range(0, depth, _SLAB)], 1)
    return out.reshape(x.shape)


def median_filter(x: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """Median over a cube of side kernel_size, replicate border (scipy.ndimage.median_filter,
    mode="nearest", size over the spatial dims)."""
    check_median_args(x, kernel_size)
    if x.numel() == 0:
        return x.clone()
    v = x.to(compute_dtype(x.dtype))
    return _box_reduce(v, kernel_size, lambda w: w.median(-1).values).to(x.dtype)


def check_morphology_args(mask: torch.Tensor, radius: int) -> None:
    """Validates binary_erode's and binary_dilate's arguments as the kernels do."""
    _check_volume(mask, "mask")
    _check_radius(radius, "radius")


def _morphology(mask: torch.Tensor, radius: int, erode: bool) -> torch.Tensor:
    check_morphology_args(mask, radius)
    inside = mask != 0
    if radius == 0 or inside.numel() == 0:
        return inside
    reduce = (lambda w: w.amin(-1)) if erode else (lambda w: w.amax(-1))
    return _box_reduce(inside.to(torch.uint8), 2 * radius + 1, reduce).bool()


def binary_erode(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Erosion of mask != 0 by a cube of side 2 * radius + 1, replicate border (the volume's edge
    does not erode): scipy.ndimage.minimum_filter(mask, 2 * radius + 1, mode="nearest")."""
    return _morphology(mask, radius, True)


def binary_dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Dilation of mask != 0 by a cube of side 2 * radius + 1, replicate border."""
    return _morphology(mask, radius, False)


def residual_score(
    x: torch.Tensor, phi: torch.Tensor, mask: torch.Tensor | None = None, kernel_size: int = 5, erode: int = 0
) -> torch.Tensor:
    """median_filter(|x - phi| inside binary_erode(mask, erode), 0 outside)."""
    check_residual_args(x, phi, mask, kernel_size, erode)
    v = (x.to(compute_dtype(x.dtype)) - phi.to(compute_dtype(x.dtype))).abs()
    if mask is not None:
        v = torch.where(binary_erode(mask, erode), v, torch.zeros((), dtype=v.dtype, device=v.device))
    if v.numel() == 0:
        return v.to(x.dtype)
    return _box_reduce(v, kernel_size, lambda w: w.median(-1).values).to(x.dtype)
