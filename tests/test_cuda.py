"""What only a GPU shows: every op runs its compiled CUDA kernel (never the reference), in float16
and bfloat16 too, on a second GPU, past the grid limits of one launch, and inside a CUDA graph.

The CUDA kernels share their per-voxel math with the CPU kernels (dal_core), so each is checked
against the compiled CPU kernel on the same input. Skipped, visibly, without a GPU.
"""
import pytest
import torch

from dal import ops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.filterwarnings("error::dal.ops.DalFallbackWarning"),
]


def _random(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _smooth(shape, dtype=torch.float32, seed=0):
    """Random blobs (Canny finds edges of a few pixels, not noise)."""
    x = _random(shape, torch.float32, seed)
    pool = torch.nn.functional.avg_pool3d if len(shape) == 5 else torch.nn.functional.avg_pool2d
    return pool(x, 5, 1, 2).to(dtype)


def _mask(shape, seed=0):
    return _random(shape, seed=seed) > -0.3


# Each op on one input, as a function of the device's copy of it: (op, input shape, call).
CASES = {
    "onehot_st": ((2, 5, 9, 11), lambda x: ops.onehot_st(x, tau=0.5)),
    "sobel": ((2, 3, 9, 37), lambda x: ops.sobel(x)),
    "sobel_components_3d": ((1, 2, 5, 9, 37), lambda x: ops.sobel(x, magnitude=False, normalized=True)),
    "canny": ((2, 1, 37, 41), lambda x: ops.canny(x, 0.01, 0.05)),
    "canny_3d": ((1, 1, 17, 19, 23), lambda x: ops.canny(x, 0.01, 0.05)),
    "median_filter": ((1, 2, 9, 10, 11), lambda x: ops.median_filter(x, 5)),
    "residual_score": ((1, 1, 9, 10, 11), lambda x: ops.residual_score(x, x.flip(-1), x > -0.3, 3, 1)),
    "binary_erode": ((1, 1, 9, 10, 11), lambda x: ops.binary_erode(x > -0.3, 1)),
    "binary_dilate": ((2, 1, 12, 13), lambda x: ops.binary_dilate(x > -0.3, 2)),
}
TOLERANCE = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-2),
    torch.bfloat16: dict(rtol=2e-2, atol=5e-2),
}


def _input(name, dtype):
    shape, _ = CASES[name]
    return (_smooth if name.startswith("canny") else _random)(shape, dtype)


def _agree(got: torch.Tensor, want: torch.Tensor, dtype, edges: bool = False) -> None:
    """Equal masks (Canny's edges: but for 1% of them, where rounding flips a tie on a plateau),
    close values."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == torch.bool:
        assert (got.cpu() != want.cpu()).sum().item() <= (0.01 * max(1, want.sum().item()) if edges else 0)
    else:
        torch.testing.assert_close(got.cpu(), want.cpu(), **TOLERANCE[dtype])


def test_every_op_runs_its_compiled_cuda_kernel():
    assert ops.op_names(), "dal._C is not built"
    assert {op: ops.implementation(op, "cuda") for op in ops.op_names()} == {op: "compiled" for op in ops.op_names()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(CASES))
def test_every_op_agrees_with_the_cpu_kernel(name, dtype):
    x = _input(name, dtype)
    _, call = CASES[name]
    _agree(call(x.cuda()), call(x), dtype, edges=name.startswith("canny"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["onehot_st", "sobel", "sobel_components_3d"])
def test_backward_agrees_with_the_cpu_kernel(name, dtype):
    x = _input(name, dtype)
    _, call = CASES[name]
    grads = []
    for device in ("cuda", "cpu"):
        leaf = x.to(device).requires_grad_()
        out = call(leaf)
        (grad,) = torch.autograd.grad(out, leaf, _random(tuple(out.shape), dtype, seed=1).to(device))
        grads.append(grad)
    _agree(*grads, dtype)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("spatial", [2, 3])
def test_median_of_every_window_size(k, spatial):
    """Each window has its own kernel (wires sized by it) and its own cached plan: every one, twice."""
    x = _random((1, 2, 6, 9, 10) if spatial == 3 else (2, 2, 9, 10))
    want = ops.median_filter(x, k)
    for _ in range(2):
        assert torch.equal(ops.median_filter(x.cuda(), k).cpu(), want)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("name", list(CASES))
def test_every_op_on_the_second_gpu(name):
    """The kernels run on the input's device, not the current one (cuda:0 stays current)."""
    x = _input(name, torch.float32)
    _, call = CASES[name]
    got = call(x.to("cuda:1"))
    assert got.device == torch.device("cuda:1")
    _agree(got, call(x.cuda()), torch.float32, edges=name.startswith("canny"))


def _edges_in_every_image(x):
    """Canny on the GPU and on the CPU; every image, the last ones too, has edges to grow."""
    want = ops.canny(x, 0.05, 0.5)
    assert want.flatten(1).any(1).all()
    _agree(ops.canny(x.cuda(), 0.05, 0.5), want, torch.float32, edges=True)


def test_canny_2d_past_the_grid_limit():
    """N * C = 70000 images: more tiles along the hysteresis grid's z than one launch takes (65535)."""
    x = _smooth((70000, 1, 8, 8))
    x[..., 2:6, 2:6] += 4.0  # a square in every image
    _edges_in_every_image(x)


def test_canny_3d_past_the_grid_limit():
    """N * C * ceil(D / 4) = 16500 * 4 = 66000 tiles along z."""
    x = _smooth((16500, 1, 16, 6, 6))
    x[..., 4:12, 2:4, 2:4] += 4.0
    _edges_in_every_image(x)


def test_sobel_and_median_of_many_images():
    x = _random((70000, 1, 4, 4))
    _agree(ops.sobel(x.cuda()), ops.sobel(x), torch.float32)
    assert torch.equal(ops.median_filter(x.cuda(), 3).cpu(), ops.median_filter(x, 3))


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


@pytest.mark.parametrize("name", ["sobel", "onehot_st"])
def test_forward_and_backward_capture_in_a_cuda_graph(name):
    _, call = CASES[name]
    shape = CASES[name][0]
    grad = _random(shape, seed=1).cuda()

    def step(x):
        leaf = x.detach().requires_grad_()
        out = call(leaf)
        (g,) = torch.autograd.grad(out, leaf, grad)
        return out, g

    graph, static_x, (out, g) = _captured(step, _random(shape).cuda())
    for seed in (2, 3):  # replays read the new contents of the static input
        x = _random(shape, seed=seed).cuda()
        static_x.copy_(x)
        graph.replay()
        want_out, want_g = step(x)
        assert torch.equal(out, want_out) and torch.equal(g, want_g)
