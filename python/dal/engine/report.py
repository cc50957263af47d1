"""Pictures and reports: the overlay of an anomaly map on its scan (three views), the
precision-recall curves of an evaluation, and a self-contained HTML report (every picture
embedded as base64 PNG: it opens in a browser from the file, with no server).

One threshold story in every picture: the lesion mask, its outline and the start of the colour
scale are the same threshold T (the calibrated 1% false-positive one unless another is chosen);
the colours run from T to ``COLOUR_SPAN * T`` in every panel of every scan of a checkpoint, so
panels can be compared; the label (ground truth), when there is one, is outlined in another
colour; every colour and line is in the legend.

Figures are drawn on plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas,
never through pyplot: nothing changes the backend of a notebook that imports dal.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

OVERLAY_SIZE_IN = (11, 4.4)
COLOUR_SPAN = 4.0  # the colour scale runs from the threshold T to COLOUR_SPAN x T (saturated above)
LESION_COLOUR = "cyan"
LABEL_COLOUR = "lime"


def _figure(size) -> Figure:
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def plain_text(text: str) -> str:
    """``text`` as matplotlib draws it literally: a name with ``$`` signs is not math."""
    return str(text).replace("$", r"\$")


def colour_range(threshold: float) -> tuple[float, float]:
    """The colour scale of the anomaly map: from the threshold (below it, no colour) to
    ``COLOUR_SPAN`` times it; the same for every scan scored at that threshold."""
    threshold = float(threshold)
    return threshold, max(COLOUR_SPAN * threshold, threshold + 1e-6)


def threshold_how(result) -> str:
    """How the threshold of ``result`` was chosen, in words."""
    from dal.engine.checkpoint import parse_threshold_key

    parsed = parse_threshold_key(result.threshold_source)
    if parsed is None:
        return "given with --threshold"
    fpr, contrast = parsed
    return f"calibrated: {fpr:.0%} false-positive voxels on healthy {contrast + ' ' if contrast else ''}scans"


def threshold_text(result) -> str:
    """The threshold of ``result`` and how it was chosen: "0.128 (calibrated: 1% false-positive ...)"."""
    return f"{result.threshold:.3g} ({threshold_how(result)})"


def score_colours():
    """The colour map of scores: matplotlib's "hot" without its darkest third, so that a score
    just above the threshold is as visible as the outline drawn around it."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    return ListedColormap(colormaps["hot"](np.linspace(0.35, 1.0, 256)), name="dal-scores")


