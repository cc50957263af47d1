"""Evaluation of a checkpoint on a labelled data folder (``dal evaluate``), by the protocol of
docs/design.md ("Evaluation").

Every scan of every case with a lesion label (BraTS-like, BIDS with derivatives, a ``dal synth``
folder; :func:`~dal.data.find_cases`) goes through :meth:`Detector.predict`, and is scored **in
model space** (the checkpoint's grid, 2 mm by default, the resolution the field's benchmarks use
and the one the thresholds were calibrated in), over the brain mask, with the label brought there
by nearest-neighbour resampling; any non-zero label voxel is lesion.

Per volume: voxel-level AP, AUROC, best Dice (exact, over all thresholds), Dice at the
checkpoint's thresholds at 1% and 5% false positives after removing components smaller than
``scoring.min_component_voxels``, and lesion-wise detection at those thresholds (lesions touched,
recall, false-positive components). Means are over volumes with lesion only (volumes without
lesion have no AP: they count for false positives); pooled values treat all voxels of all volumes
as one set; lesion recall pools the lesions of all volumes. Means also per contrast and per
lesion type (the lesion type is known for ``dal synth`` folders).

Outputs in ``out``: ``metrics.csv`` (one row per volume), ``metrics.json`` (rows, means, pooled
values, groups, what entered each mean), ``report.html`` (the table, the precision-recall
curves, a 3D viewer (:mod:`dal.engine.viewer`) and one overlay per volume with its label
outlined, all at dal infer's threshold; self-contained).

The steps: :func:`collect` finds the labelled scans, :func:`score` runs the detector on each and
brings its label to model space, :func:`summarise` computes the metrics, and
:func:`write_reports` writes them (:func:`metrics_csv`, :func:`metrics_json`, :func:`report_html`).
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from dal.data.io import DataError, load_label
from dal.data.layouts import Case, find_cases
from dal.data.outputs import OutputError, OutputFolder, output_folder
from dal.engine.checkpoint import (
    DEFAULT_FPR,
    FPRS,
    CheckpointError,
    parse_threshold_key,
    threshold_for,
    threshold_key,
)
from dal.engine.infer import Detector
from dal.engine.progress import progress_bar
from dal.metrics import evaluate, ranked_counts

METRIC_COLUMNS = ["average_precision", "auroc", "best_dice", "dice_fpr_0.01", "dice_fpr_0.05",
                  "lesion_recall_fpr_0.01", "lesion_recall_fpr_0.05"]
COLUMNS = ["case", "contrast", "lesion_type", "lesion_voxels", *METRIC_COLUMNS, "lesions",
           "false_positive_lesions_fpr_0.01", "false_positive_lesions_fpr_0.05", "threshold_fpr_0.01",
           "threshold_fpr_0.05", "brain_flagged_fpr_0.01", "brain_flagged_fpr_0.05", "warnings"]
PR_POINTS = 400  # points kept per precision-recall curve in the report
# The report's table: fewer columns than metrics.csv (lesion counts, warnings stay in the CSV) and
# headers in words; the CSV's column names are in each header's tooltip.
TABLE_COLUMNS = ["case", "contrast", "lesion_type", "lesion_voxels", *METRIC_COLUMNS,
                 "false_positive_lesions_fpr_0.01", "false_positive_lesions_fpr_0.05"]
HEADERS = {"case": "case", "contrast": "contrast", "lesion_type": "lesion", "lesion_voxels": "lesion voxels",
           "lesion_volumes": "volumes with lesion", "group": "group",
           "average_precision": "AP", "auroc": "AUROC", "best_dice": "best Dice", "dice_fpr_0.01": "Dice 1% FPR",
           "dice_fpr_0.05": "Dice 5% FPR", "lesion_recall_fpr_0.01": "lesions found 1% FPR",
           "lesion_recall_fpr_0.05": "lesions found 5% FPR", "false_positive_lesions_fpr_0.01": "false lesions 1% FPR",
           "false_positive_lesions_fpr_0.05": "false lesions 5% FPR"}
REPORTS = ("metrics.csv", "metrics.json", "report.html")
POOLED = "pooled (all volumes)"  # the name of the curve of all voxels of all volumes together


def evaluate_folder(detector: Detector, data: str | os.PathLike, out: str | os.PathLike | None = None, *,
                    contrast: str | None = None, overlays: bool = True, progress: bool = False,
                    overwrite: bool = False) -> dict:
    """Evaluate ``detector`` on every labelled scan under ``data``; write the reports into ``out``.

    Args:
        detector: the model.
        data: a labelled data folder.
        out: where ``metrics.csv``, ``metrics.json`` and ``report.html`` go, together
            (:mod:`dal.data.outputs`; None: write nothing).
        contrast: evaluate only scans of this contrast (default: every scan of every case).
        overlays: draw one overlay per volume in the report.
        progress: a progress bar over volumes.
        overwrite: replace the reports of an earlier evaluation in ``out``.

    Returns:
        The content of ``metrics.json``: "rows", "summary", "groups", "failures", "skipped".

    Raises:
        DataError: no usable case in ``data``, or no case with a lesion label.
        OutputError: ``out`` cannot take the reports (not a folder, files dal did not write, or
            reports already there without ``overwrite``).
    """
    if out is None:
        return _evaluate(detector, Path(data), None, contrast, overlays, progress, overwrite)
    with output_folder(out) as folder:
        folder.check(REPORTS, overwrite=overwrite)  # before the work, not after it
        return _evaluate(detector, Path(data), folder, contrast, overlays, progress, overwrite)


def _evaluate(detector: Detector, root: Path, folder: OutputFolder | None, contrast: str | None, overlays: bool,
              progress: bool, overwrite: bool) -> dict:
    """Collect, score, summarise, write: a function each."""
    jobs, skipped = collect(root, contrast)
    thresholds, notes = _calibrated_thresholds(detector)
    picture = PictureThreshold.of(thresholds)
    scored = score(detector, jobs, picture, draw=overlays and folder is not None, progress=progress)
    if not scored.rows:
        raise DataError(f"data folder {root}: no scan could be evaluated: " + " | ".join(scored.failures))
    space = f"model space of the checkpoint ({detector.preprocessor.config.spacing:g} mm), inside the brain mask"
    checkpoint = None if detector.checkpoint.path is None else str(detector.checkpoint.path)
    report = _plain({**summarise(scored, thresholds, detector.min_component_voxels, space, checkpoint),
                     "failures": scored.failures, "skipped": skipped, "notes": notes})
    if folder is not None:
        write_reports(folder, root, report, scored, picture, overwrite)
    return report


# ------------------------------------------------------------------------------------ collect: scans, thresholds


class Job(NamedTuple):
    """One scan to evaluate: a labelled case and one of its contrasts ("scan" where the layout names none)."""

    case: Case
    contrast: str
    lesion_type: str | None

    @property
    def name(self) -> str:
        return f"{self.case.id}_{self.contrast}"


def collect(root: Path, contrast: str | None = None) -> tuple[list[Job], list[str]]:
    """(jobs, skipped): every scan (or every scan of ``contrast``) of every case under ``root``
    with a lesion label, and a line for each case left out for having none."""
    cases = find_cases(root, contrast)
    lesion_types = _lesion_types(root)
    labelled = [case for case in cases if case.label is not None]
    skipped = [f"case {case.id}: no lesion label; left out" for case in cases if case.label is None]
    if not labelled:
        raise DataError(f"data folder {root}: no case has a lesion label (a *_seg file, a BIDS derivative label)")
    jobs = [Job(case, key, lesion_types.get(case.id)) for case in labelled
            for key in ([contrast] if contrast else sorted(case.images))]
    return jobs, skipped


def _lesion_types(root: Path) -> dict[str, str]:
    """Case id -> lesion type, from a ``dal synth`` manifest (other layouts do not say)."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        return {case["id"]: case["lesion"] for case in manifest.get("cases", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _calibrated_thresholds(detector: Detector) -> tuple[dict[str, float], list[str]]:
    """The checkpoint's thresholds by key ("fpr_0.01", "fpr_0.01/t1", ...), and a note for each
    false-positive rate it has none at."""
    held = detector.checkpoint.thresholds
    thresholds: dict[str, float] = {}
    notes = []
    for fpr in FPRS:
        try:
            detector.threshold(fpr)
        except CheckpointError as error:
            notes.append(str(error))
            continue
        for key, value in held.items():
            parsed = parse_threshold_key(key)
            if parsed is not None and parsed[0] == fpr:
                thresholds[key] = float(value)
    return thresholds, notes


