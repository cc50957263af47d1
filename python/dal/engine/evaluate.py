"""Evaluation of a checkpoint on a labelled data folder (``dal evaluate``), by the protocol of
DESIGN.md ("Evaluation protocol").

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
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from dal.data.io import DataError, load_label
from dal.data.layouts import find_cases
from dal.data.outputs import OutputError, OutputFolder, output_folder
from dal.engine.checkpoint import DEFAULT_FPR, FPRS, CheckpointError, threshold_key
from dal.engine.infer import Detector
from dal.engine.progress import progress_bar
from dal.metrics import evaluate, ranked_counts

METRIC_COLUMNS = ["average_precision", "auroc", "best_dice", "dice_fpr_0.01", "dice_fpr_0.05",
                  "lesion_recall_fpr_0.01", "lesion_recall_fpr_0.05"]
COLUMNS = ["case", "contrast", "lesion_type", "lesion_voxels", *METRIC_COLUMNS, "lesions",
           "false_positive_lesions_fpr_0.01", "false_positive_lesions_fpr_0.05", "warnings"]
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


def _lesion_types(root: Path) -> dict[str, str]:
    """Case id -> lesion type, from a ``dal synth`` manifest (other layouts do not say)."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        return {case["id"]: case["lesion"] for case in manifest.get("cases", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _mean(values) -> float | None:
    defined = [v for v in values if v is not None and not math.isnan(v)]
    return sum(defined) / len(defined) if defined else None


