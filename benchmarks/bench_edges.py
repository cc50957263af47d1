"""Edge ops vs the peers a user would otherwise call, side by side per group.

Sobel magnitude is memory-bound: it reads the volume and writes the magnitude (8 B/voxel in
float32), what `clone()` moves; the `clone` row of each group is that anchor. Peers: the
F.conv composite with replicate padding, kornia (2D sobel, 3D spatial_gradient3d "diff"),
scikit-image canny over slices, SimpleITK's 3D Canny with the same number of threads as torch.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dal import ops

VOLUME = (1, 1, 160, 192, 160)
SLICES = (64, 1, 192, 192)


def _brain_like(shape, seed=0):
    """Smooth blobs plus noise: edges at many scales and orientations, like an MRI slice stack."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((shape[0], shape[1], *[max(2, s // 16) for s in shape[2:]]), generator=g)
    mode = "trilinear" if len(shape) == 5 else "bilinear"
    smooth = F.interpolate(coarse, size=shape[2:], mode=mode, align_corners=False)
    return (smooth + 0.05 * torch.randn(shape, generator=g)).contiguous()


@pytest.fixture(scope="module")
def volume():
    return _brain_like(VOLUME)


@pytest.fixture(scope="module")
def slices():
    return _brain_like(SLICES)


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
def anatomy():
    x = _brain_like((64, 4, 192, 192), seed=1).requires_grad_()
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


# ---- Canny, on brain MRI (the MNI152 1 mm template shipped with nilearn) ------------------------
@pytest.fixture(scope="module")
def mni_template():
    from nilearn import datasets

    return torch.from_numpy(datasets.load_mni152_template(resolution=1).get_fdata().astype(np.float32))  # (197, 233, 189)


@pytest.fixture(scope="module")
def mri_volume(mni_template):
    """The template cropped to 160x192x160 (1, 1, D, H, W)."""
    return mni_template[18:178, 20:212, 14:174].contiguous()[None, None]


@pytest.fixture(scope="module")
def mri_slices(mni_template):
    """64 axial slices of 192x192 from the middle of the brain (64, 1, H, W)."""
    return mni_template[2:194, 20:212, 62:126].permute(2, 1, 0).contiguous()[:, None]


def _thresholds(x, quantiles=(0.8, 0.9)):
    """Absolute thresholds at the given quantiles of the unsmoothed Sobel magnitude: every method
    then gets the same numbers (rescaled to its own gradient's scale)."""
    magnitude = ops.sobel(x).flatten()[::97].double()
    return [float(torch.quantile(magnitude, q)) for q in quantiles]


GROUP_CANNY_2D = "canny 2D (64,1,192,192) f32, sigma 1"


@pytest.mark.benchmark(group=GROUP_CANNY_2D)
def test_canny2d_dal(run, mri_slices):
    low, high = _thresholds(mri_slices)
    run(lambda: ops.canny(mri_slices, low, high, 1.0), rounds=10)


@pytest.mark.benchmark(group=GROUP_CANNY_2D)
def test_canny2d_skimage_per_slice(run, mri_slices):
    from skimage import feature

    low, high = _thresholds(mri_slices)
    images = mri_slices[:, 0].numpy()
    run(lambda: [feature.canny(image, 1.0, low, high, mode="nearest") for image in images], rounds=3)


@pytest.mark.benchmark(group=GROUP_CANNY_2D)
def test_canny2d_kornia(run, mri_slices):
    kornia = pytest.importorskip("kornia")
    low, high = _thresholds(mri_slices)
    # kornia's Sobel is normalised (/8); its Gaussian kernel of size 5 is about sigma 1.
    run(lambda: kornia.filters.canny(mri_slices, low / 8, high / 8, (5, 5), (1.0, 1.0)), rounds=1)


GROUP_CANNY_3D = "canny 3D (1,1,160,192,160) f32, sigma 1"


@pytest.mark.benchmark(group=GROUP_CANNY_3D)
def test_canny3d_dal(run, mri_volume):
    low, high = _thresholds(mri_volume)
    run(lambda: ops.canny(mri_volume, low, high, 1.0), rounds=5)


@pytest.mark.benchmark(group=GROUP_CANNY_3D)
def test_canny3d_simpleitk(run, mri_volume):
    sitk = pytest.importorskip("SimpleITK")
    low, high = _thresholds(mri_volume)
    image = sitk.GetImageFromArray(mri_volume[0, 0].numpy())
    canny = sitk.CannyEdgeDetectionImageFilter()
    canny.SetNumberOfThreads(torch.get_num_threads())  # the threads torch uses
    canny.SetVariance([1.0] * 3)  # sigma 1
    # ITK's derivative is (x[+1] - x[-1]) / 2, 3D Sobel's is 32 times that on a ramp.
    canny.SetLowerThreshold(low / 32)
    canny.SetUpperThreshold(high / 32)
    run(lambda: canny.Execute(image), rounds=3)


@pytest.mark.benchmark(group=GROUP_CANNY_3D)
def test_canny3d_clone_anchor(run, mri_volume):
    run(lambda: mri_volume.clone(), rounds=20)
