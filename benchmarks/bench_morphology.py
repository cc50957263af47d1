"""Binary erosion and dilation of a brain-sized mask (160x192x160) by a cube of radius 2 (side 5),
replicate border, against what a user would otherwise call: scipy.ndimage's minimum and maximum
filters (the same result) and binary_erosion/binary_dilation with a 5^3 structure, SimpleITK's
BinaryErode/BinaryDilate with a box kernel; on a GPU, the pure-torch composite on the same GPU.
"""
import numpy as np
import pytest
import scipy.ndimage
import torch

from dal import ops
from dal.ops import reference

SHAPE = (1, 1, 160, 192, 160)
RADIUS = 2
GROUPS = {"erode": f"binary erode r={RADIUS} 160x192x160", "dilate": f"binary dilate r={RADIUS} 160x192x160"}
DAL = {"erode": ops.binary_erode, "dilate": ops.binary_dilate}
SCIPY_FILTER = {"erode": scipy.ndimage.minimum_filter, "dilate": scipy.ndimage.maximum_filter}
SCIPY_BINARY = {"erode": scipy.ndimage.binary_erosion, "dilate": scipy.ndimage.binary_dilation}


@pytest.fixture(scope="module")
def mask(brain_like):
    return brain_like(SHAPE) > 0.5


@pytest.mark.parametrize("op", ["erode", "dilate"])
def test_peers_agree_with_dal(mask, op):
    """The rows compare like with like: scipy's filter gives dal's result exactly."""
    got = DAL[op](mask, RADIUS)[0, 0].numpy()
    np.testing.assert_array_equal(got, SCIPY_FILTER[op](mask[0, 0].numpy(), size=2 * RADIUS + 1, mode="nearest"))


@pytest.mark.parametrize("op", ["erode", "dilate"])
def test_morphology_dal(benchmark, run, mask, op):
    benchmark.group = GROUPS[op]
    assert ops.implementation(f"binary_{op}", "cpu") == "compiled"
    run(lambda: DAL[op](mask, RADIUS))


@pytest.mark.parametrize("op", ["erode", "dilate"])
def test_morphology_scipy_filter(benchmark, run, mask, op):
    benchmark.group = GROUPS[op]
    array = mask[0, 0].numpy()
    run(lambda: SCIPY_FILTER[op](array, size=2 * RADIUS + 1, mode="nearest"), rounds=3)


@pytest.mark.parametrize("op", ["erode", "dilate"])
def test_morphology_scipy_binary(benchmark, run, mask, op):
    benchmark.group = GROUPS[op]
    array, cube = mask[0, 0].numpy(), np.ones((2 * RADIUS + 1,) * 3, bool)
    run(lambda: SCIPY_BINARY[op](array, cube, border_value=1 if op == "erode" else 0), rounds=3)


@pytest.mark.parametrize("op", ["erode", "dilate"])
def test_morphology_simpleitk(benchmark, run, mask, op):
    sitk = pytest.importorskip("SimpleITK")  # not on the GPU machine
    benchmark.group = GROUPS[op]
    image = sitk.GetImageFromArray(mask[0, 0].numpy().astype(np.uint8))
    erode_or_dilate = {"erode": sitk.BinaryErode, "dilate": sitk.BinaryDilate}[op]
    run(lambda: erode_or_dilate(image, [RADIUS] * 3, sitk.sitkBox), rounds=3)


# ---- on a GPU ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["erode", "dilate"])
def test_cuda_morphology_dal(benchmark, gpu, mask, op):
    benchmark.group = "cuda " + GROUPS[op]
    on_gpu = mask.cuda()
    gpu(lambda: DAL[op](on_gpu, RADIUS))


@pytest.mark.parametrize("op", ["erode", "dilate"])
def test_cuda_morphology_torch_composite(benchmark, gpu, mask, op):
    benchmark.group = "cuda " + GROUPS[op]
    on_gpu = mask.cuda()
    composite = {"erode": reference.binary_erode, "dilate": reference.binary_dilate}[op]
    gpu(lambda: composite(on_gpu, RADIUS), rounds=3)
