"""Binary erosion and dilation of masks by a cube: fake kernels and public faces (bool outputs,
so there is no gradient to refuse)."""
from __future__ import annotations

import torch

from dal.ops import reference
from dal.ops._extension import has_kernel, op_names, warn_fallback


def binary_erode(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Erosion of ``mask != 0`` by a cube of side ``2 * radius + 1``, replicate border (the
    volume's edge does not erode), as ``scipy.ndimage.minimum_filter(..., mode="nearest")``.

    Args:
        mask: (N, C, H, W) or (N, C, D, H, W) tensor of any dtype.
        radius: in voxels, >= 0.

    Returns:
        bool tensor of the shape of ``mask``.
    """
    if has_kernel("binary_erode", mask.device.type):
        return torch.ops.dal.binary_erode(mask, radius)
    warn_fallback("binary_erode", mask.device.type)
    return reference.binary_erode(mask, radius)


def binary_dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Dilation of ``mask != 0`` by a cube of side ``2 * radius + 1``, replicate border.
    Shapes as :func:`binary_erode`."""
    if has_kernel("binary_dilate", mask.device.type):
        return torch.ops.dal.binary_dilate(mask, radius)
    warn_fallback("binary_dilate", mask.device.type)
    return reference.binary_dilate(mask, radius)


def _fake_morphology(mask, radius):
    reference.check_morphology_args(mask, radius)
    return mask.new_empty(mask.shape, dtype=torch.bool)


if "binary_erode" in op_names():
    torch.library.register_fake("dal::binary_erode")(_fake_morphology)
    torch.library.register_fake("dal::binary_dilate")(_fake_morphology)