class PictureThreshold(NamedTuple):
    """The pictures' threshold: dal infer's default (1% false positives; each contrast's own where
    the checkpoint has one), so that a volume looks here as dal infer draws it; another calibrated
    rate, or 0.5 when the checkpoint has none. ``value`` is the pooled one, ``by_contrast`` the others."""

    key: str | None
    value: float
    by_contrast: dict[str, float]

    @classmethod
    def of(cls, thresholds: dict[str, float]) -> "PictureThreshold":
        parsed = {key: parse_threshold_key(key) for key in thresholds}
        pooled = [key for key, (_, contrast) in parsed.items() if contrast is None]
        key = threshold_key(DEFAULT_FPR) if threshold_key(DEFAULT_FPR) in pooled else next(iter(pooled), None)
        fpr = parsed[key][0] if key else None
        by_contrast = {contrast: thresholds[k] for k, (rate, contrast) in parsed.items() if contrast and rate == fpr}
        return cls(key, thresholds.get(key, 0.5), by_contrast)

    @property
    def fpr(self) -> float | None:
        return parse_threshold_key(self.key)[0] if self.key else None


# ------------------------------------------------------------------------------------ score


@dataclass
class Scored:
    """The volumes scored, in order: each one's name, row (case, contrast, lesion type, lesion
    voxels, warnings; :func:`summarise` adds the metrics), and score, label and brain mask in
    model space; the overlays and 3D views of the report; the scans that failed."""

    names: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    scores: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    masks: list[torch.Tensor] = field(default_factory=list)
    pictures: list[tuple[str, str]] = field(default_factory=list)
    views: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, job: Job, label: np.ndarray, model_space: dict, warnings: list[str]) -> None:
        """One volume: its label and the detector's maps ("score", "mask"), in model space."""
        mask = model_space["mask"]
        self.names.append(job.name)
        self.rows.append({"case": job.case.id, "contrast": job.contrast, "lesion_type": job.lesion_type,
                          "lesion_voxels": int((label & mask).sum()), "warnings": "; ".join(warnings)})
        self.scores.append(torch.from_numpy(model_space["score"]))
        self.labels.append(torch.from_numpy(label))
        self.masks.append(torch.from_numpy(mask))


