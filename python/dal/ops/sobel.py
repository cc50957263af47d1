"""The Sobel operator: fused 2D/3D gradient or magnitude, differentiable."""
from __future__ import annotations

import torch

from dal.ops import reference
from dal.ops._extension import has_kernel, op_names, warn_fallback
from dal.ops.reference.sobel import sobel_shape


def sobel(x: torch.Tensor, magnitude: bool = True, normalized: bool = False) -> torch.Tensor:
    """Sobel gradient of 2D or 3D images, replicate border, in one fused pass.

    The derivative along an axis is scipy.ndimage.sobel's: the central difference [-1, 0, 1]
    along it, smoothed by [1, 2, 1] along every other spatial axis. The backward is fused too
    (the adjoint stencil); the magnitude's gradient is 0 where the image gradient is 0.

    Args:
        x: (N, C, H, W) or (N, C, D, H, W) floating tensor.
        magnitude: return the gradient magnitude (default) rather than its components.
        normalized: divide by the kernel's absolute sum (8 in 2D, 32 in 3D), as kornia does.

    Returns:
        (N, C, H, W) / (N, C, D, H, W) magnitude, or with ``magnitude=False`` the components
        (N, C, 2, H, W) / (N, C, 3, D, H, W) ordered x (along W), y (along H), z (along D),
        as kornia's spatial_gradient orders them. Same dtype as ``x``, contiguous.
    """
    if has_kernel("sobel", x.device.type):
        return torch.ops.dal.sobel(x, bool(magnitude), bool(normalized))
    warn_fallback("sobel", x.device.type)
    return reference.sobel(x, magnitude, normalized)


def _output_like(x, magnitude, normalized):
    reference.check_image(x)
    return x.new_empty(sobel_shape(x, magnitude))


def _setup_context(ctx, inputs, output):
    x, magnitude, normalized = inputs
    ctx.save_for_backward(x)
    ctx.magnitude, ctx.normalized = magnitude, normalized


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.ops.dal.sobel_backward(grad, x, ctx.magnitude, ctx.normalized), None, None


def _setup_context_of_backward(ctx, inputs, output):
    grad, x, magnitude, normalized = inputs
    ctx.save_for_backward(grad, x)
    ctx.magnitude, ctx.normalized = magnitude, normalized


def _double_backward(ctx, grad_of_grad_x):
    """Gradient of the backward kernel, for gradcheck and second-order use (pure torch)."""
    grad, x = ctx.saved_tensors
    with torch.enable_grad():
        grad_ = grad.detach().requires_grad_()
        x_ = x.detach().requires_grad_()
        grad_x = reference.sobel_backward(grad_, x_, ctx.magnitude, ctx.normalized)
        wrt_grad, wrt_x = torch.autograd.grad(grad_x, (grad_, x_), grad_of_grad_x, allow_unused=True)
    if wrt_x is None:  # the components' backward is linear: it does not depend on x
        wrt_x = torch.zeros_like(x)
    return wrt_grad, wrt_x, None, None


if "sobel" in op_names():
    torch.library.register_fake("dal::sobel")(_output_like)
    torch.library.register_fake("dal::sobel_backward")(lambda grad, x, magnitude, normalized: x.new_empty(x.shape))
    torch.library.register_autograd("dal::sobel", _backward, setup_context=_setup_context)
    torch.library.register_autograd("dal::sobel_backward", _double_backward, setup_context=_setup_context_of_backward)
