"""Pure-torch references of the binary morphology of masks: erosion and dilation by a cube,
replicate border (the volume's edge does not erode)."""
from __future__ import annotations

import torch

from dal.ops.reference._common import box_reduce, check_radius, check_volume

__all__ = ["binary_dilate", "binary_erode", "check_morphology_args"]


def check_morphology_args(mask: torch.Tensor, radius: int) -> None:
    """Validates binary_erode's and binary_dilate's arguments as the kernels do."""
    check_volume(mask, "mask")
    check_radius(radius, "radius")


def _morphology(mask: torch.Tensor, radius: int, erode: bool) -> torch.Tensor:
    check_morphology_args(mask, radius)
    inside = mask != 0
    if radius == 0 or inside.numel() == 0:
        return inside
    reduce = (lambda w: w.amin(-1)) if erode else (lambda w: w.amax(-1))
    return box_reduce(inside.to(torch.uint8), 2 * radius + 1, reduce).bool()


def binary_erode(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Erosion of mask != 0 ((N, C, H, W) or (N, C, D, H, W), any dtype) by a cube of side
    2 * radius + 1, replicate border: scipy.ndimage.minimum_filter(mask, 2 * radius + 1,
    mode="nearest"). A bool tensor of mask's shape."""
    return _morphology(mask, radius, True)


def binary_dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Dilation of mask != 0 by a cube of side 2 * radius + 1, replicate border; shapes as binary_erode."""
    return _morphology(mask, radius, False)
