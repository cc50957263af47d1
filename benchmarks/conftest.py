"""Shared settings of the benchmarks: `pytest benchmarks/ --benchmark-only`.

Each group holds dal's op and the peers a user would otherwise call, run side by side in one
session; the README quotes ratios within a group. `machine` records where the run happened.
Each op's file (bench_<stem>.py) holds its CPU groups and its GPU groups ("cuda ..."); the GPU
benchmarks (those that take the `gpu` fixture) are marked `cuda` (`-m cuda` selects them) and
skipped without a GPU.

The session allocates as the `dal` command does (`dal.keep_freed_memory`: glibc keeps freed
large blocks), dal's ops and their peers alike.
"""
import platform

import pytest
import torch
import torch.nn.functional as F

import dal

KEEPS_FREED_MEMORY = dal.keep_freed_memory()


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine_info["processor"] = platform.processor()
    machine_info["keeps_freed_memory"] = KEEPS_FREED_MEMORY


@pytest.hookimpl(tryfirst=True)  # before -m selects by markers
def pytest_collection_modifyitems(items):
    for item in items:
        if "gpu" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture
def run(benchmark):
    """benchmark.pedantic with the rounds that big tensor ops need (warm-ups, then a few rounds)."""

    def _run(fn, rounds=5, warmup=1):
        return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)

    return _run


@pytest.fixture(scope="session")
def cuda():
    """The CUDA device; skips the benchmark without one."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device("cuda")


@pytest.fixture
def gpu(benchmark, cuda):
    """benchmark.pedantic of fn followed by a device synchronisation, after two warm-ups: a round
    is the kernels' whole run."""

    def _run(fn, rounds=10):
        def timed():
            out = fn()
            torch.cuda.synchronize()
            return out

        return benchmark.pedantic(timed, rounds=rounds, warmup_rounds=2, iterations=1)

    return _run


def _brain_like(shape, seed=0):
    """Smooth blobs plus noise: edges at many scales and orientations, like an MRI slice stack."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((shape[0], shape[1], *[max(2, s // 16) for s in shape[2:]]), generator=g)
    mode = "trilinear" if len(shape) == 5 else "bilinear"
    smooth = F.interpolate(coarse, size=shape[2:], mode=mode, align_corners=False)
    return (smooth + 0.05 * torch.randn(shape, generator=g)).contiguous()


@pytest.fixture(scope="session")
def brain_like():
    """brain_like(shape, seed=0): smooth blobs plus noise, on the CPU."""
    return _brain_like


@pytest.fixture(scope="module")
def cuda_slices(brain_like, cuda):
    """256 slices of 192x192 on the GPU (bench_sobel, bench_canny)."""
    return brain_like((256, 1, 192, 192)).to(cuda)


@pytest.fixture(scope="module")
def cuda_volume(brain_like, cuda):
    """One 160x192x160 volume on the GPU (bench_canny, bench_median)."""
    return brain_like((1, 1, 160, 192, 160)).to(cuda)
