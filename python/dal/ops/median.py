"""Exact median filter: fake kernel and public face."""
from __future__ import annotations

import torch

from dal.ops import reference
from dal.ops._common import no_gradient, refusing_gradient
from dal.ops._extension import has_kernel, op_names, warn_fallback
from dal.ops.reference.median import MAX_KERNEL_SIZE  # noqa: F401 (the largest window, for callers)


def median_filter(x: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """Exact median over a cube window, replicate border.

    Equal, value for value, to ``scipy.ndimage.median_filter(x, size=(1, 1) + (k,) * dims,
    mode="nearest")``. The kernels merge sorted lists with pruned min/max networks (no sort of
    each window), in the input's precision (float16/bfloat16 in float32; the median is one of the
    inputs, so exact). Windows holding NaN give unspecified values. No gradient: backward raises.

    Args:
        x: (N, C, H, W) or (N, C, D, H, W) floating tensor; channels are filtered separately.
        kernel_size: odd side of the cube in voxels, 1 to 7 (1 returns a copy). Ops count in
            voxels: convert millimetres with the voxel spacing first.

    Returns:
        Tensor of the shape and dtype of ``x``, contiguous.
    """
    if has_kernel("median_filter", x.device.type):
        return torch.ops.dal.median_filter(x, kernel_size)
    warn_fallback("median_filter", x.device.type)
    with torch.no_grad():  # the reference is differentiable; the op is not, on either path
        out = reference.median_filter(x, kernel_size)
    return refusing_gradient("median_filter", out, x)


if "median_filter" in op_names():

    @torch.library.register_fake("dal::median_filter")
    def _(x, kernel_size):
        reference.check_median_args(x, kernel_size)
        return x.new_empty(x.shape)

    torch.library.register_autograd("dal::median_filter", no_gradient("median_filter"))
