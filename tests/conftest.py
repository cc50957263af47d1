"""Shared fixtures: every op test runs on every device (CUDA cases are skipped, visibly, without a GPU);
one tiny checkpoint for the tests of the commands."""
import pytest
import torch

# On a GPU, a CUDA case that ran the reference (dal._C built without CUDA) fails instead of warning.
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
                                   pytest.mark.filterwarnings("error::dal.ops.DalFallbackWarning")])


@pytest.fixture(params=["cpu", CUDA])
def device(request):
    return request.param


@pytest.fixture(params=[CUDA])
def cuda_device(request):
    """For what only a GPU shows (grid limits, plans cached per launch): CUDA alone."""
    return request.param


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny autoencoder checkpoint with thresholds (read only: tests write elsewhere)."""
    from infer_phantoms import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")
