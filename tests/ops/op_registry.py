"""The ops under the contract of test_contract.py, in the manner of kornia's BaseTester: for each,
how to make its inputs, its full schema arguments, the dtypes it takes, how its result is
compared, what its gradient is, and the bad inputs it refuses (with the exact exception type the
reference raises, which every path must raise).

A Case is one op with fixed scalar arguments (some ops have two, where the scalars pick distinct
code paths); the per-op tests take the first case of each op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
TOLERANCE = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-2),
    torch.bfloat16: dict(rtol=2e-2, atol=5e-2),
}


def random(shape, dtype, device, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def smooth(shape, dtype, device, seed=0) -> torch.Tensor:
    """Random blobs: Canny finds edges of a few pixels, not noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    pool = F.avg_pool3d if len(shape) == 5 else F.avg_pool2d
    if min(shape[2:]) >= 5:  # tiny and empty images stay as they are
        x = pool(x, 5, 1, 2)
    return x.to(dtype=dtype, device=device)


def blob(shape, device, seed=0) -> torch.Tensor:
    """A ball touching the volume's edge on one side, with random holes: erosion keeps a core,
    dilation fills the holes, and both change the border."""
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape[2:]], indexing="ij")
    ball = (sum(g**2 for g in grids).sqrt() < 0.9) | (grids[-1] > 0.8)
    holes = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.02
    return (ball.expand(shape) & ~holes).to(device)


def exact(got: torch.Tensor, want: torch.Tensor, dtype) -> None:
    assert torch.equal(got.cpu(), want.cpu())


def close(got: torch.Tensor, want: torch.Tensor, dtype) -> None:
    torch.testing.assert_close(got.cpu(), want.cpu(), **TOLERANCE[dtype])


def edges(got: torch.Tensor, want: torch.Tensor, dtype) -> None:
    """Equal, but in reduced precision for 1% of the edges (rounding flips ties on plateaus)."""
    tolerance = 0.0 if dtype == torch.float64 else 0.01
    assert (got.cpu() != want.cpu()).sum().item() <= tolerance * max(1, want.sum().item())


def straight_through_grad(got: torch.Tensor, want: torch.Tensor, dtype) -> None:
    tol = {torch.bfloat16: dict(rtol=1e-2, atol=1e-2), torch.float16: TOLERANCE[torch.float16]}
    torch.testing.assert_close(got.cpu(), want.cpu(), **tol.get(dtype, dict(rtol=1e-5, atol=1e-6)))


@dataclass(frozen=True)
class Bad:
    """A bad call: make(device) gives its full schema arguments."""

    id: str
    make: Callable[[str], tuple]
    error: type[Exception]
    words: str


@dataclass(frozen=True)
class Case:
    id: str
    name: str  # dal.ops.<name>, dal.ops.reference.<name>, torch.ops.dal.<name>
    inputs: Callable  # (shape, dtype, device, seed) -> tensors, the main one first
    args: Callable  # (*tensors) -> the full schema arguments
    shapes: tuple  # a 2D and a 3D shape of the main input
    tiny_shapes: tuple
    empty_shapes: tuple
    compare: Callable = exact
    dtypes: tuple = FLOATS
    # "smooth": gradcheck of the op and of its vector-Jacobian product; "straight_through":
    # gradcheck of the vector-Jacobian product (the forward is piecewise constant); "refused":
    # backward raises; "none": a bool output, nothing to differentiate.
    gradient: str = "none"
    grad_shapes: tuple = ()  # small 2D and 3D shapes for gradcheck of the op
    vjp_shapes: tuple = ()  # and of its vector-Jacobian product
    compare_grad: Callable = close
    backward: str | None = None  # the op's backward op, schema (grad, *args)
    cuda_graph: bool = False  # forward and backward capture in a CUDA graph
    autocast: bool = False  # the models run it under CPU autocast (bfloat16)
    bad: tuple = field(default=())


def _onehot_inputs(with_noise: bool):
    def inputs(shape, dtype, device, seed=0):
        logits = random(shape, dtype, device, seed)
        return (logits, random(shape, dtype, device, seed + 1)) if with_noise else (logits,)

    return inputs


def _x(d, *shape, dtype=torch.float32):
    return torch.rand(shape, device=d).to(dtype)


