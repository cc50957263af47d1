"""What only dal.ops.onehot_st has: a one-hot for every temperature, any class count and class
dim, ties and NaN, its gradient as the softmax's, torch.compile with inductor. The
contract (dtypes, shapes, layouts, bad input, opcheck, gradcheck of the backward, reference,
fallback) is in test_contract.py."""
import pytest
import torch

from dal import ops
from dal.ops import reference


def _logits(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


SHAPES = [(2, 4, 9, 11), (2, 3, 5, 6, 7)]  # 2D and 3D


# The contract takes every dtype at tau 0.5 without noise and tau 1 with it: here every temperature.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [1.0, 0.5, 3.0])
def test_forward_and_backward_match_reference(device, dtype, shape, tau):
    logits = _logits(shape, dtype, device).requires_grad_()
    noise = _logits(shape, dtype, device, seed=1)
    grad = _logits(shape, dtype, device, seed=2)
    for n in (None, noise):
        out = ops.onehot_st(logits, tau, n)
        expected = reference.onehot_st(logits, tau, n)
        assert out.dtype == dtype and out.shape == logits.shape
        assert torch.equal(out, expected)
        assert torch.equal(out.sum(1), torch.ones_like(out.sum(1)))
        (got,) = torch.autograd.grad(out, logits, grad)
        (want,) = torch.autograd.grad(expected, logits, grad)
        tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("classes", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_any_class_count_and_dim(device, classes, dim):
    shape = [3, 5, 6]
    shape[dim] = classes
    logits = _logits(shape, torch.float32, device).requires_grad_()
    grad = _logits(shape, torch.float32, device, seed=3)
    out = ops.onehot_st(logits, 0.7, dim=dim)
    assert torch.equal(out, reference.onehot_st(logits, 0.7, dim=dim))
    (got,) = torch.autograd.grad(out, logits, grad)
    torch.testing.assert_close(got, reference.onehot_st_backward(grad, logits.detach(), 0.7, dim=dim))


def test_ties_go_to_the_lowest_index_and_nan_counts_as_largest(device):
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [1.0, float("nan"), 5.0, float("nan")]], device=device)
    out = ops.onehot_st(logits, dim=1)
    assert out.argmax(1).tolist() == [1, 0, 1]
    assert torch.equal(out, reference.onehot_st(logits, dim=1))


def test_gradient_is_the_straight_through_softmax_gradient(device):
    """The forward is piecewise constant, so finite differences of it are zero: compare the op's
    backward with autograd through the soft path of the reference, in float64."""
    logits = _logits((2, 5, 4, 3, 2), torch.float64, device).requires_grad_()
    noise = _logits((2, 5, 4, 3, 2), torch.float64, device, seed=1)
    grad = _logits((2, 5, 4, 3, 2), torch.float64, device, seed=2)
    (got,) = torch.autograd.grad(ops.onehot_st(logits, 0.8, noise), logits, grad)
    (want,) = torch.autograd.grad(torch.softmax((logits + noise) / 0.8, 1), logits, grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_torch_compile_fullgraph(device):
    def anatomy(logits):
        return ops.onehot_st(logits * 2.0, tau=0.5) * 3.0

    logits = _logits((2, 4, 8, 8), torch.float32, device).requires_grad_()
    compiled = torch.compile(anatomy, fullgraph=True)  # inductor: the backend users get
    out = compiled(logits)
    assert torch.equal(out, anatomy(logits))
    (g1,) = torch.autograd.grad(out.sum(), logits)
    (g2,) = torch.autograd.grad(anatomy(logits).sum(), logits)
    torch.testing.assert_close(g1, g2)
