"""Shared fixtures: every op test runs on every device; CUDA cases are skipped, visibly, without a GPU."""
import pytest
import torch

DEVICES = [
    "cpu",
    # On a GPU, a CUDA case that ran the reference (dal._C built without CUDA) fails instead of warning.
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
                                pytest.mark.filterwarnings("error::dal.ops.DalFallbackWarning")]),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
