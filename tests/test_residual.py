"""dal.ops.residual_score and binary_erode / binary_dilate against scipy and their references."""
import numpy as np
import pytest
import scipy.ndimage
import torch

from dal import ops
from dal.ops import reference


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


def _scipy_erode(mask: torch.Tensor, radius: int) -> np.ndarray:
    size = (1, 1) + (2 * radius + 1,) * (mask.dim() - 2)
    return scipy.ndimage.minimum_filter((mask != 0).cpu().numpy(), size=size, mode="nearest")


def _scipy_score(x, phi, mask, k, erode):
    residual = np.abs(x.cpu().numpy() - phi.cpu().numpy())
    if mask is not None:
        residual = np.where(_scipy_erode(mask, erode), residual, 0)
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


def test_bfloat16(device):
    x, phi = _pair((1, 1, 5, 8, 34), torch.bfloat16, device, seed=7)
    mask = _mask(x.shape, device)
    out = ops.residual_score(x, phi, mask, 5, 1)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference.residual_score(x, phi, mask, 5, 1))


def test_non_contiguous_and_empty(device):
    x, phi = _pair((1, 8, 10, 2, 12), torch.float32, device, seed=8)
    x, phi = x.permute(0, 3, 1, 2, 4), phi.permute(0, 3, 1, 2, 4)
    mask = _mask((1, 2, 8, 10, 12), device)  # expanded from one volume: strided
    assert not x.is_contiguous()
    assert torch.equal(ops.residual_score(x, phi, mask, 3, 1), reference.residual_score(x, phi, mask, 3, 1))
    empty = torch.empty(0, 1, 4, 4, device=device)
    assert ops.residual_score(empty, empty, empty, 3, 1).shape == empty.shape


@pytest.mark.parametrize("shape", [(2, 1, 15, 17), (1, 2, 7, 9, 11)])
@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_binary_erode_and_dilate_equal_scipy(device, shape, radius):
    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(radius)) < 0.7).to(device)
    size = (1, 1) + (2 * radius + 1,) * (len(shape) - 2)
    eroded = ops.binary_erode(mask.float(), radius)
    dilated = ops.binary_dilate(mask, radius)
    assert eroded.dtype == torch.bool and dilated.dtype == torch.bool
    assert np.array_equal(eroded.cpu().numpy(), _scipy_erode(mask, radius))
    assert np.array_equal(
        dilated.cpu().numpy(), scipy.ndimage.maximum_filter(mask.cpu().numpy(), size=size, mode="nearest")
    )
    assert torch.equal(eroded, reference.binary_erode(mask, radius))
    assert torch.equal(dilated, reference.binary_dilate(mask, radius))


def test_the_volume_edge_does_not_erode(device):
    mask = torch.ones(1, 1, 4, 5, 6, device=device)
    assert bool(ops.binary_erode(mask, 2).all())


def test_opcheck(device):
    x, phi = _pair((1, 2, 4, 5, 6), torch.float32, device)
    mask = _mask((1, 1, 4, 5, 6), device)
    torch.library.opcheck(torch.ops.dal.residual_score.default, (x, phi, mask, 3, 1))
    torch.library.opcheck(torch.ops.dal.residual_score.default, (x, phi, None, 5, 0))
    torch.library.opcheck(torch.ops.dal.binary_erode.default, (mask, 1))
    torch.library.opcheck(torch.ops.dal.binary_dilate.default, (mask, 2))


@pytest.mark.parametrize(
    "make_args, error, words",
    [
        (lambda d: (torch.rand(1, 1, 5, 5, device=d), torch.rand(1, 1, 5, 6, device=d)), ValueError, "phi must have the shape"),
        (lambda d: (torch.rand(1, 1, 5, 5, device=d), torch.rand(1, 1, 5, 5, device=d, dtype=torch.float64)), ValueError, "phi must have"),
        (lambda d: (torch.rand(1, 2, 5, 5, device=d), torch.rand(1, 2, 5, 5, device=d), torch.ones(1, 3, 5, 5, device=d)), ValueError, "mask must have the shape"),
        (lambda d: (torch.rand(1, 1, 5, 5, device=d), torch.rand(1, 1, 5, 5, device=d), None, 6), ValueError, "kernel_size must be an odd"),
        (lambda d: (torch.rand(1, 1, 5, 5, device=d), torch.rand(1, 1, 5, 5, device=d), None, 3, -1), ValueError, "erode must be >= 0"),
    ],
)
def test_bad_input_names_the_argument(device, make_args, error, words):
    args = make_args(device)
    with pytest.raises((error, RuntimeError), match=words):
        ops.residual_score(*args)
    with pytest.raises(error, match=words):
        reference.residual_score(*args)
    if ops.implementation("residual_score", device) == "compiled":
        full = list(args) + [None, 5, 0][len(args) - 2 :]
        with pytest.raises(RuntimeError, match=words):
            torch.ops.dal.residual_score(*full)


def test_morphology_bad_input(device):
    with pytest.raises((ValueError, RuntimeError), match="radius must be >= 0"):
        ops.binary_erode(torch.ones(1, 1, 3, 3, device=device), -1)
    with pytest.raises((ValueError, RuntimeError), match=r"mask must be \(N, C, H, W\)"):
        ops.binary_dilate(torch.ones(3, 3, device=device), 1)


def test_inputs_are_left_untouched(device):
    x, phi = _pair((1, 1, 6, 7, 8), torch.float32, device, seed=9)
    mask = _mask((1, 1, 6, 7, 8), device).contiguous()
    before = (x.clone(), phi.clone(), mask.clone())
    ops.binary_erode(mask, 2)
    ops.binary_dilate(mask, 1)
    ops.residual_score(x, phi, mask, 3, 2)
    assert all(torch.equal(a, b) for a, b in zip((x, phi, mask), before))


def test_backward_refuses(device):
    x, phi = _pair((1, 1, 4, 5, 6), torch.float32, device)
    out = ops.residual_score(x.requires_grad_(), phi, None, 3)
    if ops.implementation("residual_score", device) == "compiled":
        with pytest.raises(RuntimeError, match="residual_score has no gradient"):
            out.sum().backward()
