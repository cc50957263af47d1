"""Sobel vs the peers a user would otherwise call, side by side per group, on the CPU and a GPU.

Sobel magnitude is memory-bound: it reads the volume and writes the magnitude (8 B/voxel in
float32), what `clone()` moves; the `clone` row of each group is that anchor. Peers: the
F.conv composite with replicate padding, kornia (2D sobel, 3D spatial_gradient3d "diff").
The GPU groups ("cuda ...") take larger sizes, where a GPU would finish one volume in microseconds.
"""
import pytest
import torch
import torch.nn.functional as F

from dal import ops

VOLUME = (1, 1, 160, 192, 160)
SLICES = (64, 1, 192, 192)
CUDA_VOLUMES = (8, 1, 160, 192, 160)


@pytest.fixture(scope="module")
def volume(brain_like):
    return brain_like(VOLUME)


@pytest.fixture(scope="module")
def slices(brain_like):
    return brain_like(SLICES)


@pytest.fixture(scope="module")
def cuda_volumes(brain_like, cuda):
    return brain_like(CUDA_VOLUMES).to(cuda)


def sobel_magnitude_conv(x):
    """Sobel magnitude as users write it: replicate padding and one conv per component."""
    spatial = x.dim() - 2
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    deriv = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    kernels = []
    for axis in range(spatial):  # kernel axes are (D,) H, W
        parts = [deriv if a == axis else smooth for a in range(spatial)]
        kernel = parts[0]
        for p in parts[1:]:
            kernel = torch.tensordot(kernel, p, dims=0)
        kernels.append(kernel)
    weight = torch.stack(kernels)[:, None]
    padded = F.pad(x, (1, 1) * spatial, mode="replicate")
    conv = F.conv3d if spatial == 3 else F.conv2d
    g = conv(padded, weight)
    return g.pow(2).sum(1, keepdim=True).sqrt()


# ---- Sobel 3D magnitude, one 160x192x160 volume ------------------------------------------------
GROUP_SOBEL_3D = "sobel 3D magnitude (1,1,160,192,160) f32"


@pytest.mark.benchmark(group=GROUP_SOBEL_3D)
def test_sobel3d_dal(run, volume):
    assert ops.implementation("sobel", "cpu") == "compiled"
    run(lambda: ops.sobel(volume), rounds=20)


@pytest.mark.benchmark(group=GROUP_SOBEL_3D)
def test_sobel3d_conv3d_composite(run, volume):
    run(lambda: sobel_magnitude_conv(volume), rounds=3)


@pytest.mark.benchmark(group=GROUP_SOBEL_3D)
def test_sobel3d_kornia_spatial_gradient3d_diff(run, volume):
    kornia = pytest.importorskip("kornia")
    run(lambda: kornia.filters.spatial_gradient3d(volume, mode="diff").pow(2).sum(2).sqrt(), rounds=5)


@pytest.mark.benchmark(group=GROUP_SOBEL_3D)
def test_sobel3d_clone_anchor(run, volume):
    run(lambda: volume.clone(), rounds=20)


# ---- Sobel 2D magnitude, 64 slices of 192x192 --------------------------------------------------
GROUP_SOBEL_2D = "sobel 2D magnitude (64,1,192,192) f32"


@pytest.mark.benchmark(group=GROUP_SOBEL_2D)
def test_sobel2d_dal(run, slices):
    run(lambda: ops.sobel(slices), rounds=20)


@pytest.mark.benchmark(group=GROUP_SOBEL_2D)
def test_sobel2d_kornia(run, slices):
    kornia = pytest.importorskip("kornia")
    run(lambda: kornia.filters.sobel(slices), rounds=5)


@pytest.mark.benchmark(group=GROUP_SOBEL_2D)
def test_sobel2d_conv2d_composite(run, slices):
    run(lambda: sobel_magnitude_conv(slices), rounds=5)


