"""The contract every op keeps, for every case of op_registry, on every device (CUDA cases are
skipped, visibly, without a GPU): the dtypes it takes, 2D and 3D, tiny, non-contiguous and empty
input, inputs left untouched, bad input refused with the reference's exact exception type on every
path (public face, reference, compiled kernel, fake kernel), torch.library.opcheck, its gradient
(gradcheck in float64, or a backward that refuses), CPU autocast, agreement with the pure-torch reference (on a
GPU, with the CPU path too), and the path that ran. What only one op has (its oracles, the edge
cases of its math) is in test_<stem>.py.
"""
import warnings

import pytest
import torch
from op_registry import CASES, OPS, random
from torch._subclasses.fake_tensor import FakeTensorMode

from dal import ops
from dal.ops import _extension, reference

DIFFERENTIABLE = ("smooth", "straight_through")


def _params(cases, extra=lambda case: [()], ids=lambda case, *rest: case.id):
    return [pytest.param(case, *rest, id=ids(case, *rest)) for case in cases for rest in extra(case)]


CASE = pytest.mark.parametrize("case", _params(CASES))
OP = pytest.mark.parametrize("case", _params(OPS.values()))
DIMS = pytest.mark.parametrize("dims", [2, 3])


def _face(case):
    return getattr(ops, case.name)


def _reference(case):
    return getattr(reference, case.name)


def _compiled(name):
    return getattr(torch.ops.dal, name).default