ONEHOT_BAD = (
    Bad("no_classes", lambda d: (torch.randn(2, 0, 3, device=d), 1.0, None, 1), ValueError, "K >= 1"),
    Bad("integer", lambda d: (torch.ones(2, 3, 4, dtype=torch.int64, device=d), 1.0, None, 1), TypeError,
        "logits must be a floating-point"),
    Bad("tau_zero", lambda d: (torch.randn(2, 3, 4, device=d), 0.0, None, 1), ValueError, "tau must be a positive"),
    Bad("tau_negative", lambda d: (torch.randn(2, 3, 4, device=d), -1.0, None, 1), ValueError, "tau must be a positive"),
    Bad("noise_shape", lambda d: (torch.randn(2, 3, 4, device=d), 1.0, torch.randn(2, 3, 5, device=d), 1), ValueError,
        "noise must have the shape"),
    Bad("dim", lambda d: (torch.randn(2, 3, 4, device=d), 1.0, None, 3), IndexError, "dim must be in"),
)
SOBEL_BAD = (
    Bad("3_dims", lambda d: (torch.randn(2, 3, 4, device=d), True, False), ValueError,
        r"x must be \(N, C, H, W\) or \(N, C, D, H, W\)"),
    Bad("6_dims", lambda d: (torch.randn(1, 1, 2, 3, 4, 5, device=d), True, False), ValueError, r"x must be \(N, C, H, W\)"),
    Bad("integer", lambda d: (torch.ones(1, 1, 4, 4, dtype=torch.int64, device=d), True, False), TypeError,
        "x must be a floating-point"),
)
CANNY_BAD = (
    Bad("3_dims", lambda d: (_x(d, 2, 12, 12), 0.1, 0.2, 1.0, True, False), ValueError,
        r"x must be \(N, C, H, W\) or \(N, C, D, H, W\)"),
    Bad("integer", lambda d: (_x(d, 1, 1, 8, 8, dtype=torch.int32), 0.1, 0.2, 1.0, True, False), TypeError,
        "x must be a floating-point"),
    Bad("low_above_high", lambda d: (_x(d, 1, 1, 8, 8), 0.3, 0.2, 1.0, True, False), ValueError, "low must be <= high"),
    Bad("sigma", lambda d: (_x(d, 1, 1, 8, 8), 0.1, 0.2, -1.0, True, False), ValueError, "sigma must be a finite number >= 0"),
    Bad("quantiles", lambda d: (_x(d, 1, 1, 8, 8), 0.1, 1.2, 1.0, True, True), ValueError, r"quantiles in \[0, 1\]"),
)
MEDIAN_BAD = (
    Bad("kernel_even", lambda d: (torch.randn(1, 1, 5, 5, device=d), 4), ValueError, "kernel_size must be an odd integer"),
    Bad("kernel_large", lambda d: (torch.randn(1, 1, 5, 5, device=d), 9), ValueError, "kernel_size must be an odd integer"),
    Bad("kernel_zero", lambda d: (torch.randn(1, 1, 5, 5, device=d), 0), ValueError, "kernel_size must be an odd integer"),
    Bad("integer", lambda d: (torch.ones(1, 1, 5, 5, dtype=torch.int32, device=d), 3), TypeError, "x must be a floating-point"),
    Bad("3_dims", lambda d: (torch.randn(5, 5, 5, device=d), 3), ValueError, r"x must be \(N, C, H, W\)"),
)
RESIDUAL_BAD = (
    Bad("phi_shape", lambda d: (_x(d, 1, 1, 5, 5), _x(d, 1, 1, 5, 6), None, 5, 0), ValueError, "phi must have the shape"),
    Bad("phi_dtype", lambda d: (_x(d, 1, 1, 5, 5), _x(d, 1, 1, 5, 5, dtype=torch.float64), None, 5, 0), ValueError,
        "phi must have"),
    Bad("mask_channels", lambda d: (_x(d, 1, 2, 5, 5), _x(d, 1, 2, 5, 5), torch.ones(1, 3, 5, 5, device=d), 5, 0),
        ValueError, "mask must have the shape"),
    Bad("kernel_even", lambda d: (_x(d, 1, 1, 5, 5), _x(d, 1, 1, 5, 5), None, 6, 0), ValueError, "kernel_size must be an odd"),
    Bad("erode_negative", lambda d: (_x(d, 1, 1, 5, 5), _x(d, 1, 1, 5, 5), None, 3, -1), ValueError, "erode must be >= 0"),
)
MORPHOLOGY_BAD = (
    Bad("radius_negative", lambda d: (torch.ones(1, 1, 3, 3, device=d), -1), ValueError, "radius must be >= 0"),
    Bad("2_dims", lambda d: (torch.ones(3, 3, device=d), 1), ValueError, r"mask must be \(N, C, H, W\)"),
)

