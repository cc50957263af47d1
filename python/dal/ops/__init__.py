"""dal's fused ops. Each has a compiled CPU/CUDA kernel (dal._C) and a pure-torch reference
(dal.ops.reference); `implementation(op, device)` says which one runs."""
from dal.ops._extension import DalFallbackWarning, cpu_kernel, implementation, op_names
from dal.ops.canny import canny
from dal.ops.median import median_filter
from dal.ops.onehot import onehot_st
from dal.ops.residual import binary_dilate, binary_erode, residual_score
from dal.ops.sobel import sobel

__all__ = [
    "DalFallbackWarning",
    "binary_dilate",
    "binary_erode",
    "canny",
    "cpu_kernel",
    "implementation",
    "median_filter",
    "onehot_st",
    "op_names",
    "residual_score",
    "sobel",
]
