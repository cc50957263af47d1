"""The `dal` command line: a thin Click layer over the public Python API (``dal``, ``dal.ops.build_info``).

Every :class:`dal.DalError` and OSError is one line (``Error: ...``) and exit status 1 (2 for a bad
option); anything else is a bug in dal, shown with its traceback and a request to report it.
"""
from __future__ import annotations

import os
import sys
import traceback

import click

import dal
from dal.errors import clip, os_error_line

BUG_REPORT = ("this is a bug in dal {version}, not a problem with your input: please report it to the dal developers "
              "with the command line and the traceback above")


def build_summary() -> str:
    """One line on how the compiled ops were built and which devices they serve."""
    from dal.ops import build_info

    info = build_info()
    if not info["compiled"]:
        return f"compiled ops: not available ({info['load_error']}); using the pure-torch reference"
    cuda = f"CUDA {info['cuda_version']} for {info['cuda_arch_list']}" if info["with_cuda"] else "without CUDA"
    cpu = f"; CPU Sobel kernel: {info['cpu_sobel_kernel']}" if info["cpu_sobel_kernel"] else ""
    return (f"compiled ops: built {cuda} against torch {info['torch_version']}; kernels for "
            f"{', '.join(info['devices'])}{cpu}")


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"dal {dal.__version__}\n{build_summary()}")
        ctx.exit()


def bug_lines(error: BaseException) -> str:
    """The traceback of an error that is dal's fault, and the request to report it."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"{trace}dal: {BUG_REPORT.format(version=dal.__version__)}"


class _Commands(click.Group):
    """DalError and OSError: one line, exit status 1. Click's own exits pass through. Anything
    else is a bug: its traceback, a request to report it, exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except dal.DalError as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            raise click.ClickException(os_error_line(error)) from None
        except Exception as error:
            click.echo(bug_lines(error), err=True)
            ctx.exit(1)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and how the compiled ops were built, then exit.")
def main() -> None:
    """dal: find lesions in brain MRI by rebuilding a pseudo-healthy image of each scan."""
    dal.keep_freed_memory()


def _comma_list(_ctx, _param, value: str) -> tuple[str, ...]:
    return tuple(n.strip().lower() for n in value.split(",") if n.strip())


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the cases into.")
@click.option("--n", "count", default=4, show_default=True, type=click.IntRange(min=1), help="Number of cases.")
@click.option("--contrast", "contrasts", default="t1,t2,flair", show_default=True,
              callback=_comma_list, help="Scans of each case (t1, t2, flair, pd).")
@click.option("--lesions", default="none,tumour,stroke,wmh", show_default=True,
              callback=_comma_list, help="Lesion types (none, tumour, stroke, wmh), given to the cases in turn.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed; the output is a function of it.")
@click.option("--spacing", default=1.0, show_default=True, type=click.FloatRange(0.25, 8), help="Voxel size, mm.")
@click.option("--shape", default="160,192,160", show_default=True, help="Grid size in voxels, X,Y,Z (RAS).")
@click.option("--overwrite", is_flag=True, help="Replace cases already in --out.")
@click.option("--anatomy", "anatomy_path", type=click.Path(dir_okay=False), default=None,
              help="A real healthy scan (NIfTI) to implant the lesions into instead of the template; the cases "
                   "keep its grid (--spacing and --shape are ignored).")
@click.option("--tissue", "tissue_path", type=click.Path(dir_okay=False), default=None,
              help="With --anatomy: its tissue maps (4D CSF, GM, WM) or labels (1 CSF, 2 GM, 3 WM); "
                   "default: a 3-class fit of the scan.")
@click.option("--anatomy-mask", type=click.Path(dir_okay=False), default=None,
              help="With --anatomy: its brain mask (default: its non-zero voxels, or the labelled ones).")
@click.option("--anatomy-contrast", default="t1", show_default=True,
              type=click.Choice(["t1", "t2", "flair", "pd"]), help="With --anatomy: the scan's contrast.")
