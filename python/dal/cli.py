"""The `dal` command line: a thin Click layer over the public Python API."""
from __future__ import annotations

from pathlib import Path

import click

from dal._version import __version__
from dal.errors import DalError, clip, os_error_line


def build_summary() -> str:
    """One line on how the compiled ops were built and which devices they serve."""
    from dal import ops
    from dal.ops import _extension

    if _extension._C is None:
        return f"compiled ops: not available ({_extension.LOAD_ERROR}); using the pure-torch reference"
    from dal import _build_info

    devices = [d for d in ("cpu", "cuda") if any(ops.implementation(op, d) == "compiled" for op in ops.op_names())]
    cuda = f"CUDA {_build_info.CUDA_VERSION}" if _build_info.WITH_CUDA else "without CUDA"
    if _build_info.WITH_CUDA:
        cuda += f" for {_build_info.CUDA_ARCH_LIST}"
    cpu = f"; CPU Sobel kernel: {ops.cpu_kernel('sobel')}" if ops.cpu_kernel("sobel") else ""
    return f"compiled ops: built {cuda} against torch {_build_info.TORCH_VERSION}; kernels for {', '.join(devices)}{cpu}"


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"dal {__version__}\n{build_summary()}")
        ctx.exit()


class _Commands(click.Group):
    """Every DalError and OSError of a command is one line (``Error: ...``) and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DalError as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            raise click.ClickException(os_error_line(error)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and how the compiled ops were built, then exit.")
def main() -> None:
    """dal: find lesions in brain MRI by rebuilding a pseudo-healthy image of each scan."""


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
    from dal.data.synthetic import write_dataset

    try:
        grid = tuple(int(s) for s in shape.split(","))
        if len(grid) != 3:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected three integers X,Y,Z; got {shape!r}", param_hint="--shape") from None
    if anatomy_path is None and (tissue_path or anatomy_mask):
        raise click.UsageError("--tissue and --anatomy-mask go with --anatomy")
    try:
        anatomy = None
        if anatomy_path is not None:
            from dal.data.anatomy import load_anatomy

            anatomy = load_anatomy(anatomy_path, tissue=tissue_path, mask=anatomy_mask, contrast=anatomy_contrast)
        manifest = write_dataset(out, count, contrasts, lesions, seed, spacing=spacing, shape=grid,
                                 overwrite=overwrite, progress=True, anatomy=anatomy)
    except ValueError as error:
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
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (from step 0 if it "
                                            "stopped before its first).")
@click.option("--overwrite", is_flag=True, help="Discard the run in --out and start it again.")
@click.option("--init", default=None, help="Start from the weights of this checkpoint (\"pretrained\": the shipped "
                                          "default) instead of random ones, e.g. to fine-tune it on your own scans.")
@click.option("--model", "model_kind", type=click.Choice(["dal", "ae", "dae", "intensity", "zscore"]), default=None,
              help="dal (default), ae (autoencoder), dae (denoising autoencoder), intensity (raw-intensity "
                   "thresholding: nothing to train, its thresholds are calibrated) or zscore (voxel-wise z-score "
                   "against the healthy training scans in MNI152 space: fitted, then calibrated).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of everything random.")
@click.option("--max-steps", type=click.IntRange(min=0), default=None, help="Stop after this many steps.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Training time budget.")
@click.option("--val-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Validate every this many minutes of training (default: once per epoch).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Slices per step (per process).")
@click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--register", is_flag=True, default=None, help="Work in MNI152 space (affine registration).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data, contrast, val, config_path, out, resume, overwrite, init, model_kind, seed, max_steps, minutes, val_minutes,
          batch_size, device, threads, register, quiet):
    """Train DAL (or a baseline) on healthy scans; validate on labelled ones; keep the best
    checkpoint by validation AP, with thresholds at 1% and 5% false positives. Under torchrun,
    one process per device with DistributedDataParallel."""
    from dal.engine.config import ConfigError, load_config
    from dal.engine.train import train as run_training

    if resume and config_path is None and (Path(out) / "config.yaml").is_file():
        config_path = str(Path(out) / "config.yaml")  # a resumed run keeps its own settings
    try:
        config = load_config(config_path)
        overrides = {"data.data": data, "data.contrast": contrast, "data.val": val, "model.kind": model_kind,
                     "train.seed": seed, "train.max_steps": max_steps, "train.minutes": minutes, "train.val_minutes": val_minutes,
                     "train.batch_size": batch_size, "train.device": device, "train.threads": threads, "train.init": init,
                     "preprocessing.register": register}
        config = config.replace({key: value for key, value in overrides.items() if value is not None})
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--config") from None
    if data is not None and not Path(data).is_dir():
        raise click.BadParameter(f"{data}: no such folder", param_hint="--data")
    summary = run_training(config, out, resume=resume, overwrite=overwrite, progress=not quiet)
    best = "none" if summary["best_ap"] is None else f"{summary['best_ap']:.3f} at step {summary['best_step']}"
    click.echo(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s; best validation AP {best}; "
               f"checkpoints in {out}")


def _inputs(paths: tuple[str, ...], masks: tuple[str, ...], contrast: str | None):
    """(scan, mask or None, input error or None) for every scan: files as given, folders through
    dal.data.find_cases (every scan of every case, or those of --contrast; the case's own brain
    mask where it has one)."""
    from pathlib import Path

    from dal.data.io import DataError
    from dal.data.layouts import canonical_contrast, find_cases

    if masks and len(masks) != len(paths):
        raise click.BadParameter(f"give one --mask per scan ({len(paths)} scan(s), {len(masks)} mask(s))",
                                 param_hint="--mask")
    jobs = []
    for index, path in enumerate(paths):
        mask = masks[index] if masks else None
        if not Path(path).is_dir():
            jobs.append((Path(path), Path(mask) if mask else None, None))
            continue
        if mask:
            jobs.append((Path(path), None, f"{path}: a folder takes the masks of its cases, not --mask"))
            continue
        try:
            for case in find_cases(path, contrast):
                keys = [canonical_contrast(contrast)] if contrast else sorted(case.images)
                jobs.extend((case.images[key], case.mask, None) for key in keys)
        except DataError as error:
            jobs.append((Path(path), None, str(error)))
    return jobs


@main.command()
@click.argument("scans", nargs=-1, required=True, type=click.Path())
@click.option("--model", "checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint (.safetensors). Default: the shipped pretrained checkpoint.")
@click.option("--out", default="dal-output", show_default=True, type=click.Path(),
              help="Folder for the outputs.")
@click.option("--mask", "masks", multiple=True, type=click.Path(),
              help="Brain mask on the scan's grid, one per scan, in order (default: computed).")
@click.option("--contrast", default=None, help="The scans' contrast (t1, t2, flair, pd); picks one scan per case of a folder.")
@click.option("--fpr", type=click.Choice(["0.01", "0.05"]), default="0.01", show_default=True,
              help="The calibrated threshold, at 1% or 5% false-positive voxels on healthy scans: the lesion mask, "
                   "the overlay's outline and the start of its colour scale.")
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
    import sys
    from pathlib import Path

    from dal import Detector
    from dal.data.io import DataError, nifti_stem
    from dal.data.outputs import output_folder
    from dal.engine.infer import output_names
    from dal.engine.progress import progress_bar

    if contrast is not None:
        from dal.data.layouts import canonical_contrast

        try:
            contrast = canonical_contrast(contrast)
        except DataError as error:
            raise click.BadParameter(str(error), param_hint="--contrast") from None
    _check_device(device)
    detector = Detector.load(checkpoint, device=device, threads=threads, batch_size=batch_size,
                             register=register or None)
    if threshold is None:
        detector.threshold(float(fpr))

    jobs = _inputs(scans, masks, contrast)
    inputs = {p for scan, mask, _ in jobs for p in (scan, mask) if p is not None and Path(p).is_file()}
    if bids_derivatives:
        from dal.data.bids import DERIVATIVE_FOLDER

        if len(scans) != 1 or not Path(scans[0]).is_dir():
            raise click.BadParameter("give one BIDS dataset folder", param_hint="--bids-derivatives")
        if report:
            raise click.UsageError("--report goes without --bids-derivatives (a derivative dataset holds the maps "
                                   "and their sidecars)")
        if ctx.get_parameter_source("out") is click.core.ParameterSource.DEFAULT:
            out = str(Path(scans[0]) / DERIVATIVE_FOLDER)
    names: dict[str, Path] = {}
    failed = 0
    with output_folder(out) as folder:  # locked for the batch
        if bids_derivatives:
            _write_dataset_description(folder, detector, overwrite)
        bar = progress_bar(jobs, "dal infer", "scan", enabled=len(jobs) > 1)
        for scan, mask, problem in bar:
            name = nifti_stem(scan)
            if problem is None and name in names and names[name] != scan:
                problem = f"scan {scan}: its outputs would have the same names as those of {names[name]}; rename one"
            names.setdefault(name, scan)
            try:
                if problem is not None:
                    raise DataError(problem)
                if bids_derivatives:
                    from dal.data.bids import derivative_names, sidecar_names

                    relative, bids_names = derivative_names(scan, scans[0])
                    target = Path(out) / relative
                    with output_folder(target) as scan_folder:
                        scan_folder.check([*bids_names.values(), *sidecar_names(bids_names)], overwrite=overwrite,
                                          inputs=[*inputs, scan])
                else:
                    folder.check(output_names(name, not no_overlay, report).values(), overwrite=overwrite,
                                 inputs=[*inputs, scan])  # before the work, not after it
                result = detector.predict(scan, mask, fpr=float(fpr), threshold=threshold, contrast=contrast)
                if bids_derivatives:
                    written = _save_bids(result, scan, scans[0], target, relative, bids_names, inputs, overwrite)
                else:
                    written = result.save(out, overlay=not no_overlay, report=report, protected=inputs,
                                          overwrite=overwrite)
            except (DalError, ValueError) as error:
                failed += 1
                bar.write(f"error: {clip(str(error))}", file=sys.stderr)
                continue
            except OSError as error:
                failed += 1
                bar.write(f"error: scan {scan}: {os_error_line(error)}", file=sys.stderr)
                continue
            except Exception as error:  # a bug must not stop the batch; it is reported with the scan's name
                failed += 1
                bar.write(f"error: scan {scan}: failed unexpectedly ({type(error).__name__}: {clip(str(error), 300)})",
                          file=sys.stderr)
                continue
            _report(bar, scan, result, written, verbose)
    if failed:
        click.echo(f"{failed} of {len(jobs)} scan(s) failed", err=True)
        raise SystemExit(1)


def _write_dataset_description(folder, detector, overwrite: bool) -> None:
    """dataset_description.json of the derivative dataset: written unless the same one is there."""
    import json

    from dal.data.bids import dataset_description

    text = json.dumps(dataset_description(__version__, detector.checkpoint.path, detector.checkpoint.model_kind),
                      indent=1)
    path = folder.path / "dataset_description.json"
    if folder.owner(path.name) is not None and path.is_file() and path.read_text() == text:
        return
    folder.write("dataset_description", {path.name: lambda tmp: tmp.write_text(text)}, overwrite=overwrite)


def _save_bids(result, scan, root, target, relative, names, inputs, overwrite: bool):
    """Write one scan's BIDS derivatives (maps and sidecars) into ``target``."""
    from dal.data.bids import sidecars, source_uri

    metadata, others = sidecars(result, relative, names, source_uri(scan, root))
    return result.save(target, names=names, sidecars=others, metadata=metadata, protected=inputs, overwrite=overwrite)


def _check_device(device: str) -> None:
    from dal.engine.infer import resolve_device

    try:
        resolve_device(device)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--device") from None


def _report(bar, scan, result, written, verbose: bool) -> None:
    """The lines of one scan done: what was found, its warnings, and with --verbose its timings."""
    import sys

    line = (f"{scan}: {result.lesion_count} lesion(s), {result.lesion_volume_ml:.2f} ml, peak score "
            f"{result.peak_score:.3g} -> {written.get('overlay', written['json'])}")
    bar.write(line)
    for warning in result.warnings:
        bar.write(f"warning: {scan}: {warning}", file=sys.stderr)
    if verbose:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
        bar.write(f"  {stages}; total {sum(result.timings.values()):.2f} s")


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
    from pathlib import Path

    from dal import Detector
    from dal.engine.evaluate import evaluate_folder

    _check_device(device)
    detector = Detector.load(checkpoint, device=device, threads=threads, register=register or None)
    report = evaluate_folder(detector, data, out, contrast=contrast, overlays=not no_overlays, progress=True,
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
    click.echo(f"report: {Path(out) / 'report.html'}")
    if report["failures"]:
        raise SystemExit(1)