def _pr_curve(score: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    counts = ranked_counts(score, label, mask)
    if counts.positives == 0:
        return np.zeros(0), np.zeros(0)
    recall = (counts.tp.double() / counts.positives).numpy()[::-1]
    precision = (counts.tp.double() / (counts.tp + counts.fp).double()).numpy()[::-1]
    keep = np.unique(np.linspace(0, len(recall) - 1, min(PR_POINTS, len(recall))).astype(int))
    return np.concatenate([[0.0], recall[keep]]), np.concatenate([[precision[keep][0]], precision[keep]])


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
    from dal.engine.report import colour_range, html_image, html_report, html_table, overlay_figure, png_base64, \
        precision_recall_figure
    from dal.engine.viewer import scan_volumes, viewer_section

    cases = find_cases(root, contrast)
    lesion_types = _lesion_types(root)
    labelled = [case for case in cases if case.label is not None]
    skipped = [f"case {case.id}: no lesion label; left out" for case in cases if case.label is None]
    if not labelled:
        raise DataError(f"data folder {root}: no case has a lesion label (a *_seg file, a BIDS derivative label)")
    jobs = [(case, key) for case in labelled
            for key in ([contrast] if contrast else sorted(case.images))]

    thresholds: dict[str, float] = {}
    notes = []
    for fpr in FPRS:
        try:
            thresholds[threshold_key(fpr)] = detector.threshold(fpr)
        except CheckpointError as error:
            notes.append(str(error))
    # The pictures' one threshold: dal infer's default (1% false positives), so that a volume looks
    # here as dal infer draws it; 0.5 when the checkpoint has none calibrated.
    overlay_key = threshold_key(DEFAULT_FPR) if threshold_key(DEFAULT_FPR) in thresholds else next(iter(thresholds), None)
    overlay_threshold = thresholds.get(overlay_key, 0.5)

    scores, labels, masks, rows, failures, pictures, curves, viewed = [], [], [], [], [], [], {}, []
    plain = progress and not sys.stderr.isatty()  # a log gets one line a volume instead of a bar
    for number, (case, key) in enumerate(progress_bar(jobs, "dal evaluate", "scan", enabled=progress), 1):
        name = f"{case.id}_{key}"
        if plain:
            print(f"dal evaluate: volume {number} of {len(jobs)}: {name}", file=sys.stderr, flush=True)
        try:
            scan_path = case.image(key)
            at = {"fpr": float(overlay_key[4:])} if overlay_key else {"threshold": overlay_threshold}
            result = detector.predict(scan_path, case.mask, contrast=key if key != "scan" else None, name=name, **at)
            label = load_label(case.label, result.scan)
        except (DataError, OutputError) as error:
            failures.append(str(error))
            continue
        state = result.model_space["state"]
        label_model = detector.preprocessor.to_model(label.astype(np.uint8), state, "nearest") > 0
        scores.append(torch.from_numpy(result.model_space["score"]))
        labels.append(torch.from_numpy(label_model))
        masks.append(torch.from_numpy(result.model_space["mask"]))
        rows.append({"case": case.id, "contrast": key, "lesion_type": lesion_types.get(case.id),
                     "lesion_voxels": int((label_model & result.model_space["mask"]).sum()),
                     "warnings": "; ".join(result.warnings)})
        if int(rows[-1]["lesion_voxels"]) > 0:
            curves[name] = _pr_curve(scores[-1], labels[-1], masks[-1])
        if overlays and folder is not None:
            pictures.append((name, png_base64(overlay_figure(result, title=name, label=label), facecolor="black")))
            viewed.append(scan_volumes(result, name, label=label_model))
    if not rows:
        raise DataError(f"data folder {root}: no scan could be evaluated: " + " | ".join(failures))

    overall = evaluate(scores, labels, masks)
    for row, metrics in zip(rows, overall.per_volume):
        row.update(average_precision=metrics.average_precision, auroc=metrics.auroc, best_dice=metrics.best_dice)
    at_threshold = {}
    for key_, threshold in thresholds.items():
        result = evaluate(scores, labels, masks, threshold=threshold, min_size=detector.min_component_voxels)
        at_threshold[key_] = result
        for row, dice, detection in zip(rows, result.dice_at_threshold, result.detection):
            has_lesion = row["lesion_voxels"] > 0
            row[f"dice_{key_}"] = dice if has_lesion else None
            row[f"lesion_recall_{key_}"] = detection.recall if has_lesion else None
            row["lesions"] = detection.lesions
            row[f"false_positive_lesions_{key_}"] = detection.false_positives

    summary = {
        "volumes": len(rows), "lesion_volumes": overall.lesion_volumes,
        "volumes_without_lesion": overall.healthy_volumes,
        "note": "means are over volumes with lesion only (volumes without lesion have no AP; they count for false "
                "positives); pooled values treat all brain voxels of all volumes as one set",
        "space": f"model space of the checkpoint ({detector.preprocessor.config.spacing:g} mm), inside the brain mask",
        "mean_average_precision": overall.mean_average_precision, "mean_auroc": overall.mean_auroc,
        "mean_best_dice": overall.mean_best_dice,
        "pooled_average_precision": overall.pooled.average_precision, "pooled_auroc": overall.pooled.auroc,
        "pooled_best_dice": overall.pooled.best_dice,
        "thresholds": thresholds, "min_component_voxels": detector.min_component_voxels,
        "checkpoint": None if detector.checkpoint.path is None else str(detector.checkpoint.path),
    }
    for key_, result in at_threshold.items():
        summary[f"mean_dice_{key_}"] = result.mean_dice_at_threshold
        summary[f"lesion_recall_{key_}"] = result.lesion_recall
        summary[f"false_positive_lesions_per_volume_{key_}"] = result.false_positives_per_volume
    groups = {}
    for field_name in ("contrast", "lesion_type"):
        for value in sorted({row[field_name] for row in rows if row[field_name] is not None}):
            members = [row for row in rows if row[field_name] == value and row["lesion_voxels"] > 0]
            groups[f"{field_name}={value}"] = {"lesion_volumes": len(members),
                                               **{c: _mean([row.get(c) for row in members]) for c in METRIC_COLUMNS}}
    report = _plain({"summary": summary, "groups": groups, "rows": rows, "failures": failures, "skipped": skipped,
                     "notes": notes})
    if folder is None:
        return report

    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in COLUMNS})

    curves["pooled (all volumes)"] = _pr_curve(torch.cat([s[m] for s, m in zip(scores, masks)]),
                                               torch.cat([y[m] for y, m in zip(labels, masks)]), None)
    summary_rows = [{"metric": k, "value": v} for k, v in report["summary"].items()
                    if isinstance(v, (int, float)) or v is None]
    group_rows = [{"group": g, **values} for g, values in report["groups"].items()]
    messages = [*notes, *failures, *skipped]
    sections = [
        ("Summary", "<p class='note'>" + summary["note"] + "; " + summary["space"] + ".</p>"
         + html_table(summary_rows, ["metric", "value"])),
        ("Per volume", "<p class='note'>FPR: the checkpoint's threshold calibrated at 1% or 5% false-positive "
                       "voxels on healthy scans. Every column, by its name in metrics.csv, is in its header's "
                       "tooltip.</p>" + html_table(report["rows"], TABLE_COLUMNS, HEADERS)),
        ("Per contrast and lesion type (means over volumes with lesion)",
         html_table(group_rows, ["group", "lesion_volumes", *METRIC_COLUMNS], HEADERS)),
        ("Precision-recall curves", html_image(png_base64(precision_recall_figure(curves, "pooled (all volumes)")),
                                               "voxel level, inside the brain mask")),
    ]
    if messages:
        sections.append(("Notes", "".join(f"<p class='warn'>{html.escape(m)}</p>" for m in messages)))
    if pictures:
        high = colour_range(overlay_threshold)[1]
        rate = f"{float(overlay_key[4:]):.0%}" if overlay_key else None
        how = f"calibrated at {rate} false-positive voxels on healthy scans" if rate else "none calibrated: 0.5"
        story = (f"One threshold, {overlay_threshold:.3g} ({how}, dal infer's default), makes the lesion mask "
                 f"(cyan outline) and starts the colour scale, which runs from it to {high:.3g} in every panel and "
                 "every volume, so that they compare; the label (ground truth) is outlined in green. A healthy "
                 f"scan is expected to have about {rate or 'some'} of its brain "
                 "coloured: that is what the threshold was calibrated to. Lesions are counted as dal infer counts "
                 "them (components closer than the scoring's median window are one lesion); the table's "
                 "false-positive lesions count components, as the evaluation protocol does.")
        sections.append(("3D viewer", viewer_section(viewed)))
        sections.append(("Overlays", f"<p class='note'>{html.escape(story)}</p>"
                         + "".join(html_image(data, name) for name, data in pictures)))
    texts = dict(zip(REPORTS, (table.getvalue(), json.dumps(report, indent=1, allow_nan=False),
                               html_report(f"dal evaluate: {root}", sections))))
    folder.write("evaluation", {name: (lambda tmp, text=text: tmp.write_text(text)) for name, text in texts.items()},
                 overwrite=overwrite)
    return report
