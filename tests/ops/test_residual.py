"""What only dal.ops.residual_score has: scipy (the eroded mask, the residual, the median) as its
oracle, its identity with the composed ops, a mask of one channel, a non-finite residual outside
the mask. The contract (dtypes, shapes, layouts, bad input, opcheck, refused gradient, reference)
is in test_contract.py."""
import numpy as np
import pytest
import scipy.ndimage
import torch

from dal import ops
from dal.ops import reference
from test_morphology import scipy_erode


def _pair(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    phi = x + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(dtype=dtype, device=device), phi.to(dtype=dtype, device=device)


def _mask(shape, device, seed=1):
    """A blob: a ball around the centre, touching the volume's edge on one side."""
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape[2:]], indexing="ij")
    radius = sum(g**2 for g in grids).sqrt()
    blob = (radius < 0.9) | (grids[-1] > 0.8)
    return blob.expand(shape).to(device)


def _scipy_score(x, phi, mask, k, erode):
    residual = np.abs(x.cpu().numpy() - phi.cpu().numpy())
    if mask is not None:
        residual = np.where(scipy_erode(mask, erode), residual, 0)
    return scipy.ndimage.median_filter(residual, size=(1, 1) + (k,) * (x.dim() - 2), mode="nearest")


@pytest.mark.parametrize("shape", [(2, 1, 17, 40), (1, 2, 9, 12, 35)])
@pytest.mark.parametrize("k, erode", [(1, 0), (3, 1), (5, 2), (7, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_scipy_and_the_reference(device, shape, k, erode, dtype):
    x, phi = _pair(shape, dtype, device)
    mask = _mask(shape, device)
    out = ops.residual_score(x, phi, mask, k, erode)
    assert out.dtype == dtype and out.shape == x.shape
    assert np.array_equal(out.cpu().numpy(), _scipy_score(x, phi, mask, k, erode))
    assert torch.equal(out, reference.residual_score(x, phi, mask, k, erode))


def test_is_the_median_of_the_masked_residual(device):
    x, phi = _pair((1, 1, 8, 9, 33), torch.float32, device, seed=4)
    mask = _mask(x.shape, device).float()
    composed = ops.median_filter(torch.where(ops.binary_erode(mask, 1), (x - phi).abs(), 0.0), 5)
    assert torch.equal(ops.residual_score(x, phi, mask, 5, 1), composed)
    assert torch.equal(ops.residual_score(x, phi, None, 3), ops.median_filter((x - phi).abs(), 3))


def test_one_channel_mask_serves_every_channel(device):
    x, phi = _pair((2, 3, 6, 7, 8), torch.float32, device, seed=5)
    mask = _mask((2, 1, 6, 7, 8), device)
    out = ops.residual_score(x, phi, mask, 3, 1)
    assert torch.equal(out, ops.residual_score(x, phi, mask.expand(x.shape), 3, 1))
    assert torch.equal(out, reference.residual_score(x, phi, mask, 3, 1))


def test_non_finite_residual_outside_the_mask_does_not_leak(device):
    x, phi = _pair((1, 1, 6, 6, 6), torch.float32, device, seed=6)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., 1:5, 1:5, 1:5] = True
    x[..., 0, :, :] = float("inf")
    phi[..., :, 0, :] = float("nan")
    out = ops.residual_score(x, phi, mask, 3)
    assert bool(torch.isfinite(out).all())
    assert torch.equal(out, reference.residual_score(x, phi, mask, 3))
