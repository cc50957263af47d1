"""Residual score (|x - phi| in the eroded mask, then the median, fused) on a 160x192x160 float32
volume. Its row in the 5^3 median group (bench_median.py's, run both files together) against
dal's median row is the cost of the fusion. The composite row of the residual group is what it
replaces: torch ops for the masked residual, then scipy's median; on a GPU, the pure-torch
composite (dal.ops.reference) on the same GPU.
"""
import numpy as np
import pytest
import scipy.ndimage
import torch

from dal import ops
from dal.ops import reference

SHAPE = (1, 1, 160, 192, 160)
CUDA_VOLUME = (1, 1, 160, 192, 160)
GROUP = "residual score k=5 erode=2 160x192x160 f32"


@pytest.fixture(scope="module")
def volume():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(SHAPE, generator=g)
    phi = x + 0.05 * torch.randn(SHAPE, generator=g)
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in SHAPE[2:]], indexing="ij")
    mask = (sum(c**2 for c in grids) < 0.8).reshape(SHAPE)
    return x, phi, mask


@pytest.mark.parametrize("k", [5])
@pytest.mark.benchmark(group="median 160x192x160 f32")
def test_residual_score_dal(run, volume, k):
    x, phi, mask = volume
    assert ops.implementation("residual_score", "cpu") == "compiled"
    run(lambda: ops.residual_score(x, phi, mask, k, erode=2), rounds=5)


@pytest.mark.benchmark(group=GROUP)
def test_residual_composite_torch_scipy(run, volume):
    x, phi, mask = volume

    def composite():
        eroded = scipy.ndimage.binary_erosion(mask.numpy()[0, 0], np.ones((5, 5, 5)), border_value=1)
        residual = np.where(eroded, (x - phi).abs().numpy()[0, 0], 0)
        return scipy.ndimage.median_filter(residual, size=5, mode="nearest")

    run(composite, rounds=1, warmup=0)


@pytest.mark.benchmark(group=GROUP)
def test_residual_dal(run, volume):
    x, phi, mask = volume
    run(lambda: ops.residual_score(x, phi, mask, 5, erode=2), rounds=5)


# ---- on a GPU ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cuda_scoring(brain_like, cuda):
    x = brain_like(CUDA_VOLUME).to(cuda)
    phi = x + 0.05 * torch.randn(CUDA_VOLUME, generator=torch.Generator().manual_seed(1)).to(cuda)
    return x, phi, x > x.mean()


@pytest.mark.benchmark(group="cuda " + GROUP)
def test_cuda_residual_dal(gpu, cuda_scoring):
    x, phi, mask = cuda_scoring
    gpu(lambda: ops.residual_score(x, phi, mask, 5, erode=2))


@pytest.mark.benchmark(group="cuda " + GROUP)
def test_cuda_residual_torch_composite(gpu, cuda_scoring):
    x, phi, mask = cuda_scoring
    gpu(lambda: reference.residual_score(x, phi, mask, 5, erode=2), rounds=3)
