"""Shared settings of the benchmarks: `pytest benchmarks/ --benchmark-only`.

Each group holds dal's op and the peers a user would otherwise call, run side by side in one
session; the README quotes ratios within a group. `machine` records where the run happened.
"""
import platform

import pytest
import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine_info["processor"] = platform.processor()


@pytest.fixture
def run(benchmark):
    """benchmark.pedantic with the rounds that big tensor ops need (a warm-up, then a few rounds)."""

    def _run(fn, rounds=5):
        return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)

    return _run
