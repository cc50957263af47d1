"""The ops on a GPU, each beside its torch composite on the same GPU and kornia where installed;
the memory-bound ones (onehot_st, sobel) beside `clone()` of their input, the bandwidth anchor.

Every timed call ends with torch.cuda.synchronize(), so a round is the kernels' whole run. Sizes
are larger than the CPU benchmarks' where a GPU would finish one volume in microseconds.
Skipped without a GPU; scripts/gpu-check.sh runs this file.
"""
import pytest
import torch

from bench_edges import _brain_like, _thresholds, sobel_magnitude_conv
from bench_onehot import composite as onehot_composite
from dal import ops
from dal.ops import reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

ONEHOT = (64, 8, 192, 192)
VOLUMES = (8, 1, 160, 192, 160)
SLICES = (256, 1, 192, 192)
VOLUME = (1, 1, 160, 192, 160)


@pytest.fixture
def gpu(benchmark):
    """benchmark.pedantic of fn followed by a device synchronisation, after two warm-ups."""

    def _run(fn, rounds=10):
        def timed():
            out = fn()
            torch.cuda.synchronize()
            return out

        return benchmark.pedantic(timed, rounds=rounds, warmup_rounds=2, iterations=1)

    return _run


@pytest.fixture(scope="module")
def logits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ONEHOT, generator=g).cuda().requires_grad_()
    return x, torch.randn(ONEHOT, generator=g).cuda()


@pytest.fixture(scope="module")
def volumes():
    return _brain_like(VOLUMES).cuda()


@pytest.fixture(scope="module")
def slices():
    return _brain_like(SLICES).cuda()


@pytest.fixture(scope="module")
def volume():
    return _brain_like(VOLUME).cuda()


# ---- onehot_st forward + backward ----------------------------------------------------------------
GROUP_ONEHOT = "cuda onehot_st fwd+bwd (64,8,192,192) f32"


@pytest.mark.benchmark(group=GROUP_ONEHOT)
def test_cuda_onehot_dal(gpu, logits):
    x, grad = logits
    assert ops.implementation("onehot_st", "cuda") == "compiled"
    gpu(lambda: torch.autograd.grad(ops.onehot_st(x), x, grad))


@pytest.mark.benchmark(group=GROUP_ONEHOT)
def test_cuda_onehot_torch_composite(gpu, logits):
    x, grad = logits
    gpu(lambda: torch.autograd.grad(onehot_composite(x), x, grad))


@pytest.mark.benchmark(group=GROUP_ONEHOT)
def test_cuda_onehot_clone_anchor(gpu, logits):
    x, _ = logits
    gpu(lambda: x.detach().clone())


# ---- Sobel 3D magnitude --------------------------------------------------------------------------
GROUP_SOBEL_3D = "cuda sobel 3D magnitude (8,1,160,192,160) f32"


@pytest.mark.benchmark(group=GROUP_SOBEL_3D)
def test_cuda_sobel3d_dal(gpu, volumes):
    assert ops.implementation("sobel", "cuda") == "compiled"
    gpu(lambda: ops.sobel(volumes))


@pytest.mark.benchmark(group=GROUP_SOBEL_3D)
def test_cuda_sobel3d_conv3d_composite(gpu, volumes):
    gpu(lambda: sobel_magnitude_conv(volumes))


@pytest.mark.benchmark(group=GROUP_SOBEL_3D)
def test_cuda_sobel3d_kornia_spatial_gradient3d_diff(gpu, volumes):
    kornia = pytest.importorskip("kornia")
    gpu(lambda: kornia.filters.spatial_gradient3d(volumes, mode="diff").pow(2).sum(2).sqrt())


@pytest.mark.benchmark(group=GROUP_SOBEL_3D)
def test_cuda_sobel3d_clone_anchor(gpu, volumes):
    gpu(lambda: volumes.clone())


# ---- Sobel 2D magnitude, and forward + backward ------------------------------------------------
GROUP_SOBEL_2D = "cuda sobel 2D magnitude (256,1,192,192) f32"


@pytest.mark.benchmark(group=GROUP_SOBEL_2D)
def test_cuda_sobel2d_dal(gpu, slices):
    gpu(lambda: ops.sobel(slices))


@pytest.mark.benchmark(group=GROUP_SOBEL_2D)
def test_cuda_sobel2d_conv2d_composite(gpu, slices):
    gpu(lambda: sobel_magnitude_conv(slices))