@pytest.mark.benchmark(group=GROUP_SOBEL_2D)
def test_sobel2d_clone_anchor(run, slices):
    run(lambda: slices.clone(), rounds=20)


# ---- Sobel 2D forward + backward (the training path) -------------------------------------------
GROUP_SOBEL_2D_BACKWARD = "sobel 2D magnitude fwd+bwd (64,4,192,192) f32"


@pytest.fixture(scope="module")
def anatomy(brain_like):
    x = brain_like((64, 4, 192, 192), seed=1).requires_grad_()
    return x, torch.randn(x.shape, generator=torch.Generator().manual_seed(2))


@pytest.mark.benchmark(group=GROUP_SOBEL_2D_BACKWARD)
def test_sobel2d_backward_dal(run, anatomy):
    x, grad = anatomy
    run(lambda: torch.autograd.grad(ops.sobel(x), x, grad), rounds=5)


@pytest.mark.benchmark(group=GROUP_SOBEL_2D_BACKWARD)
def test_sobel2d_backward_kornia(run, anatomy):
    kornia = pytest.importorskip("kornia")
    x, grad = anatomy
    run(lambda: torch.autograd.grad(kornia.filters.sobel(x), x, grad), rounds=3)


# ---- on a GPU: Sobel 3D magnitude ---------------------------------------------------------------
GROUP_CUDA_SOBEL_3D = "cuda sobel 3D magnitude (8,1,160,192,160) f32"


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_3D)
def test_cuda_sobel3d_dal(gpu, cuda_volumes):
    assert ops.implementation("sobel", "cuda") == "compiled"
    gpu(lambda: ops.sobel(cuda_volumes))


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_3D)
def test_cuda_sobel3d_conv3d_composite(gpu, cuda_volumes):
    gpu(lambda: sobel_magnitude_conv(cuda_volumes))


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_3D)
def test_cuda_sobel3d_kornia_spatial_gradient3d_diff(gpu, cuda_volumes):
    kornia = pytest.importorskip("kornia")
    gpu(lambda: kornia.filters.spatial_gradient3d(cuda_volumes, mode="diff").pow(2).sum(2).sqrt())


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_3D)
def test_cuda_sobel3d_clone_anchor(gpu, cuda_volumes):
    gpu(lambda: cuda_volumes.clone())


# ---- on a GPU: Sobel 2D magnitude, and forward + backward ----------------------------------------
GROUP_CUDA_SOBEL_2D = "cuda sobel 2D magnitude (256,1,192,192) f32"


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_2D)
def test_cuda_sobel2d_dal(gpu, cuda_slices):
    gpu(lambda: ops.sobel(cuda_slices))


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_2D)
def test_cuda_sobel2d_conv2d_composite(gpu, cuda_slices):
    gpu(lambda: sobel_magnitude_conv(cuda_slices))


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_2D)
def test_cuda_sobel2d_kornia(gpu, cuda_slices):
    kornia = pytest.importorskip("kornia")
    gpu(lambda: kornia.filters.sobel(cuda_slices))


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_2D)
def test_cuda_sobel2d_clone_anchor(gpu, cuda_slices):
    gpu(lambda: cuda_slices.clone())


GROUP_CUDA_SOBEL_2D_BACKWARD = "cuda sobel 2D magnitude fwd+bwd (256,1,192,192) f32"


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_2D_BACKWARD)
def test_cuda_sobel2d_backward_dal(gpu, cuda_slices):
    x = cuda_slices.detach().requires_grad_()
    gpu(lambda: torch.autograd.grad(ops.sobel(x), x, cuda_slices))


@pytest.mark.benchmark(group=GROUP_CUDA_SOBEL_2D_BACKWARD)
def test_cuda_sobel2d_backward_kornia(gpu, cuda_slices):
    kornia = pytest.importorskip("kornia")
    x = cuda_slices.detach().requires_grad_()
    gpu(lambda: torch.autograd.grad(kornia.filters.sobel(x), x, cuda_slices))