def score(detector: Detector, jobs: list[Job], picture: PictureThreshold, draw: bool = False,
          progress: bool = False) -> Scored:
    """Every job through :meth:`Detector.predict`, its label (:func:`~dal.data.io.load_label`, on
    the scan's grid) brought to model space by nearest neighbour; a scan that cannot be read or
    scored is a failure, not the end. ``draw``: an overlay and a 3D view of each volume."""
    from dal.engine.report import overlay_figure, png_base64
    from dal.engine.viewer import scan_volumes

    scored = Scored()
    at = {"threshold": picture.value} if picture.fpr is None else {"fpr": picture.fpr}
    plain = progress and not sys.stderr.isatty()  # a log gets one line a volume instead of a bar
    for number, job in enumerate(progress_bar(jobs, "dal evaluate", "scan", enabled=progress), 1):
        if plain:
            print(f"dal evaluate: volume {number} of {len(jobs)}: {job.name}", file=sys.stderr, flush=True)
        try:
            scan_path = job.case.image(job.contrast)
            result = detector.predict(scan_path, job.case.mask, contrast=job.contrast if job.contrast != "scan" else None,
                                      name=job.name, **at)
            label = load_label(job.case.label, result.scan)
        except (DataError, OutputError) as error:
            scored.failures.append(str(error))
            continue
        label_model = detector.preprocessor.to_model(label.astype(np.uint8), result.model_space["state"], "nearest") > 0
        scored.add(job, label_model, result.model_space, result.warnings)
        if draw:
            scored.pictures.append((job.name, png_base64(overlay_figure(result, title=job.name, label=label),
                                                         facecolor="black")))
            scored.views.append(scan_volumes(result, job.name, label=label_model))
    return scored


# ------------------------------------------------------------------------------------ summarise


def summarise(scored: Scored, thresholds: dict[str, float], min_component_voxels: int, space: str,
              checkpoint: str | None) -> dict:
    """{"summary", "groups", "rows"}: each volume's metrics added to its row; their means over the
    volumes with lesion, the pooled values and, at each threshold, Dice and lesion detection
    (``min_component_voxels``: smaller components are left out); means per contrast and lesion type.
    ``space`` and ``checkpoint`` say where the numbers come from."""
    overall = evaluate(scored.scores, scored.labels, scored.masks)
    for row, metrics in zip(scored.rows, overall.per_volume):
        row.update(average_precision=metrics.average_precision, auroc=metrics.auroc, best_dice=metrics.best_dice)
    at_threshold = {threshold_key(fpr): _at_threshold(scored, fpr, thresholds, min_component_voxels)
                    for fpr in FPRS if threshold_key(fpr) in thresholds}
    summary = {
        "volumes": len(scored.rows), "lesion_volumes": overall.lesion_volumes,
        "volumes_without_lesion": overall.healthy_volumes,
        "note": "means are over volumes with lesion only (volumes without lesion have no AP; they count for false "
                "positives); pooled values treat all brain voxels of all volumes as one set",
        "space": space,
        "mean_average_precision": overall.mean_average_precision, "mean_auroc": overall.mean_auroc,
        "mean_best_dice": overall.mean_best_dice,
        "pooled_average_precision": overall.pooled.average_precision, "pooled_auroc": overall.pooled.auroc,
        "pooled_best_dice": overall.pooled.best_dice,
        "thresholds": thresholds, "min_component_voxels": min_component_voxels, "checkpoint": checkpoint,
    }
    for key, result in at_threshold.items():
        summary[f"mean_dice_{key}"] = result.mean_dice_at_threshold
        summary[f"lesion_recall_{key}"] = result.lesion_recall
        summary[f"false_positive_lesions_per_volume_{key}"] = result.false_positives_per_volume
        summary.update(_healthy_flagged(scored.rows, key))
    return {"summary": summary, "groups": _group_means(scored.rows), "rows": scored.rows}


