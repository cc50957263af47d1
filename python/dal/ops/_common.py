"""What the ops' Python faces share: the refusal of a gradient, on both paths."""
from __future__ import annotations

import torch


def _refuse(op: str):
    raise RuntimeError(f"dal.ops.{op} has no gradient: compute it under torch.no_grad() or detach its inputs")


def no_gradient(op: str):
    """An autograd backward (for torch.library.register_autograd) that refuses: a score map is not
    trained through, and a silent zero or None gradient would hide the mistake of trying."""

    def backward(ctx, grad):
        _refuse(op)

    return backward


class _NoGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op, out, *inputs):
        ctx.op = op
        return out

    @staticmethod
    def backward(ctx, grad):
        _refuse(ctx.op)


def refusing_gradient(op: str, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """out (computed by the reference under torch.no_grad()) tied to the inputs so that a backward
    through it refuses as the compiled op's does, instead of differentiating the reference."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return _NoGradient.apply(op, out, *inputs)
    return out
