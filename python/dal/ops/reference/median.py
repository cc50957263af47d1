"""Pure-torch reference of the exact median filter: a cube window, replicate border ("nearest":
the volume's edge values continue outward), so an edge voxel is not darkened by the border."""
from __future__ import annotations

import torch

from dal.ops.reference._common import box_reduce, check_image, compute_dtype

__all__ = ["MAX_KERNEL_SIZE", "check_median_args", "median_filter"]

MAX_KERNEL_SIZE = 7


def check_median_args(x: torch.Tensor, kernel_size: int) -> None:
    """Validates median_filter's arguments as the kernels do."""
    check_image(x)
    if not (isinstance(kernel_size, int) and 1 <= kernel_size <= MAX_KERNEL_SIZE and kernel_size % 2 == 1):
        raise ValueError(f"kernel_size must be an odd integer in [1, {MAX_KERNEL_SIZE}], got {kernel_size}")


def median_filter(x: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """Median over a cube of side kernel_size, replicate border (scipy.ndimage.median_filter,
    mode="nearest", size over the spatial dims), of (N, C, H, W) or (N, C, D, H, W) x; the
    result has x's shape and dtype."""
    check_median_args(x, kernel_size)
    if x.numel() == 0:
        return x.clone()
    v = x.to(compute_dtype(x.dtype))
    return box_reduce(v, kernel_size, lambda w: w.median(-1).values).to(x.dtype)
