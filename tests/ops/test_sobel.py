"""What only dal.ops.sobel has: scipy.ndimage.sobel as its oracle, its gradient where the image
is flat, the strips of its AVX-512 kernel and their bits against the portable one, the scalar
combinations that test_contract.py does not take, and its backward kernel's checks. The contract
(dtypes, shapes, layouts, bad input, opcheck, gradcheck, reference) is in test_contract.py.

On AVX-512 CPUs, CI runs this file and the contract's Sobel cases twice: on the AVX-512 kernel,
and with DAL_PORTABLE=1."""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from dal import ops
from dal.ops import reference


def _image(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


SHAPES = [(2, 3, 9, 11), (2, 2, 5, 6, 7), (1, 1, 1, 5), (1, 1, 2, 1, 3), (1, 2, 3, 1)]
TOLERANCE = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=2e-2, atol=5e-2),
}


def _scipy_components(x: torch.Tensor) -> np.ndarray:
    """scipy.ndimage.sobel of each image, components ordered x (last axis), y, z."""
    images = x.detach().cpu().double().numpy()
    spatial = images.ndim - 2
    return np.stack(
        [
            np.stack([np.stack([ndi.sobel(image, axis=a, mode="nearest") for a in range(spatial - 1, -1, -1)]) for image in sample])
            for sample in images
        ]
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("normalized", [False, True])
def test_matches_scipy_sobel(device, shape, normalized):
    x = _image(shape, torch.float64, device)
    expected = _scipy_components(x) / ((8.0 if len(shape) == 4 else 32.0) if normalized else 1.0)
    got = ops.sobel(x, magnitude=False, normalized=normalized)
    assert got.shape == (shape[0], shape[1], len(shape) - 2, *shape[2:])
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ops.sobel(x, normalized=normalized).cpu().numpy(), np.sqrt((expected**2).sum(2)), rtol=1e-12, atol=1e-12)