_SOBEL = dict(
    name="sobel",
    inputs=lambda shape, dtype, device, seed=0: (random(shape, dtype, device, seed),),
    shapes=((2, 3, 9, 11), (2, 2, 5, 6, 7)),
    tiny_shapes=((1, 1, 1, 5), (1, 1, 2, 1, 3), (1, 2, 3, 1)),
    empty_shapes=((0, 1, 5, 5), (2, 3, 0, 5), (1, 1, 4, 0, 3)),
    compare=close,
    gradient="smooth",
    grad_shapes=((2, 2, 6, 5), (1, 2, 4, 5, 3)),
    vjp_shapes=((1, 2, 5, 4), (1, 1, 3, 4, 3)),
    backward="sobel_backward",
    cuda_graph=True,
    autocast=True,
    bad=SOBEL_BAD,
)
_CANNY = dict(
    name="canny",
    inputs=lambda shape, dtype, device, seed=0: (smooth(shape, dtype, device, seed),),
    shapes=((2, 2, 37, 41), (2, 1, 17, 19, 23)),
    tiny_shapes=((1, 1, 2, 2), (1, 1, 1, 1, 1)),
    empty_shapes=((0, 1, 5, 5), (2, 3, 0, 5), (1, 1, 4, 0, 3)),
    compare=edges,
    bad=CANNY_BAD,
)
_ONEHOT = dict(
    name="onehot_st",
    shapes=((2, 4, 9, 11), (2, 3, 5, 6, 7)),
    tiny_shapes=((1, 1, 1, 1), (1, 2, 1, 3, 1)),
    empty_shapes=((0, 4, 5, 5), (2, 4, 0, 5)),
    gradient="straight_through",
    vjp_shapes=((2, 4, 3, 3), (1, 3, 2, 3, 2)),
    compare_grad=straight_through_grad,
    backward="onehot_st_backward",
    cuda_graph=True,
    autocast=True,
    bad=ONEHOT_BAD,
)
_RESIDUAL = dict(
    name="residual_score",
    shapes=((2, 1, 17, 40), (1, 2, 9, 12, 35)),
    tiny_shapes=((1, 1, 1, 1, 1), (1, 1, 3, 1)),
    empty_shapes=((0, 1, 4, 4), (1, 2, 0, 5, 5)),
    gradient="refused",
    bad=RESIDUAL_BAD,
)


def _residual_inputs(shape, dtype, device, seed=0):
    x = random(shape, dtype, device, seed)
    phi = (x.double() + 0.1 * random(shape, torch.float64, device, seed + 1)).to(dtype)
    return x, phi, blob((shape[0], 1, *shape[2:]), device, seed)


def _mask_inputs(shape, dtype, device, seed=0):
    return (blob(shape, device, seed).to(dtype),)


_MORPHOLOGY = dict(
    inputs=_mask_inputs,
    shapes=((2, 1, 15, 17), (1, 2, 7, 9, 11)),
    tiny_shapes=((1, 1, 1, 1, 1), (1, 1, 3, 1)),
    empty_shapes=((0, 1, 4, 4), (1, 2, 0, 5, 5)),
    dtypes=(torch.bool, torch.uint8, *FLOATS),
    bad=MORPHOLOGY_BAD,
)

CASES = [
    Case("onehot_st", inputs=_onehot_inputs(False), args=lambda z: (z, 0.5, None, 1), **_ONEHOT),
    Case("onehot_st_noise", inputs=_onehot_inputs(True), args=lambda z, n: (z, 1.0, n, 1), **_ONEHOT),
    Case("sobel", args=lambda x: (x, True, False), **_SOBEL),
    Case("sobel_components_normalized", args=lambda x: (x, False, True), **_SOBEL),
    Case("canny", args=lambda x: (x, 0.01, 0.05, 1.0, True, False), **_CANNY),
    Case("canny_quantiles_no_hysteresis", args=lambda x: (x, 0.7, 0.9, 0.5, False, True), **_CANNY),
    Case("median_filter", "median_filter", lambda shape, dtype, device, seed=0: (random(shape, dtype, device, seed),),
         lambda x: (x, 5), shapes=((2, 3, 9, 37), (1, 2, 7, 11, 45)),
         tiny_shapes=((1, 1, 1, 1, 1), (1, 1, 3, 1), (2, 1, 5, 33, 2)),
         empty_shapes=((0, 1, 4, 4), (1, 2, 0, 5, 5), (2, 1, 3, 0)), gradient="refused", bad=MEDIAN_BAD),
    Case("residual_score", inputs=_residual_inputs, args=lambda x, phi, mask: (x, phi, mask, 3, 1), **_RESIDUAL),
    Case("residual_score_no_mask", inputs=_residual_inputs, args=lambda x, phi, mask: (x, phi, None, 5, 0), **_RESIDUAL),
    Case("binary_erode", "binary_erode", args=lambda m: (m, 1), **_MORPHOLOGY),
    Case("binary_dilate", "binary_dilate", args=lambda m: (m, 2), **_MORPHOLOGY),
]
# The per-op tests (path, fallback, bad input) take each op's first case.
OPS = {c.name: c for c in reversed(CASES)}
