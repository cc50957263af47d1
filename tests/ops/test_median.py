"""What only dal.ops.median_filter has: scipy.ndimage.median_filter(mode="nearest") as its exact
oracle, for every window size, with ties and infinities, and on a GPU every window's kernel and
many images. The contract (dtypes, shapes, layouts, bad input, opcheck, refused gradient,
reference, fallback) is in test_contract.py."""
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


def test_torch_compile_fullgraph(device):
    def score(x):
        return ops.median_filter(x * 2.0, 3) + 1.0

    x = _volume((1, 1, 5, 6, 7), torch.float32, device)
    compiled = torch.compile(score, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), score(x))


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("spatial", [2, 3])
def test_every_window_size_on_the_gpu(cuda_device, k, spatial):
    """Each window has its own kernel (wires sized by it) and its own cached plan: every one, twice."""
    x = _volume((1, 2, 6, 9, 10) if spatial == 3 else (2, 2, 9, 10), torch.float32, "cpu")
    want = ops.median_filter(x, k)
    for _ in range(2):
        assert torch.equal(ops.median_filter(x.to(cuda_device), k).cpu(), want)


def test_many_images_past_the_grid_limit(cuda_device):
    x = _volume((70000, 1, 4, 4), torch.float32, "cpu")
    assert torch.equal(ops.median_filter(x.to(cuda_device), 3).cpu(), ops.median_filter(x, 3))
