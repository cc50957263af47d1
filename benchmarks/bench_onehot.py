"""onehot_st forward+backward on (64, 8, 192, 192) float32 vs the torch composite users write,
on the CPU and a GPU.

Memory-traffic bound: forward reads logits and writes the one-hot (8 B/element), backward reads
the incoming gradient and the logits and writes the gradient (12 B/element): 20 B/element, 2.5x
what `clone()` moves (8 B/element). The `clone` row of the same run is that anchor.
"""
import pytest
import torch
import torch.nn.functional as F

from dal import ops

SHAPE = (64, 8, 192, 192)


@pytest.fixture(scope="module")
def tensors():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(SHAPE, generator=g).requires_grad_()
    grad = torch.randn(SHAPE, generator=g)
    return logits, grad


def composite(logits):
    soft = torch.softmax(logits, 1)
    hard = F.one_hot(soft.argmax(1), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return hard - soft.detach() + soft


@pytest.mark.benchmark(group="onehot_st fwd+bwd (64,8,192,192) f32")
def test_onehot_dal(run, tensors):
    logits, grad = tensors
    assert ops.implementation("onehot_st", "cpu") == "compiled"
    run(lambda: torch.autograd.grad(ops.onehot_st(logits), logits, grad))


@pytest.mark.benchmark(group="onehot_st fwd+bwd (64,8,192,192) f32")
def test_onehot_torch_composite(run, tensors):
    logits, grad = tensors
    run(lambda: torch.autograd.grad(composite(logits), logits, grad), rounds=3)


@pytest.mark.benchmark(group="onehot_st fwd+bwd (64,8,192,192) f32")
def test_onehot_clone_anchor(run, tensors):
    logits, _ = tensors
    run(lambda: logits.detach().clone())


# ---- on a GPU ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cuda_tensors(tensors, cuda):
    logits, grad = tensors
    return logits.detach().to(cuda).requires_grad_(), grad.to(cuda)


GROUP_CUDA = "cuda onehot_st fwd+bwd (64,8,192,192) f32"


@pytest.mark.benchmark(group=GROUP_CUDA)
def test_cuda_onehot_dal(gpu, cuda_tensors):
    x, grad = cuda_tensors
    assert ops.implementation("onehot_st", "cuda") == "compiled"
    gpu(lambda: torch.autograd.grad(ops.onehot_st(x), x, grad))


@pytest.mark.benchmark(group=GROUP_CUDA)
def test_cuda_onehot_torch_composite(gpu, cuda_tensors):
    x, grad = cuda_tensors
    gpu(lambda: torch.autograd.grad(composite(x), x, grad))


@pytest.mark.benchmark(group=GROUP_CUDA)
def test_cuda_onehot_clone_anchor(gpu, cuda_tensors):
    x, _ = cuda_tensors
    gpu(lambda: x.detach().clone())
