"""How dal's own processes (the CLI) allocate memory: freed blocks kept for the next tensors."""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Have glibc serve large blocks from the heap and keep what is freed, up to 1 GiB a block.

    By default every block above 32 MB is a fresh ``mmap`` and goes back to the system when
    freed, so each large activation (a U-Net's concatenation at batch 32 is 66 MB) is paid for
    again in page faults (the README's cold ``dal infer`` benchmark, before and after). For the
    CLI's process only: a library does not change the allocator
    of the program that imports it. Returns False where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * KEEP_BYTES))
