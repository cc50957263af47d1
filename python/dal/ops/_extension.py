"""Loads the compiled ops (dal._C) and says, for each op and device, which path runs.

Only this module touches dal._C. An op runs its compiled kernel when one is registered for the
input's device; otherwise it runs the pure-torch reference in dal.ops.reference and warns once
per op and device (DalFallbackWarning), so a fallback is never silent. DAL_FORCE_REFERENCE=1
forces the reference everywhere (for comparisons and debugging).
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

try:
    from dal import _C  # noqa: F401  (importing it registers the dal:: ops)

    LOAD_ERROR: str | None = None
except ImportError as error:  # a source checkout that was never built, or a torch mismatch
    _C = None
    LOAD_ERROR = f"{type(error).__name__}: {error}"

FORCE_REFERENCE = os.environ.get("DAL_FORCE_REFERENCE", "0") == "1"
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


class DalFallbackWarning(UserWarning):
    """An op ran its pure-torch reference because no compiled kernel serves the input's device."""


def op_names() -> list[str]:
    """Names of the ops that dal._C defines (empty when it is not built)."""
    if _C is None:
        return []
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("dal::"))


def _registered(op: str, device_type: str) -> bool:
    key = _DISPATCH_KEYS.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"dal::{op}", key)


# Resolved once at import: the ops' Python faces branch on a plain set lookup, which
# torch.compile traces without a graph break.
_COMPILED = frozenset(
    (op, device) for op in op_names() for device in _DISPATCH_KEYS if not FORCE_REFERENCE and _registered(op, device)
)


def has_kernel(op: str, device_type: str) -> bool:
    """True when `dal::op` has a compiled kernel for the device type ("cpu", "cuda")."""
    return (op, device_type) in _COMPILED


def implementation(op: str, device: str | torch.device = "cpu") -> str:
    """Which path `dal.ops.<op>` takes on this device: "compiled" or "reference"."""
    return "compiled" if has_kernel(op, torch.device(device).type) else "reference"


def cpu_kernel(op: str) -> str | None:
    """Which compiled CPU kernel `dal.ops.<op>` runs on this machine: "avx512" where the float32
    Sobel magnitude runs in AVX-512 registers (chosen at load from the capability torch reports;
    DAL_PORTABLE=1 forces the portable one), else "portable"; None where the reference runs."""
    if not has_kernel(op, "cpu"):
        return None
    return _C.SOBEL_CPU_KERNEL if op == "sobel" else "portable"


def build_info() -> dict:
    """How dal._C was built and what it serves here, for ``dal --version`` and bug reports.

    Keys: ``compiled`` (dal._C loaded), ``load_error`` (why not, else None), ``force_reference``
    (DAL_FORCE_REFERENCE=1), ``with_cuda`` (built with CUDA kernels), ``torch_version``,
    ``cuda_version`` and ``cuda_arch_list`` (what it was built against and for, from
    dal._build_info; None where it was never built, or built without CUDA), ``devices`` (the
    device types on which *any* op runs a compiled kernel; empty when the reference runs
    everywhere), ``cpu_sobel_kernel`` (:func:`cpu_kernel` of sobel: "avx512", "portable" or None).
    """
    try:  # written by setup.py: absent from a checkout that was never built
        from dal import _build_info
    except ImportError:
        _build_info = None
    return {
        "compiled": _C is not None,
        "load_error": LOAD_ERROR,
        "force_reference": FORCE_REFERENCE,
        "with_cuda": bool(getattr(_build_info, "WITH_CUDA", False)),
        "torch_version": getattr(_build_info, "TORCH_VERSION", None),
        "cuda_version": getattr(_build_info, "CUDA_VERSION", None),
        "cuda_arch_list": getattr(_build_info, "CUDA_ARCH_LIST", None),
        "devices": [d for d in _DISPATCH_KEYS if any(device == d for _, device in _COMPILED)],
        "cpu_sobel_kernel": cpu_kernel("sobel"),
    }


def fallback_reason(device_type: str) -> str:
    if FORCE_REFERENCE:
        return "DAL_FORCE_REFERENCE=1"
    if _C is None:
        return f"dal._C is not built or failed to load ({LOAD_ERROR})"
    return f"dal._C was built without {device_type.upper()} kernels"


_warned: set[tuple[str, str]] = set()


def warn_fallback(op: str, device_type: str) -> None:
    """Warn, once per op and device, that the reference runs; under torch.compile, outside the
    graph. Not decorated with torch.compiler.disable at import: that imports torch._dynamo, which
    takes as long as importing torch and every `dal infer` would pay for it."""
    if torch.compiler.is_compiling():
        _outside_graph()(op, device_type)
    else:
        _warn_once(op, device_type)


@functools.cache
def _outside_graph():
    return torch.compiler.disable(_warn_once)  # compiling: torch._dynamo is loaded already


def _warn_once(op: str, device_type: str) -> None:
    if (op, device_type) not in _warned:
        _warned.add((op, device_type))
        warnings.warn(
            f"dal.ops.{op}: running the pure-torch reference on {device_type}: {fallback_reason(device_type)}",
            DalFallbackWarning,
            stacklevel=3,
        )
