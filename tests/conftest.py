"""Shared fixtures: every op test runs on every device; CUDA cases are skipped, visibly, without a GPU."""
import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