def _at_threshold(scored: Scored, fpr: float, thresholds: dict[str, float], min_size: int):
    """The metrics at the thresholds of ``fpr`` (each volume its contrast's, as dal infer takes it);
    each row gets its threshold, Dice and lesion recall (none without lesion), its lesions and its
    false-positive components."""
    key = threshold_key(fpr)
    per_volume = [threshold_for(thresholds, fpr, row["contrast"]) for row in scored.rows]  # "scan": the pooled one
    result = evaluate(scored.scores, scored.labels, scored.masks, threshold=[value for value, _ in per_volume],
                      min_size=min_size)
    for row, (value, _), score, mask, dice, detection in zip(scored.rows, per_volume, scored.scores, scored.masks,
                                                            result.dice_at_threshold, result.detection):
        has_lesion = row["lesion_voxels"] > 0
        row[f"threshold_{key}"] = value
        row[f"brain_flagged_{key}"] = float((score[mask] >= value).float().mean()) if mask.any() else None
        row[f"dice_{key}"] = dice if has_lesion else None
        row[f"lesion_recall_{key}"] = detection.recall if has_lesion else None
        row["lesions"] = detection.lesions
        row[f"false_positive_lesions_{key}"] = detection.false_positives
    return result


def _healthy_flagged(rows: list[dict], key: str) -> dict[str, float | None]:
    """The mean fraction of the brain flagged at the thresholds of ``key`` in the volumes without
    lesion, in all ("healthy_brain_flagged_<key>") and per contrast ("healthy_<contrast>_brain_
    flagged_<key>"): how well the calibrated false-positive rate holds on scans it was not made on."""
    column = f"brain_flagged_{key}"
    healthy = [row for row in rows if row["lesion_voxels"] == 0]
    flagged = {f"healthy_brain_flagged_{key}": _mean([row[column] for row in healthy])}
    for contrast in sorted({row["contrast"] for row in healthy}):
        flagged[f"healthy_{contrast}_brain_flagged_{key}"] = _mean([row[column] for row in healthy
                                                                    if row["contrast"] == contrast])
    return flagged


def _group_means(rows: list[dict]) -> dict[str, dict]:
    """"contrast=<c>" and "lesion_type=<t>": the number of volumes with lesion in the group and
    the means of their metrics."""
    groups = {}
    for field_name in ("contrast", "lesion_type"):
        for value in sorted({row[field_name] for row in rows if row[field_name] is not None}):
            members = [row for row in rows if row[field_name] == value and row["lesion_voxels"] > 0]
            groups[f"{field_name}={value}"] = {"lesion_volumes": len(members),
                                               **{c: _mean([row.get(c) for row in members]) for c in METRIC_COLUMNS}}
    return groups


def _mean(values) -> float | None:
    defined = [v for v in values if v is not None and not math.isnan(v)]
    return sum(defined) / len(defined) if defined else None


def _plain(value):
    """JSON-safe: NaN and infinities become None, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------------------------ write


def write_reports(folder: OutputFolder, root: Path, report: dict, scored: Scored, picture: PictureThreshold,
                  overwrite: bool = False) -> None:
    """:data:`REPORTS` into ``folder``, all three or none (:meth:`OutputFolder.write`)."""
    texts = dict(zip(REPORTS, (metrics_csv(report["rows"]), metrics_json(report),
                               report_html(root, report, scored, picture))))
    folder.write("evaluation", {name: (lambda tmp, text=text: tmp.write_text(text)) for name, text in texts.items()},
                 overwrite=overwrite)


def metrics_csv(rows: list[dict]) -> str:
    """``metrics.csv``: a row per volume in :data:`COLUMNS`; no value is an empty cell."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in COLUMNS})
    return table.getvalue()


def metrics_json(report: dict) -> str:
    return json.dumps(report, indent=1, allow_nan=False)


