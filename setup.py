"""Builds dal._C from csrc/ and dal_core/include.

CPU kernels are always built, for any x86-64 CPU: the AVX-512 Sobel kernel is compiled beside the
portable one and chosen at run time (dal_core/include/dal/sobel_avx512.h). CUDA kernels are added
when torch has CUDA and nvcc is found, or when FORCE_CUDA=1 (CI builds them that way on a machine
without a GPU), for TORCH_CUDA_ARCH_LIST, by default every architecture from sm_80 to sm_120 with
PTX for the newest.
"""
import os
import shutil
from pathlib import Path

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = Path(__file__).parent.resolve()
# A100, A10/RTX 30, L4/RTX 40, H100/H200, B200, RTX 50; PTX of the newest for GPUs after those.
DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0;10.0;12.0+PTX"


def cuda_wanted() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and (
        shutil.which("nvcc") is not None or Path(cpp_extension.CUDA_HOME, "bin", "nvcc").exists()
    )


def cuda_header_dirs() -> list[str]:
    """Headers that pip's CUDA wheels install beside torch (cusparse.h and friends)."""
    try:
        import nvidia  # namespace package of the nvidia-* wheels
    except ImportError:
        return []
    return [str(p) for base in nvidia.__path__ for p in Path(base).glob("cu*/include")]


def extension():
    with_cuda = cuda_wanted()
    sources = ["csrc/ops.cpp", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc/cpu").glob("*.cpp"))]
    # No errno or FP traps to honour: lets GCC vectorise loops that call the dal_core math. No
    # fused multiply-add either: every CPU kernel rounds alike, whatever the CPU.
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    kwargs = dict(
        name="dal._C",
        include_dirs=[str(ROOT / "dal_core/include")],
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    if with_cuda:
        # Unset, torch builds for the GPUs it sees, and fails with none (FORCE_CUDA=1 in CI).
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
        sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc/cuda").glob("*.cu"))
        kwargs["include_dirs"] += cuda_header_dirs()
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
        return with_cuda, cpp_extension.CUDAExtension(sources=sources, **kwargs)
    return with_cuda, cpp_extension.CppExtension(sources=sources, **kwargs)


class BuildExtensionWithInfo(cpp_extension.BuildExtension):
    """Also writes dal/_build_info.py beside dal._C: how it was built, for `dal --version` and
    the build tests (a CUDA build must register a CUDA kernel for every op)."""

    def run(self):
        super().run()
        info = Path(self.get_ext_fullpath("dal._C")).parent / "_build_info.py"
        info.write_text(
            "# Written by setup.py at build time.\n"
            f"WITH_CUDA = {WITH_CUDA!r}\n"
            f"TORCH_VERSION = {torch.__version__!r}\n"
            f"CUDA_VERSION = {torch.version.cuda if WITH_CUDA else None!r}\n"
            f"CUDA_ARCH_LIST = {os.environ['TORCH_CUDA_ARCH_LIST'] if WITH_CUDA else None!r}\n"
        )


WITH_CUDA, EXTENSION = extension()
setup(
    # DAL_BUILD_DIR keeps builds against different torch installs apart (scripts/setup-venv.sh).
    options={"build": {"build_base": os.environ.get("DAL_BUILD_DIR", "build")}},
    ext_modules=[EXTENSION],
    cmdclass={"build_ext": BuildExtensionWithInfo.with_options(use_ninja=True)},
)
