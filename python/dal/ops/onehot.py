"""The differentiable one-hot operator: fake kernel, autograd, and public face."""
from __future__ import annotations

import torch

from dal.ops import reference
from dal.ops._extension import has_kernel, op_names, warn_fallback


def onehot_st(logits: torch.Tensor, tau: float = 1.0, noise: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """Straight-through hard one-hot of the arg-max along ``dim``.

    Forward: ``one_hot(argmax((logits + noise) / tau, dim))`` in the dtype of ``logits`` (ties go
    to the lowest index; NaN counts as the largest value). Backward: the gradient of
    ``softmax((logits + noise) / tau, dim)`` (straight-through). Deterministic: Gumbel noise, if
    wanted, is drawn by the caller and passed as ``noise``.

    Args:
        logits: (N, K, *) floating tensor (any number of spatial dims, K >= 1 classes along ``dim``).
        tau: softmax temperature, > 0.
        noise: optional tensor of the shape and dtype of ``logits``, added before scaling.
        dim: the class dimension.

    Returns:
        (N, K, *) tensor of exact zeros and ones, one 1 per pixel, contiguous.
    """
    if has_kernel("onehot_st", logits.device.type):
        return torch.ops.dal.onehot_st(logits, float(tau), noise, dim)
    warn_fallback("onehot_st", logits.device.type)
    return reference.onehot_st(logits, tau, noise, dim)


def _check_and_empty(logits, tau, noise, dim):
    reference.check_onehot_args(logits, tau, noise, dim)
    return logits.new_empty(logits.shape)


def _setup_context(ctx, inputs, output):
    logits, tau, noise, dim = inputs
    ctx.save_for_backward(logits, noise)
    ctx.tau, ctx.dim = tau, dim


def _backward(ctx, grad):
    logits, noise = ctx.saved_tensors
    grad_logits = torch.ops.dal.onehot_st_backward(grad, logits, ctx.tau, noise, ctx.dim)
    return grad_logits, None, grad_logits if noise is not None else None, None


def _setup_context_of_backward(ctx, inputs, output):
    grad, logits, tau, noise, dim = inputs
    ctx.save_for_backward(grad, logits, noise)
    ctx.tau, ctx.dim = tau, dim


def _double_backward(ctx, grad_of_grad_logits):
    """Gradient of the backward kernel, for gradcheck and second-order use (pure torch)."""
    grad, logits, noise = ctx.saved_tensors
    # The softmax Jacobian is symmetric: its transpose applied to v is the backward kernel itself.
    wrt_grad = torch.ops.dal.onehot_st_backward(grad_of_grad_logits, logits, ctx.tau, noise, ctx.dim)
    with torch.enable_grad():
        logits_ = logits.detach().requires_grad_()
        soft_vjp = reference.onehot_st_backward(grad, logits_, ctx.tau, noise, ctx.dim)
        (wrt_logits,) = torch.autograd.grad(soft_vjp, logits_, grad_of_grad_logits)
    return wrt_grad, wrt_logits, None, wrt_logits if noise is not None else None, None


if "onehot_st" in op_names():
    torch.library.register_fake("dal::onehot_st")(_check_and_empty)
    torch.library.register_fake("dal::onehot_st_backward")(
        lambda grad, logits, tau, noise, dim: _check_and_empty(logits, tau, noise, dim)
    )
    torch.library.register_autograd("dal::onehot_st", _backward, setup_context=_setup_context)
    torch.library.register_autograd(
        "dal::onehot_st_backward", _double_backward, setup_context=_setup_context_of_backward
    )