def synth(out, count, contrasts, lesions, seed, spacing, shape, overwrite, anatomy_path, tissue_path, anatomy_mask,
          anatomy_contrast):
    """Write synthetic brain MRI cases (scans, brain masks, lesion labels, tissue maps) from the
    MNI152 template, or lesions implanted into a real scan (--anatomy), in a BraTS-like layout
    with a manifest.json."""
    try:
        grid = tuple(int(size) for size in shape.split(","))
        if len(grid) != 3:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected three integers X,Y,Z; got {shape!r}", param_hint="--shape") from None
    if anatomy_path is None and (tissue_path or anatomy_mask):
        raise click.UsageError("--tissue and --anatomy-mask go with --anatomy")
    manifest = dal.synthesize(out, count, contrasts=contrasts, lesions=lesions, seed=seed, spacing=spacing, shape=grid,
                              overwrite=overwrite, anatomy=anatomy_path, tissue=tissue_path, anatomy_mask=anatomy_mask,
                              anatomy_contrast=anatomy_contrast, progress=True)
    click.echo(f"wrote {count} case(s) to {out} ({manifest.name})")


@main.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Data folder (flat/IXI, BraTS-like, BIDS, dal synth). Default: the embedded synthetic population.")
@click.option("--contrast", default=None, help="The contrast to train on from --data (t1, t2, flair, pd, ...).")
@click.option("--val", type=click.Path(file_okay=False), default=None,
              help="Labelled validation folder. Default: synthetic lesion volumes.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML file of settings (see configs/default.yaml); the flags below override it.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder, e.g. runs/NAME.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (from step 0 if it "
                                            "stopped before its first).")
@click.option("--overwrite", is_flag=True, help="Discard the run in --out and start it again.")
@click.option("--init", default=None, help="Start from the weights of this checkpoint (\"pretrained\": the shipped "
                                          "default) instead of random ones, e.g. to fine-tune it on your own scans.")
@click.option("--model", "model_kind", type=click.Choice(["dal", "ae", "dae", "intensity", "zscore"]), default=None,
              help="dal (default), ae (autoencoder), dae (denoising autoencoder), intensity (raw-intensity "
                   "thresholding: nothing to train, its thresholds are calibrated) or zscore (voxel-wise z-score "
                   "against the healthy scans of the scan's contrast in MNI152 space: fitted, then calibrated).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of everything random.")
@click.option("--max-steps", type=click.IntRange(min=0), default=None, help="Stop after this many steps.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Training time budget.")
@click.option("--val-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Validate every this many minutes of training (default: once per epoch).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Slices per step (per process).")
@click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--amp", type=click.Choice(["auto", "bf16", "off"]), default=None,
              help="Precision of the training step: bf16 autocast, off (float32), or auto (default: bf16 on CUDA; on "
                   "a CPU with native bf16, whichever a timed step measures faster).")
@click.option("--register", is_flag=True, default=None, help="Work in MNI152 space (affine registration).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data, contrast, val, config_path, out, resume, overwrite, init, model_kind, seed, max_steps, minutes, val_minutes,
          batch_size, device, threads, amp, register, quiet):
    """Train DAL (or a baseline) on healthy scans; validate on labelled ones; keep the best
    checkpoint by validation AP, with thresholds at 1% and 5% false positives. Under torchrun,
    one process per device with DistributedDataParallel."""
    settings = {"data.data": data, "data.contrast": contrast, "data.val": val, "model.kind": model_kind,
                "train.seed": seed, "train.max_steps": max_steps, "train.minutes": minutes, "train.val_minutes": val_minutes,
                "train.batch_size": batch_size, "train.device": device, "train.threads": threads, "train.amp": amp, "train.init": init,
                "preprocessing.register": register}
    try:
        summary = dal.train(out, config_path, settings=settings, resume=resume, overwrite=overwrite, progress=not quiet)
    except dal.ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--config") from None
    except dal.DeviceError as error:
        raise click.BadParameter(str(error), param_hint="--device") from None
    best = "none" if summary["best_ap"] is None else f"{summary['best_ap']:.3f} at step {summary['best_step']}"
    click.echo(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s; best validation AP {best}; "
               f"checkpoints in {out}")