def _ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``array`` (X, Y, Z) with its axes flipped and swapped to the closest RAS orientation."""
    import nibabel as nib

    return nib.orientations.apply_orientation(array, nib.orientations.io_orientation(affine))


def overlay_figure(result, title: str | None = None, label: np.ndarray | None = None) -> Figure:
    """Three orthogonal views (sagittal, coronal, axial, in the scan's closest RAS orientation)
    through the highest score: the scan in grey, the anomaly map coloured from the threshold up
    (:func:`colour_range`), the lesion mask outlined in cyan and, given ``label`` ((X, Y, Z) on
    the scan's grid), the label outlined in green; a colour bar and a legend say what each is."""
    from matplotlib.lines import Line2D

    import nibabel as nib

    affine = result.scan.affine
    ornt = nib.orientations.io_orientation(affine)
    scan = _ras(result.scan.data, affine)
    score = _ras(result.anomaly, affine)
    lesions = _ras(result.lesions, affine)
    truth = None if label is None else _ras(np.asarray(label) != 0, affine)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = result.scan.spacing  # input axis i became axis ornt[i, 0]
    peak = np.unravel_index(int(np.argmax(score)), score.shape)
    low, high = colour_range(result.threshold)
    inside = scan[_ras(result.brain, affine)] if result.brain.any() else scan.ravel()
    grey = np.percentile(inside, [0.5, 99.5]) if inside.size else (0, 1)

    figure = _figure(OVERLAY_SIZE_IN)
    figure.patch.set_facecolor("black")
    colours = score_colours()
    views = (("sagittal", 0, (1, 2)), ("coronal", 1, (0, 2)), ("axial", 2, (0, 1)))
    image = None
    for index, (view, axis, (across, up)) in enumerate(views):
        axes = figure.add_axes((0.005 + index * 0.3, 0.1, 0.295, 0.78))
        axes.set_axis_off()
        cut = [slice(None)] * 3
        cut[axis] = peak[axis]
        plane = tuple(cut)
        aspect = spacing[up] / spacing[across]
        axes.imshow(scan[plane].T, cmap="gray", origin="lower", vmin=grey[0], vmax=grey[1], aspect=aspect,
                    interpolation="nearest")
        shown = np.ma.masked_less(score[plane].T, low)
        image = axes.imshow(shown, cmap=colours, origin="lower", vmin=low, vmax=high, aspect=aspect,
                            interpolation="nearest")
        # the label dashed under the mask's solid line: where they agree, both stay visible
        for mask, colour, style in ((truth, LABEL_COLOUR, "dashed"), (lesions, LESION_COLOUR, "solid")):
            if mask is not None and mask[plane].any():
                axes.contour(mask[plane].T.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.0,
                             linestyles=style, origin="lower")
        figure.text(0.005 + index * 0.3 + 0.1475, 0.9, f"{view}, slice {peak[axis]}", color="white", fontsize=9,
                    ha="center")  # one line for the three titles, whatever each panel's height
    bar_axes = figure.add_axes((0.915, 0.14, 0.015, 0.7))
    bar = figure.colorbar(image, cax=bar_axes, extend="max")
    bar.set_label(f"anomaly score, from the threshold {low:.3g} up", color="white", fontsize=8)
    bar.ax.tick_params(colors="white", labelsize=7)
    handles = [Line2D([], [], color=LESION_COLOUR, linewidth=1.5,
                      label=f"lesion mask: score >= {low:.3g}, components >= {result.info.get('min_lesion_voxels', 1)} "
                            "voxels")]
    if truth is not None:
        handles.append(Line2D([], [], color=LABEL_COLOUR, linewidth=1.5, linestyle="dashed",
                              label="label (ground truth)"))
    handles.append(Line2D([], [], color=colours(0.5), linewidth=6,
                          label=f"colour: score {low:.3g} to {high:.3g} (x{COLOUR_SPAN:g} the threshold; "
                                "below it, none)"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7.5, frameon=False,
                  labelcolor="white")
    title = title or result.name
    figure.suptitle(plain_text(f"{title}: {result.lesion_count} lesion(s), {result.lesion_volume_ml:.1f} ml; "
                               f"threshold {threshold_text(result)}"), color="white", fontsize=10, y=0.98)
    return figure


def save_overlay(result, path: str | os.PathLike) -> Path:
    """:func:`overlay_figure` written as PNG to ``path``."""
    figure = overlay_figure(result)
    figure.savefig(str(path), format="png", dpi=100, facecolor="black")
    return Path(path)


def png_base64(figure: Figure, facecolor: str = "white") -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, facecolor=facecolor)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def precision_recall_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], pooled: str | None = None) -> Figure:
    """Precision against recall, one line per volume (name -> (recall, precision)); ``pooled``
    names the curve drawn thick and black (all voxels of all volumes together)."""
    figure = _figure((6, 5))
    axes = figure.add_subplot()
    for name, (recall, precision) in curves.items():
        if name == pooled:
            axes.step(recall, precision, where="post", color="black", linewidth=2.2, label=plain_text(name), zorder=3)
        else:
            axes.step(recall, precision, where="post", linewidth=1, alpha=0.8, label=plain_text(name))
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall, voxel level")
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(fontsize=7, loc="upper right", ncol=1 + len(curves) // 12)
    figure.tight_layout()
    return figure


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def html_table(rows: list[dict], columns: list[str], headers: dict[str, str] | None = None) -> str:
    """A table of ``rows`` (dicts) in ``columns``, headed by ``headers`` (column -> words; the
    column's own name is the tooltip), in a container that scrolls sideways rather than widen
    the page."""
    headers = headers or {}
    head = "".join(f"<th title='{html.escape(c)}'>{html.escape(headers.get(c, c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
.scroll{overflow-x:auto;max-width:100%}th{white-space:normal;max-width:7em;vertical-align:bottom}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:13px}.warn{color:#a40}figure{margin:1.5em 0}"""


def html_report(title: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained HTML page: ``sections`` are (heading, HTML body) pairs."""
    parts = [f"<h2>{html.escape(heading)}</h2>\n{body}" for heading, body in sections]
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "</body></html>\n")


def html_image(data: str, caption: str = "") -> str:
    caption_html = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>{caption_html}</figure>"