@pytest.mark.benchmark(group=GROUP_SOBEL_2D)
def test_cuda_sobel2d_kornia(gpu, slices):
    kornia = pytest.importorskip("kornia")
    gpu(lambda: kornia.filters.sobel(slices))


@pytest.mark.benchmark(group=GROUP_SOBEL_2D)
def test_cuda_sobel2d_clone_anchor(gpu, slices):
    gpu(lambda: slices.clone())


GROUP_SOBEL_2D_BACKWARD = "cuda sobel 2D magnitude fwd+bwd (256,1,192,192) f32"


@pytest.mark.benchmark(group=GROUP_SOBEL_2D_BACKWARD)
def test_cuda_sobel2d_backward_dal(gpu, slices):
    x = slices.detach().requires_grad_()
    gpu(lambda: torch.autograd.grad(ops.sobel(x), x, slices))


@pytest.mark.benchmark(group=GROUP_SOBEL_2D_BACKWARD)
def test_cuda_sobel2d_backward_kornia(gpu, slices):
    kornia = pytest.importorskip("kornia")
    x = slices.detach().requires_grad_()
    gpu(lambda: torch.autograd.grad(kornia.filters.sobel(x), x, slices))


# ---- Canny ---------------------------------------------------------------------------------------
GROUP_CANNY_2D = "cuda canny 2D (256,1,192,192) f32, sigma 1"


@pytest.mark.benchmark(group=GROUP_CANNY_2D)
def test_cuda_canny2d_dal(gpu, slices):
    low, high = _thresholds(slices)
    gpu(lambda: ops.canny(slices, low, high, 1.0))


@pytest.mark.benchmark(group=GROUP_CANNY_2D)
def test_cuda_canny2d_torch_composite(gpu, slices):
    low, high = _thresholds(slices)
    gpu(lambda: reference.canny(slices, low, high, 1.0), rounds=3)


@pytest.mark.benchmark(group=GROUP_CANNY_2D)
def test_cuda_canny2d_kornia(gpu, slices):
    kornia = pytest.importorskip("kornia")
    low, high = _thresholds(slices)
    # kornia's Sobel is normalised (/8); its Gaussian kernel of size 5 is about sigma 1.
    gpu(lambda: kornia.filters.canny(slices, low / 8, high / 8, (5, 5), (1.0, 1.0)), rounds=3)


GROUP_CANNY_3D = "cuda canny 3D (1,1,160,192,160) f32, sigma 1"


@pytest.mark.benchmark(group=GROUP_CANNY_3D)
def test_cuda_canny3d_dal(gpu, volume):
    low, high = _thresholds(volume)
    gpu(lambda: ops.canny(volume, low, high, 1.0))


@pytest.mark.benchmark(group=GROUP_CANNY_3D)
def test_cuda_canny3d_torch_composite(gpu, volume):
    low, high = _thresholds(volume)
    gpu(lambda: reference.canny(volume, low, high, 1.0), rounds=3)


@pytest.mark.benchmark(group=GROUP_CANNY_3D)
def test_cuda_canny3d_clone_anchor(gpu, volume):
    gpu(lambda: volume.clone())


# ---- Median filter and residual score ------------------------------------------------------------
@pytest.fixture(scope="module")
def scoring(volume):
    g = torch.Generator().manual_seed(1)
    phi = volume + 0.05 * torch.randn(VOLUME, generator=g).cuda()
    return volume, phi, volume > volume.mean()


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.benchmark(group="cuda median 160x192x160 f32")
def test_cuda_median_dal(gpu, scoring, k):
    x, _, _ = scoring
    assert ops.implementation("median_filter", "cuda") == "compiled"
    gpu(lambda: ops.median_filter(x, k))


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.benchmark(group="cuda median 160x192x160 f32")
def test_cuda_median_torch_unfold_composite(gpu, scoring, k):
    x, _, _ = scoring
    gpu(lambda: reference.median_filter(x, k), rounds=3)


@pytest.mark.benchmark(group="cuda residual score k=5 erode=2 160x192x160 f32")
def test_cuda_residual_dal(gpu, scoring):
    x, phi, mask = scoring
    gpu(lambda: ops.residual_score(x, phi, mask, 5, erode=2))


@pytest.mark.benchmark(group="cuda residual score k=5 erode=2 160x192x160 f32")
def test_cuda_residual_torch_composite(gpu, scoring):
    x, phi, mask = scoring
    gpu(lambda: reference.residual_score(x, phi, mask, 5, erode=2), rounds=3)