@main.command()
@click.argument("scans", nargs=-1, required=True, type=click.Path())
@click.option("--model", "checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint (.safetensors). Default: the shipped pretrained checkpoint.")
@click.option("--out", default="dal-output", show_default=True, type=click.Path(),
              help="Folder for the outputs (with --bids-derivatives: BIDS_ROOT/derivatives/dal).")
@click.option("--mask", "masks", multiple=True, type=click.Path(),
              help="Brain mask on the scan's grid, one per scan, in order (default: computed).")
@click.option("--contrast", default=None, help="The scans' contrast (t1, t2, flair, pd); picks one scan per case of a folder.")
@click.option("--fpr", type=click.Choice(["0.01", "0.05"]), default="0.01", show_default=True,
              help="The calibrated threshold, at 1% or 5% false-positive voxels on healthy scans (of the scan's "
                   "contrast, where the checkpoint has them): the lesion mask, the overlay's outline and the start "
                   "of its colour scale.")
@click.option("--threshold", type=float, default=None, help="A score threshold of your own (overrides --fpr).")
@click.option("--register", is_flag=True, help="Align each scan to MNI152 (affine) first; outputs come back to its grid.")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's choice).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Slices per forward pass.")
@click.option("--no-overlay", is_flag=True, help="Do not draw NAME_overlay.png.")
@click.option("--report", is_flag=True, help="Also write NAME_report.html: an interactive 3D viewer (NiiVue; scan, "
                                            "pseudo-healthy image, scores, lesion mask, a threshold slider), offline.")
@click.option("--bids-derivatives", is_flag=True,
              help="SCANS is one BIDS dataset: write BIDS derivatives into BIDS_ROOT/derivatives/dal (or --out), "
                   "with BIDS names, JSON sidecars and dataset_description.json (maps and sidecars only: no overlay).")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run in --out.")
@click.option("--verbose", "-v", is_flag=True, help="Print the time of each stage.")
@click.pass_context
def infer(ctx, scans, checkpoint, out, masks, contrast, fpr, threshold, register, device, threads, batch_size,
          no_overlay, report, bids_derivatives, overwrite, verbose):
    """Find lesions in SCANS (NIfTI files or folders). For each scan NAME writes, on its own voxel
    grid: NAME_anomaly.nii.gz (scores), NAME_phi.nii.gz (pseudo-healthy image), NAME_lesions.nii.gz
    (lesion mask), NAME_overlay.png and NAME.json (lesion volume, count, peak score, timings,
    warnings). One threshold (--fpr, or --threshold) makes the lesion mask, its outline in the
    overlay and the start of the overlay's colour scale. A scan that fails is reported on one
    line; the others go on; the exit code is 1 if any failed. Files in --out that dal did not
    write are never replaced."""
    detector = _load_detector(checkpoint, device=device, threads=threads, batch_size=batch_size,
                              register=register or None)
    given_out = ctx.get_parameter_source("out") is not click.core.ParameterSource.DEFAULT
    try:
        outcomes = detector.run(scans, out if given_out else None, masks=masks,
                                contrast=contrast, fpr=float(fpr), threshold=threshold, overlay=not no_overlay,
                                report=report, bids_derivatives=bids_derivatives, overwrite=overwrite, progress=True)
    except dal.ArgumentError as error:
        raise click.UsageError(str(error)) from None
    failed = total = 0
    for outcome in outcomes:
        total += 1
        if outcome.error is None:
            _report(outcome, verbose)
            continue
        failed += 1
        error = outcome.error
        if isinstance(error, dal.DalError):
            _say(f"error: {clip(str(error))}", err=True)
        elif isinstance(error, OSError):
            _say(f"error: scan {outcome.scan}: {os_error_line(error)}", err=True)
        else:  # a bug must not stop the batch; it is reported with the scan's name and its traceback
            _say(f"error: scan {outcome.scan}: {bug_lines(error)}", err=True)
    if failed:
        click.echo(f"{failed} of {total} scan(s) failed", err=True)
        raise SystemExit(1)


