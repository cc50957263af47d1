"""dal's fused ops. Each has a compiled CPU/CUDA kernel (dal._C) and a pure-torch reference
(dal.ops.reference); `implementation(op, device)` says which one runs, `build_info()` how dal._C
was built. One module per op, named as its stem in every layer (csrc, dal_core, tests, benchmarks)."""
from dal.ops._extension import DalFallbackWarning, build_info, cpu_kernel, implementation, op_names
from dal.ops.canny import canny
from dal.ops.median import median_filter
from dal.ops.morphology import binary_dilate, binary_erode
from dal.ops.onehot import onehot_st
from dal.ops.residual import residual_score
from dal.ops.sobel import sobel

__all__ = [
    "DalFallbackWarning",
    "binary_dilate",
    "binary_erode",
    "build_info",
    "canny",
    "cpu_kernel",
    "implementation",
    "median_filter",
    "onehot_st",
    "op_names",
    "residual_score",
    "sobel",
]
