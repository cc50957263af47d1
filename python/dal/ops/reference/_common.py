"""What the pure-torch references share: the dtype they compute in, the argument checks of every
op in one vocabulary (TypeError: not a tensor, or the wrong dtype; ValueError: a wrong shape or
value; IndexError: a dimension out of range), the replicate-border shift of the edge ops and the
cube-window reduction of the median and morphology ops."""
from __future__ import annotations

import torch
import torch.nn.functional as F

_SLAB = 8  # output depth slices per step of box_reduce: bounds the memory of the unfolded windows


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a reference computes in: float32 for float16/bfloat16 (as the kernels do), else dtype."""
    return torch.promote_types(dtype, torch.float32)


def check_tensor(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")


def check_floating(t, name: str) -> None:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{name} must be a floating-point tensor (float32, float64, bfloat16 or float16), got {got}")


def check_volume(t, name: str) -> int:
    """t is a (N, C, H, W) or (N, C, D, H, W) tensor; returns its spatial dims (2 or 3)."""
    check_tensor(t, name)
    if t.dim() not in (4, 5):
        raise ValueError(f"{name} must be (N, C, H, W) or (N, C, D, H, W), got {t.dim()} dimensions {tuple(t.shape)}")
    return t.dim() - 2


def check_image(t, name: str = "x") -> int:
    """t is a floating (N, C, H, W) or (N, C, D, H, W) tensor; returns its spatial dims (2 or 3)."""
    check_floating(t, name)
    return check_volume(t, name)


def check_radius(radius, name: str) -> None:
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"{name} must be >= 0 (voxels), got {radius}")


def shifted(t: torch.Tensor, axis: int, offset: int) -> torch.Tensor:
    """t shifted by `offset` along `axis` (t[i + offset]), replicate border."""
    n = t.shape[axis]
    index = (torch.arange(n, device=t.device) + offset).clamp(0, n - 1)
    return t.index_select(axis, index)


def _windows(padded: torch.Tensor, k: int, dims: int) -> torch.Tensor:
    """(B, *spatial + k - 1) padded -> (B, *spatial, k**dims) window values."""
    out = padded
    for axis in range(dims):
        out = out.unfold(1 + axis, k, 1)
    return out.reshape(*out.shape[: 1 + dims], -1)


def box_reduce(x: torch.Tensor, k: int, reduce) -> torch.Tensor:
    """reduce(windows) over a cube of side k, replicate border, for (N, C, *spatial) x; the
    result has the shape of x."""
    dims = x.dim() - 2
    r = k // 2
    flat = x.reshape(-1, *x.shape[2:])
    if r == 0:
        return x.clone()
    padded = F.pad(flat.unsqueeze(1), [r] * (2 * dims), mode="replicate").squeeze(1)
    if dims == 2:
        out = reduce(_windows(padded, k, 2))
    else:  # slab by slab along depth: the unfolded windows of a whole volume would not fit
        depth = flat.shape[1]
        out = torch.cat([reduce(_windows(padded[:, d : d + _SLAB + 2 * r], k, 3)) for d in range(0, depth, _SLAB)], 1)
    return out.reshape(x.shape)
