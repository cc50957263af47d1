"""The one place a device name becomes a torch.device, for training, inference and evaluation."""
from __future__ import annotations

import torch

from dal.errors import DeviceError


def resolve_device(device: str | torch.device | None, rank: int = 0) -> torch.device:
    """``None``/"auto": CUDA when present (process ``rank``'s GPU under torchrun), else CPU.
    A CUDA device asked for must exist."""
    if device is None or str(device) == "auto":
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device}: no CUDA device is available here (torch {torch.__version__}); use cpu")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device: expected auto, cpu, cuda or cuda:N, got {device}")
    return device
