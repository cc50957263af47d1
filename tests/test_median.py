"""dal.ops.median_filter against scipy.ndimage.median_filter(mode="nearest") and its reference."""
import warnings

import numpy as np
import pytest
import scipy.ndimage
import torch

from dal import ops
from dal.ops import reference


def _volume(shape, dtype, device, seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if ties:
        x = torch.round(x * 1.5)  # a handful of distinct values: ties in every window
    return x.to(dtype=dtype, device=device)


def _scipy_median(x: torch.Tensor, k: int) -> np.ndarray:
    size = (1, 1) + (k,) * (x.dim() - 2)
    return scipy.ndimage.median_filter(x.cpu().numpy(), size=size, mode="nearest")


SHAPES = [(2, 3, 9, 37), (1, 2, 7, 11, 45), (1, 1, 1, 1, 1), (1, 1, 3, 1), (2, 1, 5, 33, 2)]


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_scipy_exactly(device, k, shape, ties, dtype):
    x = _volume(shape, dtype, device, ties=ties)
    out = ops.median_filter(x, k)
    assert out.dtype == dtype and out.shape == x.shape
    assert np.array_equal(out.cpu().numpy(), _scipy_median(x, k))
    assert torch.equal(out, reference.median_filter(x, k))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_is_exact(device, dtype):
    x = _volume((1, 2, 6, 9, 40), dtype, device, seed=1)
    out = ops.median_filter(x, 5)
    assert out.dtype == dtype
    assert np.array_equal(out.float().cpu().numpy(), _scipy_median(x.float(), 5))


def test_infinities_and_constant_regions(device):
    x = _volume((1, 1, 8, 10, 35), torch.float32, device, seed=2)
    x[..., :4, :, :] = 0.0  # background
    x[0, 0, 5, 3:6, 10:13] = float("inf")
    x[0, 0, 6, 0, 0] = -float("inf")
    out = ops.median_filter(x, 3)
    assert np.array_equal(out.cpu().numpy(), _scipy_median(x, 3))
    assert bool((out[..., :3, :, :] == 0).all())


def test_an_isolated_spot_smaller_than_the_window_is_erased(device):
    x = torch.zeros(1, 1, 9, 9, 9, device=device)
    x[0, 0, 3:5, 3:5, 3:5] = 1.0  # 8 voxels: fewer than half of any 5^3 window
    assert float(ops.median_filter(x, 5).max()) == 0.0
    x[0, 0, 2:7, 2:7, 2:7] = 1.0  # 125 voxels: the centre keeps its value
    assert float(ops.median_filter(x, 5)[0, 0, 4, 4, 4]) == 1.0


def test_non_contiguous_input(device):
    base = _volume((1, 9, 20, 2, 12), torch.float32, device, seed=3)
    x = base.permute(0, 3, 4, 1, 2)[..., ::2]  # (1, 2, 12, 9, 10), strided
    assert not x.is_contiguous()
    assert np.array_equal(ops.median_filter(x, 5).cpu().numpy(), _scipy_median(x, 5))


@pytest.mark.parametrize("shape", [(0, 1, 4, 4), (1, 2, 0, 5, 5), (2, 1, 3, 0)])
def test_empty_input(device, shape):
    x = torch.empty(shape, device=device)
    out = ops.median_filter(x, 3)
    assert out.shape == shape


def test_opcheck(device):
    x = _volume((1, 2, 4, 5, 6), torch.float32, device)
    torch.library.opcheck(torch.ops.dal.median_filter.default, (x, 3))
    torch.library.opcheck(torch.ops.dal.median_filter.default, (x[:, :, 0], 5))


def test_backward_refuses_instead_of_a_silent_zero_gradient(device):
    x = _volume((1, 1, 4, 5, 6), torch.float32, device).requires_grad_()
    out = ops.median_filter(x, 3)
    if ops.implementation("median_filter", device) == "compiled":
        with pytest.raises(RuntimeError, match="median_filter has no gradient"):
            out.sum().backward()
    with torch.no_grad():
        assert not ops.median_filter(x, 3).requires_grad


def test_torch_compile_fullgraph(device):
    def score(x):
        return ops.median_filter(x * 2.0, 3) + 1.0

    x = _volume((1, 1, 5, 6, 7), torch.float32, device)
    compiled = torch.compile(score, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), score(x))


@pytest.mark.parametrize(
    "make_args, error, words",
    [
        (lambda d: (torch.randn(1, 1, 5, 5, device=d), 4), ValueError, "kernel_size must be an odd integer"),
        (lambda d: (torch.randn(1, 1, 5, 5, device=d), 9), ValueError, "kernel_size must be an odd integer"),
        (lambda d: (torch.randn(1, 1, 5, 5, device=d), 0), ValueError, "kernel_size must be an odd integer"),
        (lambda d: (torch.ones(1, 1, 5, 5, dtype=torch.int32, device=d), 3), TypeError, "x must be a floating-point"),
        (lambda d: (torch.randn(5, 5, 5, device=d), 3), ValueError, r"x must be \(N, C, H, W\)"),
    ],
)
def test_bad_input_names_the_argument(device, make_args, error, words):
    args = make_args(device)
    with pytest.raises((error, RuntimeError), match=words):
        ops.median_filter(*args)
    with pytest.raises(error, match=words):
        reference.median_filter(*args)
    if ops.implementation("median_filter", device) == "compiled":
        with pytest.raises(RuntimeError, match=words):
            torch.ops.dal.median_filter(*args)


def test_fallback_is_announced(monkeypatch):
    from dal.ops import _extension

    monkeypatch.setattr(_extension, "_COMPILED", frozenset())
    monkeypatch.setattr(_extension, "_warned", set())
    x = _volume((1, 1, 6, 7), torch.float32, "cpu")
    with pytest.warns(ops.DalFallbackWarning, match="median_filter: running the pure-torch reference"):
        out = ops.median_filter(x, 3)
    assert np.array_equal(out.numpy(), _scipy_median(x, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.median_filter(x, 3)
