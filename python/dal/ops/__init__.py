"""dal's fused ops. Each has a compiled CPU/CUDA kernel (dal._C) and a pure-torch reference
(dal.ops.reference); `implementation(op, device)` says which one runs."""
from dal.ops._extension import DalFallbackWarning, implementation, op_names
from dal.ops.onehot import onehot_st

__all__ = ["DalFallbackWarning", "implementation", "onehot_st", "op_names"]

from dal.ops.median import median_filter  # noqa: E402
from dal.ops.residual import binary_dilate, binary_erode, residual_score  # noqa: E402

__all__ += ["binary_dilate", "binary_erode", "median_filter", "residual_score"]
