"""dal.engine.memory: the CLI's process keeps freed large blocks for its next tensors."""
import platform
import subprocess
import sys

import pytest

CHECK = """
import ctypes, sys, numpy as np
from dal import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    assert keep_freed_memory()
block = np.ones(100 << 20, np.uint8)  # 100 MB, above glibc's 32 MB mmap ceiling
del block
print(libc.mallinfo2().fordblks >> 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("kept", [True, False])
def test_a_freed_large_block_stays_in_the_heap_only_when_asked(kept):
    command = [sys.executable, "-c", CHECK, "keep" if kept else "default"]
    free_mb = int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert (free_mb >= 100) is kept  # by default the block went back to the system (munmap)


def test_the_cli_keeps_freed_memory(monkeypatch):
    from click.testing import CliRunner

    import dal
    from dal.cli import main

    calls = []
    monkeypatch.setattr(dal, "keep_freed_memory", lambda: calls.append(1) or True, raising=False)
    assert CliRunner().invoke(main, ["synth", "--help"]).exit_code == 0
    assert calls == [1]
