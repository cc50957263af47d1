"""Median filter on a 160x192x160 float32 volume (a 1 mm brain, cropped) vs the peers a user
would call: scipy.ndimage.median_filter (mode="nearest", exact, the same values) and the torch
unfold + median composite (dal.ops.reference, the same values, slab by slab); on a GPU, the
composite on the same GPU. bench_residual.py puts residual_score in the 5^3 group: run both files
together for that row.
"""
import numpy as np
import pytest
import scipy.ndimage
import torch

from dal import ops
from dal.ops import reference

SHAPE = (1, 1, 160, 192, 160)
GROUP = "median 160x192x160 f32"


@pytest.fixture(scope="module")
def volume():
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(0))  # bench_residual.py's x


def _scipy_median(x, k):
    return scipy.ndimage.median_filter(x.numpy()[0, 0], size=k, mode="nearest")


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.benchmark(group=GROUP)
def test_median_dal(run, volume, k):
    assert ops.implementation("median_filter", "cpu") == "compiled"
    out = run(lambda: ops.median_filter(volume, k), rounds=5)
    if k == 3:  # exactness on the benchmark volume itself (scipy's k=3 is the cheaper check)
        assert np.array_equal(out.numpy()[0, 0], _scipy_median(volume, k))


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.benchmark(group=GROUP)
def test_median_scipy(run, volume, k):
    run(lambda: _scipy_median(volume, k), rounds=1, warmup=0)


@pytest.mark.parametrize("k", [5])
@pytest.mark.benchmark(group=GROUP)
def test_median_torch_unfold_composite(run, volume, k):
    run(lambda: reference.median_filter(volume, k), rounds=1, warmup=0)


# ---- on a GPU ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.benchmark(group="cuda " + GROUP)
def test_cuda_median_dal(gpu, cuda_volume, k):
    assert ops.implementation("median_filter", "cuda") == "compiled"
    gpu(lambda: ops.median_filter(cuda_volume, k))


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.benchmark(group="cuda " + GROUP)
def test_cuda_median_torch_unfold_composite(gpu, cuda_volume, k):
    gpu(lambda: reference.median_filter(cuda_volume, k), rounds=3)