def report_html(root: Path, report: dict, scored: Scored, picture: PictureThreshold) -> str:
    """``report.html``: the summary, the table, the group means, the precision-recall curves, the
    notes and, drawn, the 3D viewer and the overlays."""
    from dal.engine.report import html_image, html_report, html_table, png_base64, precision_recall_figure
    from dal.engine.viewer import viewer_section

    summary = report["summary"]
    summary_rows = [{"metric": k, "value": v} for k, v in summary.items() if isinstance(v, (int, float)) or v is None]
    group_rows = [{"group": g, **values} for g, values in report["groups"].items()]
    messages = [*report["notes"], *report["failures"], *report["skipped"]]
    sections = [
        ("Summary", "<p class='note'>" + summary["note"] + "; " + summary["space"] + ".</p>"
         + html_table(summary_rows, ["metric", "value"])),
        ("Per volume", "<p class='note'>FPR: the checkpoint's threshold calibrated at 1% or 5% false-positive "
                       "voxels on healthy scans. Every column, by its name in metrics.csv, is in its header's "
                       "tooltip.</p>" + html_table(report["rows"], TABLE_COLUMNS, HEADERS)),
        ("Per contrast and lesion type (means over volumes with lesion)",
         html_table(group_rows, ["group", "lesion_volumes", *METRIC_COLUMNS], HEADERS)),
        ("Precision-recall curves", html_image(png_base64(precision_recall_figure(_curves(scored), POOLED)),
                                               "voxel level, inside the brain mask")),
    ]
    if messages:
        sections.append(("Notes", "".join(f"<p class='warn'>{html.escape(m)}</p>" for m in messages)))
    if scored.pictures:
        sections.append(("3D viewer", viewer_section(scored.views)))
        sections.append(("Overlays", f"<p class='note'>{html.escape(_overlay_story(picture))}</p>"
                         + "".join(html_image(data, name) for name, data in scored.pictures)))
    return html_report(f"dal evaluate: {root}", sections)


def _curves(scored: Scored) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The precision-recall curve of each volume with lesion, and the pooled one (:data:`POOLED`)."""
    curves = {name: _pr_curve(score, label, mask) for name, row, score, label, mask
              in zip(scored.names, scored.rows, scored.scores, scored.labels, scored.masks) if row["lesion_voxels"] > 0}
    curves[POOLED] = _pr_curve(torch.cat([s[m] for s, m in zip(scored.scores, scored.masks)]),
                               torch.cat([y[m] for y, m in zip(scored.labels, scored.masks)]), None)
    return curves


def _pr_curve(score: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    counts = ranked_counts(score, label, mask)
    if counts.positives == 0:
        return np.zeros(0), np.zeros(0)
    recall = (counts.tp.double() / counts.positives).numpy()[::-1]
    precision = (counts.tp.double() / (counts.tp + counts.fp).double()).numpy()[::-1]
    keep = np.unique(np.linspace(0, len(recall) - 1, min(PR_POINTS, len(recall))).astype(int))
    return np.concatenate([[0.0], recall[keep]]), np.concatenate([[precision[keep][0]], precision[keep]])


def _overlay_story(picture: PictureThreshold) -> str:
    """What the overlays show, in words: one threshold for the mask and the colour scale."""
    from dal.engine.report import COLOUR_SPAN, colour_range

    rate = None if picture.fpr is None else f"{picture.fpr:.0%}"
    how = f"calibrated at {rate} false-positive voxels on healthy scans" if rate else "none calibrated: 0.5"
    if picture.by_contrast:
        values = ", ".join(f"{contrast} {value:.3g}" for contrast, value in sorted(picture.by_contrast.items()))
        which = (f"The threshold of each scan's contrast ({values}; {picture.value:.3g} for another; {how} on "
                 "the healthy scans of that contrast, dal infer's default)")
        scale = f"from it to {COLOUR_SPAN:g} times it in every panel, the same for every volume of a contrast"
    else:
        which = f"One threshold, {picture.value:.3g} ({how}, dal infer's default),"
        scale = f"from it to {colour_range(picture.value)[1]:.3g} in every panel and every volume, so that they compare"
    return (f"{which} makes the lesion mask (cyan outline) and starts the colour scale, which runs "
            f"{scale}; the label (ground truth) is outlined in green. A healthy "
            f"scan is expected to have about {rate or 'some'} of its brain "
            "coloured: that is what the threshold was calibrated to. Lesions are counted as dal infer counts "
            "them (components closer than the scoring's median window are one lesion); the table's "
            "false-positive lesions count components, as the evaluation protocol does.")