def _registered(name: str, device: str) -> bool:
    """dal::name has a kernel for the device (whichever path dal.ops takes: opcheck tests the op)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}[torch.device(device).type]
    return name in ops.op_names() and torch._C._dispatch_has_kernel_for_dispatch_key(f"dal::{name}", key)


def _to(args, device):
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """t's values in a layout that is not contiguous: its last two axes swapped in memory, and
    every other row of a buffer twice as high."""
    base = t.new_empty((*t.shape[:-2], t.shape[-1], 2 * t.shape[-2])).transpose(-1, -2)[..., ::2, :]
    return base.copy_(t)


def _vjp(fn, case, tensors, upstream):
    """fn's output on the case's arguments and its gradient with respect to the main input."""
    main = tensors[0].detach().requires_grad_()
    out = fn(*case.args(main, *tensors[1:]))
    (grad,) = torch.autograd.grad(out, main, upstream)
    return out, grad


# ---- the path that ran -----------------------------------------------------------------------------
@OP
def test_path_is_the_one_implementation_names(case, device, monkeypatch):
    info = ops.build_info()
    built = info["compiled"] and not info["force_reference"] and (device == "cpu" or info["with_cuda"])
    path = "compiled" if built else "reference"
    assert ops.implementation(case.name, device) == path
    monkeypatch.setattr(_extension, "_warned", set())
    args = case.args(*case.inputs(case.shapes[0], torch.float32, device))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _face(case)(*args)
    fallbacks = [w for w in caught if issubclass(w.category, ops.DalFallbackWarning)]
    if path == "compiled":
        assert not fallbacks
        assert torch.equal(out, _compiled(case.name)(*args))
    else:
        assert len(fallbacks) == 1 and f"dal.ops.{case.name}: running the pure-torch reference" in str(fallbacks[0].message)
        assert torch.equal(out, _reference(case)(*args))


@OP
def test_fallback_is_announced_once(case, monkeypatch):
    monkeypatch.setattr(_extension, "_COMPILED", frozenset())
    monkeypatch.setattr(_extension, "_warned", set())
    args = case.args(*case.inputs(case.shapes[0], torch.float32, "cpu"))
    with pytest.warns(ops.DalFallbackWarning, match=f"{case.name}: running the pure-torch reference"):
        out = _face(case)(*args)
    assert torch.equal(out, _reference(case)(*args))
    assert ops.implementation(case.name, "cpu") == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _face(case)(*args)  # warned once per op and device, not on every call


# ---- agreement with the reference ------------------------------------------------------------------
@pytest.mark.parametrize("case, dtype", _params(CASES, lambda c: [(d,) for d in c.dtypes], lambda c, d: f"{c.id}-{d}"))
@DIMS
def test_matches_reference(case, dtype, dims, device):
    tensors = case.inputs(case.shapes[dims - 2], dtype, device)
    args = case.args(*tensors)
    got, want = _face(case)(*args), _reference(case)(*args)
    assert got.dtype == want.dtype and got.shape == want.shape and got.is_contiguous()
    case.compare(got, want, dtype)
    if want.dtype == torch.bool:
        assert want.any()  # a comparison of real edges, or of a mask that is not empty
    if device != "cpu":  # the CUDA kernels share their per-voxel math with the CPU ones
        case.compare(got, _face(case)(*_to(args, "cpu")), dtype)
    if case.gradient in DIFFERENTIABLE:
        upstream = random(tuple(got.shape), dtype, device, seed=7)
        _, grad = _vjp(_face(case), case, tensors, upstream)
        _, want_grad = _vjp(_reference(case), case, tensors, upstream)
        case.compare_grad(grad, want_grad, dtype)
        if device != "cpu":
            case.compare_grad(grad, _vjp(_face(case), case, _to(tensors, "cpu"), upstream.cpu())[1], dtype)


def _tiny(case):
    return [(shape, dtype) for shape in case.tiny_shapes for dtype in (torch.float32, torch.float64)]


@pytest.mark.parametrize("case, shape, dtype", _params(CASES, _tiny, lambda c, s, d: f"{c.id}-{s}-{d}"))
def test_tiny_input(case, shape, dtype, device):
    """Extents of 1 and 2: every voxel is on the border."""
    tensors = case.inputs(shape, dtype, device)
    args = case.args(*tensors)
    got, want = _face(case)(*args), _reference(case)(*args)
    assert got.dtype == want.dtype and got.shape == want.shape
    case.compare(got, want, dtype)
    if case.gradient in DIFFERENTIABLE:
        upstream = random(tuple(got.shape), dtype, device, seed=7)
        case.compare_grad(_vjp(_face(case), case, tensors, upstream)[1], _vjp(_reference(case), case, tensors, upstream)[1],
                          dtype)


@CASE
@DIMS
def test_non_contiguous_input(case, dims, device):
    tensors = case.inputs(case.shapes[dims - 2], torch.float32, device)
    strided = tuple(_strided(t) for t in tensors)
    assert not any(t.is_contiguous() for t in strided)
    got = _face(case)(*case.args(*strided))
    assert torch.equal(got, _face(case)(*case.args(*tensors)))  # the layout does not change a bit
    case.compare(got, _reference(case)(*case.args(*strided)), torch.float32)
    if case.gradient in DIFFERENTIABLE:
        upstream = _strided(random(tuple(got.shape), torch.float32, device, seed=7))
        _, grad = _vjp(_face(case), case, strided, upstream)
        case.compare_grad(grad, _vjp(_reference(case), case, strided, upstream)[1], torch.float32)
        case.compare_grad(grad, _vjp(_face(case), case, tensors, upstream.contiguous())[1], torch.float32)


@pytest.mark.parametrize("case, shape", _params(CASES, lambda c: [(s,) for s in c.empty_shapes], lambda c, s: f"{c.id}-{s}"))
def test_empty_input(case, shape, device):
    tensors = case.inputs(shape, torch.float32, device)
    args = case.args(*tensors)
    got, want = _face(case)(*args), _reference(case)(*args)
    assert got.dtype == want.dtype and got.shape == want.shape
    if case.gradient in DIFFERENTIABLE:
        _, grad = _vjp(_face(case), case, tensors, torch.ones_like(got))
        assert grad.shape == shape


@CASE
def test_inputs_are_left_untouched(case, device):
    tensors = case.inputs(case.shapes[1], torch.float32, device)
    before = [t.clone() for t in tensors]
    _face(case)(*case.args(*tensors))
    assert all(torch.equal(t, b) for t, b in zip(tensors, before))


# ---- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, bad", _params(OPS.values(), lambda c: [(b,) for b in c.bad], lambda c, b: f"{c.name}-{b.id}"))
def test_bad_input_raises_the_reference_exception_on_every_path(case, bad, device):
    """The exact type (TypeError, ValueError, IndexError), with a message naming the argument."""
    args = bad.make(device)
    with pytest.raises(bad.error, match=bad.words):
        _reference(case)(*args)
    with pytest.raises(bad.error, match=bad.words):
        _face(case)(*args)
    if ops.implementation(case.name, device) == "compiled":
        with pytest.raises(bad.error, match=bad.words):
            _compiled(case.name)(*args)
    if case.name in ops.op_names():  # the fake kernel (torch.compile, meta): the reference's checks
        with FakeTensorMode() as mode, pytest.raises(bad.error, match=bad.words):
            _compiled(case.name)(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])


# ---- torch.library ---------------------------------------------------------------------------------
@CASE
@DIMS
def test_opcheck(case, dims, device):
    if not _registered(case.name, device):
        pytest.skip(f"dal::{case.name} has no kernel for {device}")
    tensors = case.inputs(case.shapes[dims - 2], torch.float32, device)
    if case.gradient in DIFFERENTIABLE:  # the autograd registration is checked too
        tensors = (tensors[0].requires_grad_(), *tensors[1:])
    torch.library.opcheck(_compiled(case.name), case.args(*tensors))
    if case.backward:
        args = case.args(*[t.detach() for t in tensors])
        grad = random(tuple(_reference(case)(*args).shape), torch.float32, device, seed=3)
        torch.library.opcheck(_compiled(case.backward), (grad, *args))


# ---- gradient --------------------------------------------------------------------------------------
@CASE
@DIMS
def test_gradient(case, dims, device):
    face = _face(case)
    if case.gradient == "smooth":
        tensors = case.inputs(case.grad_shapes[dims - 2], torch.float64, device)
        x = tensors[0].requires_grad_()
        assert torch.autograd.gradcheck(lambda t: face(*case.args(t, *tensors[1:])), (x,))
    if case.gradient in DIFFERENTIABLE:  # the backward is smooth in the incoming gradient and the input
        tensors = case.inputs(case.vjp_shapes[dims - 2], torch.float64, device)
        x = tensors[0].requires_grad_()
        out = face(*case.args(x, *tensors[1:]))
        upstream = random(tuple(out.shape), torch.float64, device, seed=2).requires_grad_()

        def vjp(g, t):
            return torch.autograd.grad(face(*case.args(t, *tensors[1:])), t, g, create_graph=True)[0]

        assert torch.autograd.gradcheck(vjp, (upstream, x))
        return
    tensors = case.inputs(case.shapes[dims - 2], torch.float32, device)
    x = tensors[0].float().requires_grad_()
    out = face(*case.args(x, *tensors[1:]))
    if case.gradient == "refused":  # not trained through: a silent zero or None would hide the mistake
        assert out.requires_grad
        with pytest.raises(RuntimeError, match=f"{case.name} has no gradient"):
            out.sum().backward()
        with torch.no_grad():
            assert not face(*case.args(x, *tensors[1:])).requires_grad
    else:
        assert out.dtype == torch.bool and not out.requires_grad
        with pytest.raises(RuntimeError, match="does not require grad"):
            out.float().sum().backward()


@pytest.mark.parametrize("case", _params([c for c in CASES if c.autocast]))
def test_cpu_autocast_bfloat16(case):
    """A bfloat16 activation from a convolution under CPU autocast stays bfloat16."""
    x, *rest = case.inputs(case.shapes[0], torch.float32, "cpu")
    conv = torch.nn.Conv2d(x.shape[1], x.shape[1], 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        args = case.args(conv(x), *[t.to(torch.bfloat16) for t in rest])
        out = _face(case)(*args)
    assert out.dtype == torch.bfloat16
    case.compare(out, _reference(case)(*args), torch.bfloat16)


# ---- what only a GPU shows -------------------------------------------------------------------------
@CASE
def test_on_the_second_gpu(case, cuda_device):
    """The kernels run on the input's device, not the current one (cuda:0 stays current)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    tensors = case.inputs(case.shapes[1], torch.float32, "cuda:1")
    got = _face(case)(*case.args(*tensors))
    assert got.device == torch.device("cuda:1")
    case.compare(got, _face(case)(*case.args(*_to(tensors, "cuda:0"))), torch.float32)


def _captured(fn, x):
    """fn(static_x) captured in a CUDA graph after a warm-up on a side stream (torch's recipe);
    returns (the graph, its static input, its static outputs)."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_x)
    return graph, static_x, static_out


@pytest.mark.parametrize("case", _params([c for c in CASES if c.cuda_graph]))
def test_forward_and_backward_capture_in_a_cuda_graph(case, cuda_device):
    shape = case.shapes[0]
    rest = case.inputs(shape, torch.float32, cuda_device)[1:]
    out_shape = _reference(case)(*case.args(*case.inputs(shape, torch.float32, "cpu"))).shape
    upstream = random(tuple(out_shape), torch.float32, cuda_device, seed=1)

    def step(x):
        return _vjp(_face(case), case, (x, *rest), upstream)

    graph, static_x, (out, grad) = _captured(step, random(shape, torch.float32, cuda_device))
    for seed in (2, 3):  # replays read the new contents of the static input
        x = random(shape, torch.float32, cuda_device, seed=seed)
        static_x.copy_(x)
        graph.replay()
        want_out, want_grad = step(x)
        assert torch.equal(out, want_out) and torch.equal(grad, want_grad)