def _load_detector(checkpoint, **options) -> "dal.Detector":
    try:
        return dal.Detector.load(checkpoint, **options)
    except dal.DeviceError as error:
        raise click.BadParameter(str(error), param_hint="--device") from None


def _say(line: str, err: bool = False) -> None:
    """A line above the progress bar, if one is drawn."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr if err else sys.stdout)


def _report(outcome, verbose: bool) -> None:
    """The lines of one scan done: what was found, its warnings, and with --verbose its timings."""
    result, written, scan = outcome.result, outcome.written, outcome.scan
    _say(f"{scan}: {result.lesion_count} lesion(s), {result.lesion_volume_ml:.2f} ml, peak score "
         f"{result.peak_score:.3g} -> {written.get('overlay', written['json'])}")
    for warning in result.warnings:
        _say(f"warning: {scan}: {warning}", err=True)
    if verbose:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
        _say(f"  {stages}; total {sum(result.timings.values()):.2f} s")


@main.command()
@click.option("--data", required=True, type=click.Path(), help="Labelled data folder (BraTS-like, BIDS, dal synth).")
@click.option("--model", "checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint (.safetensors). Default: the shipped pretrained checkpoint.")
@click.option("--out", default="dal-evaluation", show_default=True, type=click.Path(),
              help="Folder for metrics.csv, metrics.json and report.html.")
@click.option("--contrast", default=None, help="Evaluate only scans of this contrast (default: every scan).")
@click.option("--register", is_flag=True, help="Align each scan to MNI152 (affine) first.")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's choice).")
@click.option("--no-overlays", is_flag=True, help="Leave the overlays out of the report.")
@click.option("--overwrite", is_flag=True, help="Replace the reports of an earlier evaluation in --out.")
def evaluate(data, checkpoint, out, contrast, register, device, threads, no_overlays, overwrite):
    """Evaluate a checkpoint on labelled scans: per-volume AP, AUROC, best Dice, Dice at 1%/5%
    false positives, lesion-wise recall and false-positive lesions; their means (volumes with
    lesion only) and pooled values; a CSV, a JSON and a self-contained HTML report, whose
    pictures and 3D viewer show each volume at dal infer's threshold (1% false positives) with
    its label outlined."""
    detector = _load_detector(checkpoint, device=device, threads=threads, register=register or None)
    report = dal.evaluate(data, out, model=detector, contrast=contrast, overlays=not no_overlays, progress=True,
                          overwrite=overwrite)
    summary = report["summary"]

    def show(value):
        return "n/a" if value is None else f"{value:.3f}"

    click.echo(f"{summary['volumes']} volume(s), {summary['lesion_volumes']} with lesion "
               f"(volumes without lesion are left out of the lesion means)")
    click.echo(f"mean AP {show(summary['mean_average_precision'])}, AUROC {show(summary['mean_auroc'])}, "
               f"best Dice {show(summary['mean_best_dice'])}, Dice at 1%/5% FPR "
               f"{show(summary.get('mean_dice_fpr_0.01'))}/{show(summary.get('mean_dice_fpr_0.05'))}; "
               f"pooled AP {show(summary['pooled_average_precision'])}")
    for message in report["failures"] + report["skipped"] + report["notes"]:
        click.echo(f"warning: {message}", err=True)
    click.echo(f"report: {os.path.join(out, 'report.html')}")
    if report["failures"]:
        raise SystemExit(1)
