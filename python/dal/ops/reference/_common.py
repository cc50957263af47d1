"""Helpers shared by the pure-torch references."""
import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a reference computes in: float32 for float16/bfloat16 (as the kernels do), else dtype."""
    return torch.promote_types(dtype, torch.float32)
