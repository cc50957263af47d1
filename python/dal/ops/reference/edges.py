"""Pure-torch references of the edge ops: Sobel (2D/3D, differentiable) and Canny (2D/3D)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dal.ops.reference._common import compute_dtype

__all__ = ["check_edge_input", "sobel", "sobel_backward"]


def check_edge_input(x: torch.Tensor, name: str = "x") -> int:
    """Validates an edge op's image argument as the kernels do; returns its spatial dims (2 or 3)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point tensor (float32, float64, bfloat16 or float16), got {got}")
    if x.dim() not in (4, 5):
        raise ValueError(f"{name} must be (N, C, H, W) or (N, C, D, H, W), got {x.dim()} dimensions {tuple(x.shape)}")
    return x.dim() - 2


def _along(t: torch.Tensor, axis: int, kernel: tuple[float, float, float]) -> torch.Tensor:
    """Correlates t with a 3-tap kernel along `axis`, replicate border."""
    n = t.shape[axis]
    before = torch.cat([t.narrow(axis, 0, 1), t.narrow(axis, 0, n - 1)], axis)
    after = torch.cat([t.narrow(axis, 1, n - 1), t.narrow(axis, n - 1, 1)], axis)
    return kernel[0] * before + kernel[1] * t + kernel[2] * after


_SMOOTH, _DIFF = (1.0, 2.0, 1.0), (-1.0, 0.0, 1.0)


def _components(x: torch.Tensor, normalized: bool) -> torch.Tensor:
    dims = x.dim() - 2
    axes = list(range(x.dim() - 1, 1, -1))  # W, H[, D]: kornia's component order x, y[, z]
    comps = []
    for derivative_axis in axes:
        g = x
        for axis in axes:
            g = _along(g, axis, _DIFF if axis == derivative_axis else _SMOOTH)
        comps.append(g)
    scale = 1.0 / (8.0 if dims == 2 else 32.0) if normalized else 1.0
    return torch.stack(comps, 2) * scale


def sobel(x: torch.Tensor, magnitude: bool = True, normalized: bool = False) -> torch.Tensor:
    """Sobel gradient of (N, C, H, W) or (N, C, D, H, W), replicate border: the magnitude
    (N, C, ...) or the components (N, C, dims, ...), ordered x (W), y (H), z (D)."""
    check_edge_input(x)
    if x.numel() == 0:
        shape = list(x.shape) if magnitude else [*x.shape[:2], x.dim() - 2, *x.shape[2:]]
        return x.new_zeros(shape)
    g = _components(x.to(compute_dtype(x.dtype)), normalized)
    if not magnitude:
        return g.to(x.dtype)
    squared = (g * g).sum(2)
    nonzero = squared > 0
    # sqrt's gradient is infinite at 0: take it only where the gradient is non-zero, so that the
    # magnitude's gradient is 0 where the image gradient is 0.
    mag = torch.where(nonzero, torch.sqrt(torch.where(nonzero, squared, torch.ones_like(squared))), 0.0)
    return mag.to(x.dtype)


def sobel_backward(grad: torch.Tensor, x: torch.Tensor, magnitude: bool = True, normalized: bool = False) -> torch.Tensor:
    """The vector-Jacobian product of sobel: d<grad, sobel(x)>/dx (differentiable itself)."""
    check_edge_input(x)
    with torch.enable_grad():
        x_ = x if x.requires_grad else x.detach().requires_grad_()
        out = sobel(x_, magnitude, normalized)
        if grad.shape != out.shape:
            raise ValueError(f"grad must have the shape of sobel's output {tuple(out.shape)}, got {tuple(grad.shape)}")
        (grad_x,) = torch.autograd.grad(out, x_, grad, create_graph=torch.is_grad_enabled() or grad.requires_grad)
    return grad_x
