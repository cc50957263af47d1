"""The `dal` command line: a thin Click layer over the public Python API."""
from __future__ import annotations

import click

from dal._version import __version__


def build_summary() -> str:
    """One line on how the compiled ops were built and which devices they serve."""
    from dal import ops
    from dal.ops import _extension

    if _extension._C is None:
        return f"compiled ops: not available ({_extension.LOAD_ERROR}); using the pure-torch reference"
    from dal import _build_info

    devices = [d for d in ("cpu", "cuda") if any(ops.implementation(op, d) == "compiled" for op in ops.op_names())]
    cuda = f"CUDA {_build_info.CUDA_VERSION}" if _build_info.WITH_CUDA else "without CUDA"
    return f"compiled ops: built {cuda} against torch {_build_info.TORCH_VERSION}; kernels for {', '.join(devices)}"


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"dal {__version__}\n{build_summary()}")
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and how the compiled ops were built, then exit.")
def main() -> None:
    """dal: find lesions in brain MRI by rebuilding a pseudo-healthy image of each scan."""
