"""The `dal` command line: a thin Click layer over the public Python API."""
from __future__ import annotations

from pathlib import Path

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


def _names(allowed: tuple[str, ...], option: str):
    def parse(_ctx, _param, value: str) -> tuple[str, ...]:
        names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise click.BadParameter(f"expected a comma-separated list of {', '.join(allowed)}; got {value!r}",
                                     param_hint=option)
        return names
    return parse


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the cases into.")
@click.option("--n", "count", default=4, show_default=True, type=click.IntRange(min=1), help="Number of cases.")
@click.option("--contrast", "contrasts", default="t1,t2,flair", show_default=True,
              callback=_names(("t1", "t2", "flair", "pd"), "--contrast"), help="Scans of each case (t1, t2, flair, pd).")
@click.option("--lesions", default="none,tumour,stroke,wmh", show_default=True,
              callback=_names(("none", "tumour", "stroke", "wmh"), "--lesions"),
              help="Lesion types, given to the cases in turn.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed; the output is a function of it.")
@click.option("--spacing", default=1.0, show_default=True, type=click.FloatRange(0.25, 8), help="Voxel size, mm.")
@click.option("--shape", default="160,192,160", show_default=True, help="Grid size in voxels, X,Y,Z (RAS).")
@click.option("--overwrite", is_flag=True, help="Replace cases already in --out.")
def synth(out, count, contrasts, lesions, seed, spacing, shape, overwrite):
    """Write synthetic brain MRI cases (scans, brain masks, lesion labels, tissue maps) from the
    MNI152 template, in a BraTS-like layout with a manifest.json."""
    from dal.data.synthetic import write_dataset

    try:
        grid = tuple(int(s) for s in shape.split(","))
        if len(grid) != 3:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected three integers X,Y,Z; got {shape!r}", param_hint="--shape") from None
    try:
        manifest = write_dataset(out, count, contrasts, lesions, seed, spacing=spacing, shape=grid,
                                 overwrite=overwrite, progress=True)
    except (FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {count} case(s) to {out} ({manifest.name})")


@main.command()
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Data folder (flat/IXI, BraTS-like, BIDS, dal synth). Default: the embedded synthetic population.")
@click.option("--contrast", default=None, help="The contrast to train on from --data (t1, t2, flair, pd, ...).")
@click.option("--val", type=click.Path(file_okay=False), default=None,
              help="Labelled validation folder. Default: synthetic lesion volumes.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML file of settings (see configs/default.yaml); the flags below override it.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder, e.g. runs/NAME.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--model", "model_kind", type=click.Choice(["dal", "ae", "dae"]), default=None,
              help="dal (default), ae (autoencoder) or dae (denoising autoencoder).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of everything random.")
@click.option("--max-steps", type=click.IntRange(min=0), default=None, help="Stop after this many steps.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Training time budget.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Slices per step (per process).")
@click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--register", is_flag=True, default=None, help="Work in MNI152 space (affine registration).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data, contrast, val, config_path, out, resume, model_kind, seed, max_steps, minutes, batch_size, device,
          register, quiet):
    """Train DAL (or a baseline) on healthy scans; validate on labelled ones; keep the best
    checkpoint by validation AP, with thresholds at 1% and 5% false positives. Under torchrun,
    one process per device with DistributedDataParallel."""
    from dal.data.io import DataError
    from dal.engine.checkpoint import CheckpointError
    from dal.engine.config import ConfigError, load_config
    from dal.engine.train import TrainingError, train as run_training

    if resume and config_path is None and (Path(out) / "config.yaml").is_file():
        config_path = str(Path(out) / "config.yaml")  # a resumed run keeps its own settings
    try:
        config = load_config(config_path)
        overrides = {"data.data": data, "data.contrast": contrast, "data.val": val, "model.kind": model_kind,
                     "train.seed": seed, "train.max_steps": max_steps, "train.minutes": minutes,
                     "train.batch_size": batch_size, "train.device": device, "preprocessing.register": register}
        config = config.replace({key: value for key, value in overrides.items() if value is not None})
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--config") from None
    if data is not None and not Path(data).is_dir():
        raise click.BadParameter(f"{data}: no such folder", param_hint="--data")
    try:
        summary = run_training(config, out, resume=resume, progress=not quiet)
    except (TrainingError, DataError, CheckpointError, ConfigError) as error:
        raise click.ClickException(str(error)) from None
    best = "none" if summary["best_ap"] is None else f"{summary['best_ap']:.3f} at step {summary['best_step']}"
    click.echo(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s; best validation AP {best}; "
               f"checkpoints in {out}")
