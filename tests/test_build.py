"""The compiled extension: it loads, it serves every op, and a CUDA build has a CUDA kernel for each."""
import subprocess
import sys

import pytest
import torch

import dal
from dal import ops
from dal.ops import _extension


def test_extension_loads_and_defines_ops():
    assert _extension._C is not None, f"dal._C failed to load: {_extension.LOAD_ERROR}"
    assert "onehot_st" in ops.op_names()


def test_every_op_has_a_cpu_kernel():
    for op in ops.op_names():
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dal::{op}", "CPU"), op


def test_cuda_build_registers_a_cuda_kernel_for_every_op():
    from dal import _build_info

    if not _build_info.WITH_CUDA:
        pytest.skip("dal._C was built without CUDA (no nvcc, or FORCE_CUDA unset)")
    missing = [op for op in ops.op_names() if not torch._C._dispatch_has_kernel_for_dispatch_key(f"dal::{op}", "CUDA")]
    assert not missing, f"ops without a CUDA kernel in a CUDA build: {missing}"


def test_implementation_reports_the_path():
    assert ops.implementation("onehot_st", "cpu") == ("reference" if _extension.FORCE_REFERENCE else "compiled")
    if not torch._C._dispatch_has_kernel_for_dispatch_key("dal::onehot_st", "CUDA"):
        assert ops.implementation("onehot_st", "cuda") == "reference"


def test_cli_version_says_how_ops_were_built():
    out = subprocess.run([sys.executable, "-m", "dal", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"dal {dal.__version__}\n")
    assert "compiled ops: built" in out and "kernels for cpu" in out
