"""The Canny edge detector, 2D and 3D."""
from __future__ import annotations

import torch

from dal.ops import reference
from dal.ops._extension import has_kernel, op_names, warn_fallback


def canny(
    x: torch.Tensor,
    low: float,
    high: float,
    sigma: float = 1.0,
    hysteresis: bool = True,
    use_quantiles: bool = False,
) -> torch.Tensor:
    """Canny edges of 2D or 3D images, each (n, c) image on its own.

    Steps, as scikit-image's ``canny(x, sigma, low, high, mode='nearest')`` takes them in 2D:
    Gaussian smoothing (separable, replicate border, truncated at 4 sigma), Sobel gradient,
    non-maximum suppression along the gradient direction (the magnitude interpolated where the
    gradient line leaves the voxel's 3x3 / 3x3x3 neighbourhood: linearly on an edge in 2D,
    bilinearly on a face in 3D), double threshold, and hysteresis with full connectivity (8 in
    2D, 26 in 3D) run to convergence. Voxels on the image border are never edges.

    Differences from scikit-image: float32 input is computed in float32 (scipy accumulates in
    float64), and scikit-image rounds ``low`` to float32, so a few pixels whose magnitude ties
    with a neighbour's or a threshold may differ; quantile thresholds are taken per (n, c)
    image. Sums are ordered as scipy orders them (centre, then symmetric pairs), so mirror-
    symmetric images give exact ties, kept on both sides as scikit-image keeps them.

    Args:
        x: (N, C, H, W) or (N, C, D, H, W) floating tensor.
        low: lower threshold of the gradient magnitude (weak edges: magnitude >= low).
        high: upper threshold (strong edges: magnitude >= high); low <= high.
        sigma: standard deviation of the Gaussian, in voxels, >= 0 (0: no smoothing).
        hysteresis: keep weak edges connected to strong ones (default); with False, every
            local maximum above ``low`` is an edge (kornia's ``canny`` output > 0).
        use_quantiles: ``low`` and ``high`` are quantiles in [0, 1] of each image's magnitude
            (numpy's linear interpolation), as scikit-image offers.

    Returns:
        bool tensor of the shape of ``x``.
    """
    if has_kernel("canny", x.device.type):
        return torch.ops.dal.canny(x, float(low), float(high), float(sigma), bool(hysteresis), bool(use_quantiles))
    warn_fallback("canny", x.device.type)
    return reference.canny(x, low, high, sigma, hysteresis, use_quantiles)


def _edges_like(x, low, high, sigma, hysteresis, use_quantiles):
    reference.check_canny_args(x, low, high, sigma, use_quantiles)
    return x.new_empty(x.shape, dtype=torch.bool)


if "canny" in op_names():
    torch.library.register_fake("dal::canny")(_edges_like)