# The contract's cases are (magnitude, normalized) = (True, False) and (False, True): here the other two.
OTHER_SCALARS = pytest.mark.parametrize("magnitude, normalized", [(True, True), (False, False)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@OTHER_SCALARS
def test_forward_and_backward_match_reference(device, dtype, shape, magnitude, normalized):
    x = _image(shape, dtype, device).requires_grad_()
    out = ops.sobel(x, magnitude, normalized)
    expected = reference.sobel(x, magnitude, normalized)
    assert out.dtype == dtype and out.shape == expected.shape and out.is_contiguous()
    torch.testing.assert_close(out, expected, **TOLERANCE[dtype])
    grad = _image(tuple(out.shape), dtype, device, seed=1)
    (got,) = torch.autograd.grad(out, x, grad)
    (want,) = torch.autograd.grad(expected, x, grad)
    torch.testing.assert_close(got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("shape", [(2, 2, 6, 5), (1, 2, 4, 5, 3)])
@OTHER_SCALARS
def test_gradcheck(device, shape, magnitude, normalized):
    x = _image(shape, torch.float64, device).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.sobel(t, magnitude, normalized), (x,))


@pytest.mark.parametrize("shape", [(1, 2, 5, 4), (1, 1, 3, 4, 3)])
def test_gradgradcheck_of_the_components(device, shape):
    """The contract's gradcheck of the backward covers the magnitude and the normalized components."""
    x = _image(shape, torch.float64, device).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: ops.sobel(t, False), (x,))


@pytest.mark.parametrize("shape", [(1, 1, 6, 7), (1, 1, 4, 5, 6)])
def test_magnitude_gradient_is_zero_where_the_gradient_is_zero(device, shape):
    x = torch.zeros(shape, dtype=torch.float64, device=device)
    x[..., 3:, :] = 1.0  # a step along H: flat far from it
    x.requires_grad_()
    out = ops.sobel(x)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert torch.isfinite(grad).all()
    flat = torch.ones(shape, dtype=torch.float64, device=device, requires_grad=True)
    (flat_grad,) = torch.autograd.grad(ops.sobel(flat).sum(), flat)
    assert torch.equal(flat_grad, torch.zeros_like(flat_grad))
    torch.testing.assert_close(grad, reference.sobel_backward(torch.ones_like(out), x.detach()))


@pytest.mark.parametrize("shape", [(2, 3, 9, 37), (1, 2, 5, 9, 37), (1, 1, 128, 160, 208), (1, 1, 128, 161, 205)])
def test_float32_magnitude_over_vector_rows_and_streamed_outputs(device, shape):
    """The float32 magnitude's own CPU path (AVX-512 strips of 32 columns), with outputs of 16 MB
    and more written by streaming stores, on rows of whole cache lines (208) and not (205)."""
    x = _image(shape, torch.float32, device)
    x[..., :24] = 1.0  # a flat band: its magnitude must be exactly 0
    out = ops.sobel(x)
    torch.testing.assert_close(out, reference.sobel(x.double()).float(), rtol=1e-5, atol=1e-5)
    assert torch.all(out[..., 1:-1, 1:22] == 0) if len(shape) == 4 else torch.all(out[..., 1:-1, 1:-1, 1:22] == 0)


@pytest.mark.parametrize("spatial", [2, 3])
@pytest.mark.parametrize("normalized", [False, True])
def test_float32_magnitude_every_row_length(device, spatial, normalized):
    """Rows of 1 to 100 columns: every way a row splits into strips of 32 columns, interior and
    at the borders, with whole and partial vectors of 16."""
    for cols in range(1, 101):
        shape = (1, 2, 3, 4, cols) if spatial == 3 else (2, 1, 5, cols)
        x = _image(shape, torch.float32, device, seed=cols)
        torch.testing.assert_close(
            ops.sobel(x, normalized=normalized),
            reference.sobel(x.double(), normalized=normalized).float(),
            rtol=1e-5,
            atol=1e-5,
            msg=lambda m: f"{cols} columns: {m}",
        )


def test_one_volume_is_split_over_threads():
    """A single (1, 1, D, H, W) volume must give the same answer whatever the thread count."""
    x = _image((1, 1, 7, 33, 20), torch.float32, "cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.sobel(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, ops.sobel(x))


def test_torch_compile_fullgraph(device):
    def edges(x):
        return ops.sobel(x * 2.0) + 1.0

    x = _image((2, 4, 8, 8), torch.float32, device).requires_grad_()
    compiled = torch.compile(edges, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, edges(x))
    (g1,) = torch.autograd.grad(out.sum(), x)
    (g2,) = torch.autograd.grad(edges(x).sum(), x)
    torch.testing.assert_close(g1, g2)


def test_backward_kernel_checks_grad(device):
    x = _image((1, 1, 4, 5), torch.float32, device)
    if ops.implementation("sobel", device) != "compiled":
        pytest.skip("no compiled kernel on this device")
    bad = [(torch.zeros(1, 1, 4, 4, device=device), ValueError, "grad must have the shape of sobel's output"),
           (torch.zeros(1, 1, 4, 5, dtype=torch.int64, device=device), TypeError, "grad must be a floating-point"),
           (torch.zeros(1, 1, 4, 5, dtype=torch.float64, device=device), ValueError, "grad must have the dtype of x")]
    for grad, error, words in bad:  # the same type and words on both paths
        for path in (torch.ops.dal.sobel_backward, reference.sobel_backward):
            with pytest.raises(error, match=words):
                path(grad, x, True, False)
    if device != "cpu" or torch.cuda.is_available():  # a host grad read on the GPU would poison the context
        other = "cpu" if device != "cpu" else "cuda"
        with pytest.raises(ValueError, match="grad must be on the device of x"):  # a wrong value, as phi's device
            torch.ops.dal.sobel_backward(torch.zeros(1, 1, 4, 5, device=other), x, True, False)


def _portable_outputs(inputs: list[tuple[torch.Tensor, bool]], tmp_path) -> list[torch.Tensor]:
    """ops.sobel of each (x, normalized) in a fresh process with DAL_PORTABLE=1."""
    torch.save(inputs, tmp_path / "inputs.pt")
    script = (
        "import sys, torch; from dal import ops\n"
        "assert ops.cpu_kernel('sobel') == 'portable', ops.cpu_kernel('sobel')\n"
        "inputs = torch.load(sys.argv[1])\n"
        "torch.save([ops.sobel(x, normalized=n) for x, n in inputs], sys.argv[2])\n"
    )
    env = {**os.environ, "DAL_PORTABLE": "1"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True)
    return torch.load(tmp_path / "out.pt")


@pytest.mark.skipif(ops.cpu_kernel("sobel") != "avx512", reason="the portable CPU Sobel runs here (no AVX-512, or DAL_PORTABLE=1)")
def test_avx512_magnitude_matches_the_portable_kernel_bit_for_bit(tmp_path):
    """Every strip layout (rows of 1 to 100 columns, and the streamed outputs), unnormalized and
    normalized, and large values: squares about float32's largest, and 2 * x past it."""
    inputs = []
    for cols in range(1, 101):
        inputs.append((_image((1, 2, 3, 4, cols), torch.float32, "cpu", seed=cols), cols % 2 == 0))
        inputs.append((_image((2, 1, 5, cols), torch.float32, "cpu", seed=cols), cols % 2 == 1))
    inputs.append((_image((1, 1, 128, 161, 205), torch.float32, "cpu"), False))
    inputs.append((_image((1, 1, 3, 40, 70), torch.float32, "cpu") * 1e18, True))
    inputs.append((_image((2, 1, 40, 70), torch.float32, "cpu") * 1e38, False))
    portable = _portable_outputs(inputs, tmp_path)
    for (x, normalized), want in zip(inputs, portable):
        got = ops.sobel(x, normalized=normalized)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), f"{tuple(x.shape)}, normalized={normalized}"


def test_cpu_kernel_follows_the_cpu_capability_and_dal_portable():
    capability = torch.backends.cpu.get_cpu_capability()
    forced = os.environ.get("DAL_PORTABLE") == "1"
    want = "avx512" if capability == "AVX512" and not forced else "portable"
    if ops.implementation("sobel", "cpu") != "compiled":
        pytest.skip("no compiled CPU kernel")
    assert ops.cpu_kernel("sobel") == want
    assert ops.cpu_kernel("canny") == "portable"


def test_many_images_past_the_grid_limit(cuda_device):
    """N * C = 70000 images: more than one launch's grid takes along z (65535)."""
    x = _image((70000, 1, 4, 4), torch.float32, "cpu")
    torch.testing.assert_close(ops.sobel(x.to(cuda_device)).cpu(), ops.sobel(x), **TOLERANCE[torch.float32])
