"""Canny vs the peers a user would otherwise call, side by side per group, on the CPU and a GPU:
scikit-image canny over slices, kornia's canny, SimpleITK's 3D Canny with the same number of
threads as torch; on a GPU, the pure-torch composite (dal.ops.reference) and kornia.
"""
import numpy as np
import pytest
import torch

from dal import ops
from dal.ops import reference



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


# ---- on a GPU -------------------------------------------------------------------------------------
GROUP_CUDA_CANNY_2D = "cuda canny 2D (256,1,192,192) f32, sigma 1"


@pytest.mark.benchmark(group=GROUP_CUDA_CANNY_2D)
def test_cuda_canny2d_dal(gpu, cuda_slices):
    low, high = _thresholds(cuda_slices)
    gpu(lambda: ops.canny(cuda_slices, low, high, 1.0))


@pytest.mark.benchmark(group=GROUP_CUDA_CANNY_2D)
def test_cuda_canny2d_torch_composite(gpu, cuda_slices):
    low, high = _thresholds(cuda_slices)
    gpu(lambda: reference.canny(cuda_slices, low, high, 1.0), rounds=3)


@pytest.mark.benchmark(group=GROUP_CUDA_CANNY_2D)
def test_cuda_canny2d_kornia(gpu, cuda_slices):
    kornia = pytest.importorskip("kornia")
    low, high = _thresholds(cuda_slices)
    # kornia's Sobel is normalised (/8); its Gaussian kernel of size 5 is about sigma 1.
    gpu(lambda: kornia.filters.canny(cuda_slices, low / 8, high / 8, (5, 5), (1.0, 1.0)), rounds=3)


GROUP_CUDA_CANNY_3D = "cuda canny 3D (1,1,160,192,160) f32, sigma 1"


@pytest.mark.benchmark(group=GROUP_CUDA_CANNY_3D)
def test_cuda_canny3d_dal(gpu, cuda_volume):
    low, high = _thresholds(cuda_volume)
    gpu(lambda: ops.canny(cuda_volume, low, high, 1.0))


@pytest.mark.benchmark(group=GROUP_CUDA_CANNY_3D)
def test_cuda_canny3d_torch_composite(gpu, cuda_volume):
    low, high = _thresholds(cuda_volume)
    gpu(lambda: reference.canny(cuda_volume, low, high, 1.0), rounds=3)


@pytest.mark.benchmark(group=GROUP_CUDA_CANNY_3D)
def test_cuda_canny3d_clone_anchor(gpu, cuda_volume):
    gpu(lambda: cuda_volume.clone())


