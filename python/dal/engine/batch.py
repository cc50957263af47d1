"""``dal infer`` on many scans: files and folders expanded to scans, each found and written in
turn, a failure reported with its scan while the others go on (:meth:`dal.Detector.run`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from dal._version import __version__
from dal.data.io import nifti_stem
from dal.data.layouts import canonical_contrast, find_cases
from dal.data.outputs import output_folder
from dal.engine.progress import progress_bar
from dal.errors import ArgumentError, DataError

DEFAULT_OUT = "dal-output"


@dataclass
class ScanJob:
    """One scan to run: its brain mask where there is one, or the reason it cannot run."""

    scan: Path
    mask: Path | None = None
    problem: str | None = None


@dataclass
class ScanOutcome:
    """What came of one scan: its result and the files written, or the error it met (a
    :class:`dal.DalError` or OSError about an input or output; anything else is a bug)."""

    scan: Path
    result: "dal.engine.infer.DetectionResult | None" = None
    written: dict[str, Path] = field(default_factory=dict)
    error: BaseException | None = None


def scan_jobs(paths: Sequence[str | os.PathLike], masks: Sequence[str | os.PathLike] = (),
              contrast: str | None = None) -> list[ScanJob]:
    """Files as given (with ``masks[i]`` for ``paths[i]`` when masks are given); folders through
    :func:`~dal.data.layouts.find_cases`: every scan of every case, or those of ``contrast``, each
    with its case's brain mask. A folder that cannot be read becomes one job with its problem."""
    if masks and len(masks) != len(paths):
        raise ArgumentError(f"masks: give one --mask per scan ({len(paths)} scan(s), {len(masks)} mask(s))")
    jobs = []
    for index, path in enumerate(paths):
        mask = Path(masks[index]) if masks else None
        if not Path(path).is_dir():
            jobs.append(ScanJob(Path(path), mask))
        elif mask is not None:
            jobs.append(ScanJob(Path(path), problem=f"{path}: a folder takes the masks of its cases, not --mask"))
        else:
            try:
                for case in find_cases(path, contrast):
                    keys = [canonical_contrast(contrast)] if contrast else sorted(case.images)
                    jobs.extend(ScanJob(case.images[key], case.mask) for key in keys)
            except DataError as error:
                jobs.append(ScanJob(Path(path), problem=str(error)))
    return jobs


def run_batch(detector, paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
              masks: Sequence[str | os.PathLike] = (), contrast: str | None = None, fpr: float = 0.01,
              threshold: float | None = None, overlay: bool = True, report: bool = False,
              bids_derivatives: bool = False, overwrite: bool = False,
              progress: bool = False) -> Iterator[ScanOutcome]:
    """Check the arguments now, then yield one :class:`ScanOutcome` a scan as each is done.

    ``out`` defaults to ``dal-output``, or with ``bids_derivatives`` to the dataset's
    ``derivatives/dal``. The output folder is locked for the batch; files in it that dal did not
    write, and the inputs, are never replaced."""
    if contrast is not None:
        try:
            contrast = canonical_contrast(contrast)
        except DataError as error:
            raise ArgumentError(f"--contrast: {error}") from None
    if threshold is None:
        detector.threshold(fpr)  # a checkpoint without it fails now, not at every scan
    if bids_derivatives:
        from dal.data.bids import DERIVATIVE_FOLDER

        if len(paths) != 1 or not Path(paths[0]).is_dir():
            raise ArgumentError("--bids-derivatives: give one BIDS dataset folder")
        if report:
            raise ArgumentError("--report goes without --bids-derivatives (a derivative dataset holds the maps and "
                                "their sidecars)")
        out = out if out is not None else Path(paths[0]) / DERIVATIVE_FOLDER
    out = Path(out if out is not None else DEFAULT_OUT)
    jobs = scan_jobs(paths, masks, contrast)
    return _run(detector, jobs, out, paths[0] if bids_derivatives else None, contrast, fpr, threshold, overlay,
                report, overwrite, progress)


def _run(detector, jobs, out: Path, bids_root, contrast, fpr, threshold, overlay, report, overwrite,
         progress) -> Iterator[ScanOutcome]:
    inputs = {p for job in jobs for p in (job.scan, job.mask) if p is not None and Path(p).is_file()}
    names: dict[str, Path] = {}
    with output_folder(out) as folder:  # locked for the batch
        if bids_root is not None:
            _write_dataset_description(folder, detector, overwrite)
        for job in progress_bar(jobs, "dal infer", "scan", enabled=progress and len(jobs) > 1):
            name = nifti_stem(job.scan)
            if job.problem is None and name in names and names[name] != job.scan:
                job.problem = f"scan {job.scan}: its outputs would have the same names as those of {names[name]}; rename one"
            names.setdefault(name, job.scan)
            outcome = ScanOutcome(job.scan)
            try:
                if job.problem is not None:
                    raise DataError(job.problem)
                outcome.result, outcome.written = _one(detector, job, name, folder, out, bids_root, contrast, fpr,
                                                       threshold, overlay, report, overwrite, inputs)
            except Exception as error:  # reported with its scan; the batch goes on
                outcome.error = error
            yield outcome


def _one(detector, job: ScanJob, name: str, folder, out: Path, bids_root, contrast, fpr, threshold, overlay, report,
         overwrite, inputs):
    """Find lesions in one scan and write its outputs; the names are checked before the work."""
    from dal.engine.infer import output_names

    protected = [*inputs, job.scan]
    if bids_root is not None:
        from dal.data.bids import derivative_names, sidecar_names, sidecars, source_uri

        relative, bids_names = derivative_names(job.scan, bids_root)
        target = out / relative
        with output_folder(target) as scan_folder:
            scan_folder.check([*bids_names.values(), *sidecar_names(bids_names)], overwrite=overwrite,
                              inputs=protected)
    else:
        folder.check(output_names(name, overlay, report).values(), overwrite=overwrite, inputs=protected)
    result = detector.predict(job.scan, job.mask, fpr=fpr, threshold=threshold, contrast=contrast)
    if bids_root is None:
        return result, result.save(out, overlay=overlay, report=report, protected=inputs, overwrite=overwrite)
    metadata, others = sidecars(result, relative, bids_names, source_uri(job.scan, bids_root))
    return result, result.save(target, names=bids_names, sidecars=others, metadata=metadata, protected=inputs,
                               overwrite=overwrite)


def _write_dataset_description(folder, detector, overwrite: bool) -> None:
    """dataset_description.json of the derivative dataset: written unless the same one is there."""
    from dal.data.bids import dataset_description

    text = json.dumps(dataset_description(__version__, detector.checkpoint.path, detector.checkpoint.model_kind),
                      indent=1)
    path = folder.path / "dataset_description.json"
    if folder.owner(path.name) is not None and path.is_file() and path.read_text() == text:
        return
    folder.write("dataset_description", {path.name: lambda tmp: tmp.write_text(text)}, overwrite=overwrite)
