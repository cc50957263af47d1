"""Pictures and reports: the overlay of an anomaly map on its scan (nilearn, three views), the
precision-recall curves of an evaluation, and a self-contained HTML report (every picture
embedded as base64 PNG: it opens in a browser from the file, with no server).

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

OVERLAY_SIZE_IN = (11, 3.6)


def _figure(size) -> Figure:
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def plain_text(text: str) -> str:
    """``text`` as matplotlib draws it literally: a name with ``$`` signs is not math."""
    return str(text).replace("$", r"\$")


def overlay_figure(result, title: str | None = None) -> Figure:
    """Three orthogonal views through the highest score: the anomaly map (from half the threshold
    up, hot colours) over the scan, the lesion mask outlined in cyan."""
    from nilearn import plotting

    figure = _figure(OVERLAY_SIZE_IN)
    threshold = float(result.threshold)
    vmax = max(float(result.peak_score), threshold * 1.5, 1e-6)
    title = title or f"{result.name}: {result.lesion_count} lesion(s), {result.lesion_volume_ml:.1f} ml"
    common = dict(cut_coords=result.peak_mm, display_mode="ortho", figure=figure, black_bg=True,
                  title=plain_text(title),
                  draw_cross=False, annotate=True)
    if (result.anomaly >= threshold / 2).any():
        display = plotting.plot_stat_map(result.anomaly_image, bg_img=result.scan_image, threshold=threshold / 2,
                                         vmin=0, vmax=vmax, cmap="hot", symmetric_cbar=False, dim=0,
                                         resampling_interpolation="continuous", **common)
    else:  # nothing to show over the scan (nilearn would warn of an empty map)
        display = plotting.plot_anat(result.scan_image, dim=0, **common)
    if result.lesions.any():
        display.add_contours(result.lesions_image, levels=[0.5], colors=["cyan"], linewidths=0.8)
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


def html_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
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
