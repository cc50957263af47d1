"""Pure-torch reference of the Sobel operator (2D/3D, differentiable)."""
from __future__ import annotations

import torch

from dal.ops.reference._common import check_floating, check_image, compute_dtype, shifted

__all__ = ["components", "sobel", "sobel_backward", "sobel_shape"]


def sobel_shape(x: torch.Tensor, magnitude: bool) -> list[int]:
    """The shape of sobel's output: x's for the magnitude, (N, C, dims, *spatial) for the components."""
    return list(x.shape) if magnitude else [*x.shape[:2], x.dim() - 2, *x.shape[2:]]


def _smooth(t: torch.Tensor, axis: int) -> torch.Tensor:
    """[1, 2, 1] along `axis`, summed as the kernels do: centre, then the pair around it."""
    return 2 * t + (shifted(t, axis, -1) + shifted(t, axis, 1))


def _diff(t: torch.Tensor, axis: int) -> torch.Tensor:
    return shifted(t, axis, 1) - shifted(t, axis, -1)


def components(x: torch.Tensor, normalized: bool) -> torch.Tensor:
    """The Sobel components (N, C, dims, *spatial) of x (N, C, *spatial), ordered x (W), y (H), z (D)."""
    dims = x.dim() - 2
    axes = list(range(x.dim() - 1, 1, -1))  # W, H[, D]: kornia's component order x, y[, z]
    comps = []
    for derivative_axis in axes:
        g = _diff(x, derivative_axis)
        for axis in axes:
            if axis != derivative_axis:
                g = _smooth(g, axis)
        comps.append(g)
    scale = 1.0 / (8.0 if dims == 2 else 32.0) if normalized else 1.0
    return torch.stack(comps, 2) * scale


def sobel(x: torch.Tensor, magnitude: bool = True, normalized: bool = False) -> torch.Tensor:
    """Sobel gradient of (N, C, H, W) or (N, C, D, H, W), replicate border: the magnitude
    (N, C, ...) or the components (N, C, dims, ...), ordered x (W), y (H), z (D)."""
    check_image(x)
    if x.numel() == 0:  # x * 0 keeps the graph: an empty input's gradient is empty, not missing
        empty = x * 0
        return empty if magnitude else empty.unsqueeze(2).expand(sobel_shape(x, False)).contiguous()
    g = components(x.to(compute_dtype(x.dtype)), normalized)
    if not magnitude:
        return g.to(x.dtype)
    squared = (g * g).sum(2)
    nonzero = squared > 0
    # sqrt's gradient is infinite at 0: take it only where the gradient is non-zero, so that the
    # magnitude's gradient is 0 where the image gradient is 0.
    mag = torch.where(nonzero, torch.sqrt(torch.where(nonzero, squared, torch.ones_like(squared))), 0.0)
    return mag.to(x.dtype)


def sobel_backward(grad: torch.Tensor, x: torch.Tensor, magnitude: bool = True, normalized: bool = False) -> torch.Tensor:
    """The vector-Jacobian product of sobel: d<grad, sobel(x)>/dx (differentiable itself).
    grad has the shape of sobel's output; the result has x's."""
    check_image(x)
    check_floating(grad, "grad")
    out_shape = tuple(x.shape) if magnitude else (*x.shape[:2], x.dim() - 2, *x.shape[2:])
    if tuple(grad.shape) != out_shape:
        raise ValueError(f"grad must have the shape of sobel's output {out_shape}, got {tuple(grad.shape)}")
    if grad.dtype != x.dtype:
        raise ValueError(f"grad must have the dtype of x ({x.dtype}), got {grad.dtype}")
    if grad.device != x.device:
        raise ValueError(f"grad must be on the device of x ({x.device}), got {grad.device}")
    with torch.enable_grad():
        x_ = x if x.requires_grad else x.detach().requires_grad_()
        out = sobel(x_, magnitude, normalized)
        (grad_x,) = torch.autograd.grad(out, x_, grad, create_graph=torch.is_grad_enabled() or grad.requires_grad)
    return grad_x
