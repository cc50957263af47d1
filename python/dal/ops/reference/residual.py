"""Pure-torch reference of DAL's residual score: the median of |x - phi| inside the eroded mask."""
from __future__ import annotations

import torch

from dal.ops.reference._common import check_radius, compute_dtype
from dal.ops.reference.median import check_median_args, median_filter
from dal.ops.reference.morphology import binary_erode

__all__ = ["check_residual_args", "residual_score"]


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
    check_radius(erode, "erode")


def residual_score(
    x: torch.Tensor, phi: torch.Tensor, mask: torch.Tensor | None = None, kernel_size: int = 5, erode: int = 0
) -> torch.Tensor:
    """median_filter(|x - phi| inside binary_erode(mask, erode), 0 outside), in float32 (float64
    for float64 x); x and phi (N, C, H, W) or (N, C, D, H, W), mask of their shape or with one
    channel. The result has x's shape and dtype."""
    check_residual_args(x, phi, mask, kernel_size, erode)
    v = (x.to(compute_dtype(x.dtype)) - phi.to(compute_dtype(x.dtype))).abs()
    if mask is not None:
        v = torch.where(binary_erode(mask, erode), v, torch.zeros((), dtype=v.dtype, device=v.device))
    return median_filter(v, kernel_size).to(x.dtype)
