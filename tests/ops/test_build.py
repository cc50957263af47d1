"""The compiled extension: it loads, it serves every op, a CUDA build has a CUDA kernel for each,
and dal.ops.build_info() says so."""
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


def test_build_info_says_how_dal_C_was_built_and_what_it_serves():
    from dal import _build_info

    info = ops.build_info()
    assert set(info) == {"compiled", "load_error", "force_reference", "with_cuda", "torch_version", "cuda_version",
                         "cuda_arch_list", "devices", "cpu_sobel_kernel"}
    assert info["compiled"] is (_extension._C is not None) and info["load_error"] == _extension.LOAD_ERROR
    assert info["force_reference"] is _extension.FORCE_REFERENCE
    assert info["with_cuda"] is _build_info.WITH_CUDA
    assert (info["torch_version"], info["cuda_version"], info["cuda_arch_list"]) == (
        _build_info.TORCH_VERSION, _build_info.CUDA_VERSION, _build_info.CUDA_ARCH_LIST)
    for device in ("cpu", "cuda"):  # any op with a compiled kernel there
        assert (device in info["devices"]) is any(ops.implementation(op, device) == "compiled" for op in ops.op_names())
    assert info["cpu_sobel_kernel"] == ops.cpu_kernel("sobel")


def test_build_info_without_compiled_kernels(monkeypatch):
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "LOAD_ERROR", "ImportError: undefined symbol")
    monkeypatch.setattr(_extension, "_COMPILED", frozenset())
    info = ops.build_info()
    assert info["compiled"] is False and info["load_error"] == "ImportError: undefined symbol"
    assert info["devices"] == [] and info["cpu_sobel_kernel"] is None


def test_cli_version_says_how_ops_were_built():
    out = subprocess.run([sys.executable, "-m", "dal", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"dal {dal.__version__}\n")
    assert "compiled ops: built" in out and "kernels for cpu" in out
