"""Pure-torch reference of the straight-through one-hot operator."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dal.ops.reference._common import check_floating, compute_dtype

__all__ = ["check_onehot_args", "onehot_st", "onehot_st_backward"]


def check_onehot_args(logits: torch.Tensor, tau: float, noise: torch.Tensor | None, dim: int) -> int:
    """Validates onehot_st's arguments as the kernels do; returns dim wrapped to [0, ndim)."""
    check_floating(logits, "logits")
    if logits.dim() < 1:
        raise ValueError("logits must have at least one dimension (the classes)")
    if not -logits.dim() <= dim < logits.dim():
        raise IndexError(
            f"dim must be in [{-logits.dim()}, {logits.dim() - 1}] for logits of {logits.dim()} dimensions, got {dim}"
        )
    dim = dim % logits.dim()
    if logits.shape[dim] < 1:
        raise ValueError(f"logits must have at least one class along dim {dim} (K >= 1), got K = 0")
    if not (tau > 0 and tau != float("inf")):
        raise ValueError(f"tau must be a positive finite number, got {tau}")
    if noise is not None and (noise.shape != logits.shape or noise.dtype != logits.dtype):
        raise ValueError(
            f"noise must have the shape and dtype of logits {tuple(logits.shape)} {logits.dtype}, "
            f"got {tuple(noise.shape)} {noise.dtype}"
        )
    return dim


def _scaled_logits(logits, tau, noise):
    z = logits.to(compute_dtype(logits.dtype))
    if noise is not None:
        z = z + noise.to(z.dtype)
    return z / tau


def onehot_st(logits: torch.Tensor, tau: float = 1.0, noise: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """Straight-through one-hot of (N, K, *) logits along dim, a tensor of their shape and dtype:
    forward one_hot(argmax(z)), backward grad of softmax(z), z = (logits + noise) / tau."""
    dim = check_onehot_args(logits, tau, noise, dim)
    z = _scaled_logits(logits, tau, noise)
    soft = torch.softmax(z, dim)
    hard = F.one_hot(z.argmax(dim), logits.shape[dim]).movedim(-1, dim).to(z.dtype)
    # hard + (soft - soft) is exactly hard in the forward, and soft's gradient in the backward;
    # a pixel with a NaN logit keeps its hard one-hot (its gradient is not defined).
    out = hard + (soft - soft.detach())
    return torch.where(out.isnan(), hard, out).to(logits.dtype).contiguous()  # as the kernels return it


def onehot_st_backward(
    grad: torch.Tensor, logits: torch.Tensor, tau: float = 1.0, noise: torch.Tensor | None = None, dim: int = 1
) -> torch.Tensor:
    """The straight-through gradient, of logits' shape: s * (grad - <grad, s>) / tau with
    s = softmax(z) along dim; grad has the shape of logits."""
    dim = check_onehot_args(logits, tau, noise, dim)
    if grad.shape != logits.shape:
        raise ValueError(f"grad must have the shape of logits {tuple(logits.shape)}, got {tuple(grad.shape)}")
    z = _scaled_logits(logits, tau, noise)
    s = torch.softmax(z, dim)
    g = grad.to(z.dtype)
    return (s * (g - (g * s).sum(dim, keepdim=True)) / tau).to(logits.dtype)
