"""dal's fused ops. Each has a compiled CPU/CUDA kernel (dal._C) and a pure-torch reference
(dal.ops.reference); `implementation(op, device)` says which one runs."""
from dal.ops._extension import DalFallbackWarning, implementation, op_names
from dal.ops.onehot import onehot_st
from dal.ops.sobel import sobel
from dal.ops.canny import canny

__all__ = ["DalFallbackWarning", "implementation", "onehot_st", "op_names", "sobel", "canny"]
