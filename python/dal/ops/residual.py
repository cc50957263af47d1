"""DAL's fused residual score: fake kernel, refused gradient, and public face."""
from __future__ import annotations

import torch

from dal.ops import reference
from dal.ops._common import no_gradient, refusing_gradient
from dal.ops._extension import has_kernel, op_names, warn_fallback


def residual_score(
    x: torch.Tensor, phi: torch.Tensor, mask: torch.Tensor | None = None, kernel_size: int = 5, erode: int = 0
) -> torch.Tensor:
    """Anomaly score of DAL: the median-filtered residual inside the eroded brain mask, in one op.

    ``median_filter(where(binary_erode(mask, erode), |x - phi|, 0), kernel_size)`` in one op: the
    kernel erodes the mask, forms the masked residual once in float32 (float64 for float64
    input) and filters it, with no intermediate tensor in the input's dtype. Outside the eroded
    mask the residual is 0 (a select: an inf or NaN there does not leak in). No gradient:
    backward raises.

    Args:
        x: (N, C, H, W) or (N, C, D, H, W) floating scan.
        phi: its pseudo-healthy image, of the shape, dtype and device of ``x``.
        mask: optional brain mask (non-zero inside), of the shape of ``x`` or with one channel.
        kernel_size: odd side of the median cube in voxels, 1 to 7.
        erode: radius of the mask erosion in voxels (a cube of side ``2 * erode + 1``, replicate
            border), 0 for none. Ops count in voxels: convert millimetres first.

    Returns:
        Tensor of the shape and dtype of ``x``, contiguous, >= 0.
    """
    if has_kernel("residual_score", x.device.type):
        return torch.ops.dal.residual_score(x, phi, mask, kernel_size, erode)
    warn_fallback("residual_score", x.device.type)
    with torch.no_grad():  # the reference is differentiable; the op is not, on either path
        out = reference.residual_score(x, phi, mask, kernel_size, erode)
    return refusing_gradient("residual_score", out, x, phi)


if "residual_score" in op_names():

    @torch.library.register_fake("dal::residual_score")
    def _(x, phi, mask, kernel_size, erode):
        reference.check_residual_args(x, phi, mask, kernel_size, erode)
        return x.new_empty(x.shape)

    torch.library.register_autograd("dal::residual_score", no_gradient("residual_score"))
