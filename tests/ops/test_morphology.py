"""What only dal.ops.binary_erode and binary_dilate have: scipy.ndimage's minimum and maximum
filters (mode="nearest") as their oracle, and a volume's edge that does not erode. The contract
(dtypes, shapes, layouts, bad input, opcheck, reference) is in test_contract.py."""
import numpy as np
import pytest
import scipy.ndimage
import torch

from dal import ops
from dal.ops import reference


def scipy_erode(mask: torch.Tensor, radius: int) -> np.ndarray:
    size = (1, 1) + (2 * radius + 1,) * (mask.dim() - 2)
    return scipy.ndimage.minimum_filter((mask != 0).cpu().numpy(), size=size, mode="nearest")


@pytest.mark.parametrize("shape", [(2, 1, 15, 17), (1, 2, 7, 9, 11)])
@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_binary_erode_and_dilate_equal_scipy(device, shape, radius):
    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(radius)) < 0.7).to(device)
    size = (1, 1) + (2 * radius + 1,) * (len(shape) - 2)
    eroded = ops.binary_erode(mask.float(), radius)
    dilated = ops.binary_dilate(mask, radius)
    assert eroded.dtype == torch.bool and dilated.dtype == torch.bool
    assert np.array_equal(eroded.cpu().numpy(), scipy_erode(mask, radius))
    assert np.array_equal(
        dilated.cpu().numpy(), scipy.ndimage.maximum_filter(mask.cpu().numpy(), size=size, mode="nearest")
    )
    assert torch.equal(eroded, reference.binary_erode(mask, radius))
    assert torch.equal(dilated, reference.binary_dilate(mask, radius))


def test_the_volume_edge_does_not_erode(device):
    mask = torch.ones(1, 1, 4, 5, 6, device=device)
    assert bool(ops.binary_erode(mask, 2).all())
