"""The interactive 3D viewer of the HTML reports: NiiVue (vendored, ``dal/vendor/niivue``) with
the scan, its pseudo-healthy image, the anomaly map, the lesion mask and, in ``dal evaluate``,
the label, all embedded in the page (offline, from the file).

The volumes are those of model space (the checkpoint's grid, 2 mm by default: where the scores
are made and the thresholds calibrated), stored as gzipped NIfTI in base64, quantised to 8 bits:
the scan and the pseudo-healthy image on one grey scale, so that they compare; the scores from 0
to the larger of the peak and ``COLOUR_SPAN`` times the threshold. A slider sets the threshold:
the map is coloured from it up (to ``COLOUR_SPAN`` times it, as in the PNG overlays) and the
lesion mask, outlined in cyan, is recomputed in the page as the voxels at or above it (without
the removal of small components that the NIfTI mask has). The label is outlined in green.
"""
from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import numpy as np

from dal.engine.report import COLOUR_SPAN, LABEL_COLOUR, LESION_COLOUR, colour_range, score_colours, threshold_how

NIIVUE_VERSION = "0.69.0"
NIIVUE_FILE = Path(__file__).resolve().parent.parent / "vendor" / "niivue" / "niivue.umd.js.gz"
NIIVUE_SHA256 = "47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af"  # of the uncompressed file
LEVELS = 255  # 8-bit volumes
VIEWER_HEIGHT_PX = 520
_RGB = {"cyan": (0, 255, 255), "lime": (0, 255, 0)}


def nifti_base64(data: np.ndarray, affine: np.ndarray, *, low: float = 0.0, high: float | None = None,
                 label: bool = False) -> tuple[str, float, float]:
    """``data`` (X, Y, Z) as a gzipped 8-bit NIfTI in base64: values from ``low`` to ``high``
    (default: the maximum) in 255 steps (``scl_slope``, ``scl_inter``), or a label image (intent
    "label", values as they are). Returns (base64, slope, intercept)."""
    import nibabel as nib

    data = np.asarray(data, np.float32)
    if label:
        raw, slope, inter = (data != 0).astype(np.uint8), 1.0, 0.0
    else:
        high = float(data.max()) if high is None else float(high)
        slope = max(high - low, 1e-12) / LEVELS
        inter = float(low)
        raw = np.clip(np.rint((data - inter) / slope), 0, LEVELS).astype(np.uint8)
    image = nib.Nifti1Image(raw, affine)
    image.header.set_slope_inter(slope, inter)
    image.header.set_xyzt_units("mm")
    if label:
        image.header.set_intent("label")
    packed = gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)
    return base64.b64encode(packed).decode("ascii"), slope, inter


def scan_volumes(result, title: str, label: np.ndarray | None = None) -> dict:
    """The viewer's data of one :class:`~dal.engine.infer.DetectionResult`: its model-space scan,
    pseudo-healthy image, scores, lesion mask at its threshold and, given ``label`` ((X, Y, Z) in
    model space), the label; plain JSON-ready data."""
    space = result.model_space
    affine = np.asarray(space["affine"], np.float64)
    image, phi, score, brain = (np.asarray(space[k]) for k in ("image", "phi", "score", "mask"))
    inside = image[brain] if brain.any() else image.ravel()
    grey_high = float(np.percentile(inside, 99.8)) * 1.1 if inside.size else 1.0
    score_high = max(float(score.max()), colour_range(result.threshold)[1])
    volumes = {
        "scan": nifti_base64(image, affine, high=grey_high)[0],
        "phi": nifti_base64(phi, affine, high=grey_high)[0],
    }
    volumes["score"], slope, inter = nifti_base64(score, affine, high=score_high)
    # the mask's voxels are set in the page, from the scores at the slider's threshold
    volumes["lesions"] = nifti_base64(np.zeros(score.shape, bool), affine, label=True)[0]
    if label is not None:
        volumes["label"] = nifti_base64(label, affine, label=True)[0]
    peak = np.unravel_index(int(np.argmax(score)), score.shape)
    return {"title": title, "volumes": volumes, "grey": [0.0, grey_high], "threshold": float(result.threshold),
            "threshold_how": threshold_how(result), "score_max": score_high,
            "score_slope": slope, "score_inter": inter,
            "peak_mm": [float(v) for v in (affine @ np.array([*peak, 1.0]))[:3]]}


def _niivue_base64() -> str:
    return base64.b64encode(NIIVUE_FILE.read_bytes()).decode("ascii")


def _colormap(colours, name: str) -> dict:
    """A matplotlib colour map as NiiVue's {R, G, B, A, I} control points."""
    points = np.linspace(0, 1, 9)
    rgba = (np.asarray([colours(p) for p in points]) * 255).round().astype(int)
    return {"R": rgba[:, 0].tolist(), "G": rgba[:, 1].tolist(), "B": rgba[:, 2].tolist(),
            "A": [0, *[255] * (len(points) - 1)], "I": (points * 255).round().astype(int).tolist(), "name": name}


def _label_colours(colour: str, name: str) -> dict:
    red, green, blue = _RGB[colour]
    return {"R": [0, red], "G": [0, green], "B": [0, blue], "A": [0, 255], "I": [0, 1], "labels": ["", name]}


_SCRIPT = """
(async () => {
  const status = document.getElementById('dal-viewer-status');
  const say = (text) => { status.textContent = text; };
  try {
    const packed = document.getElementById('dal-niivue').textContent;
    const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
    const code = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))).text();
    const tag = document.createElement('script');
    tag.textContent = code;  // NiiVue's UMD build: defines window.niivue
    document.head.appendChild(tag);
    const settings = JSON.parse(document.getElementById('dal-viewer-settings').textContent);
    const scans = JSON.parse(document.getElementById('dal-viewer-data').textContent);
    const nv = new niivue.Niivue({backColor: [0, 0, 0, 1], isColorbar: true, show3Dcrosshair: true,
                                  crosshairColor: [0.3, 0.6, 1, 0.7], crosshairWidth: 0.5,
                                  multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS,
                                  multiplanarLayout: niivue.MULTIPLANAR_TYPE.GRID,
                                  dragAndDropEnabled: false, logLevel: 'error'});
    await nv.attachToCanvas(document.getElementById('dal-viewer-canvas'));
    nv.addColormap('dal-scores', settings.scores);
    const slider = document.getElementById('dal-threshold');
    const shown = document.getElementById('dal-threshold-value');
    const choice = document.getElementById('dal-viewer-scan');
    const background = document.getElementById('dal-viewer-background');
    let scan = null;
    const layer = (name) => nv.volumes.find((v) => v.name.startsWith(name + '.'));
    function setThreshold(t) {
      const score = layer('score'), lesions = layer('lesions');
      score.cal_min = t;
      score.cal_max = settings.span * t;
      const raw = score.img, mask = lesions.img;
      for (let i = 0; i < raw.length; i++) mask[i] = raw[i] * scan.score_slope + scan.score_inter >= t ? 1 : 0;
      shown.textContent = t.toPrecision(3) + (Math.abs(t - scan.threshold) < scan.score_slope / 2
        ? ' (' + scan.threshold_how + ')' : ' (chosen here; the outputs used ' + scan.threshold.toPrecision(3) + ')');
      nv.updateGLVolume();
    }
    async function show(index) {
      scan = scans[index];
      while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
      const specs = [['scan', 'gray', 1], ['phi', 'gray', background.value === 'phi' ? 1 : 0],
                     ['score', 'dal-scores', 0.9], ['lesions', '', 0.01], ['label', '', 0.01]];  // labels: outline only
      for (const [name, colormap, opacity] of specs) {
        if (!(name in scan.volumes)) continue;
        const grey = colormap === 'gray' ? {cal_min: scan.grey[0], cal_max: scan.grey[1]} : {};
        const volume = await niivue.NVImage.loadFromBase64({base64: scan.volumes[name], name: name + '.nii.gz',
                                                           colormap: colormap || 'gray', opacity,
                                                           colorbarVisible: name === 'score', ...grey});
        if (!colormap) volume.setColormapLabel(settings.labels[name]);
        nv.addVolume(volume);
      }
      slider.min = 0; slider.max = scan.score_max; slider.step = scan.score_slope; slider.value = scan.threshold;
      nv.setAtlasOutline(1);  // label images (lesion mask, label) drawn as outlines
      setThreshold(scan.threshold);
      nv.scene.crosshairPos = nv.mm2frac(scan.peak_mm);
      nv.drawScene();
      document.body.dataset.viewer = 'drawn';
      say(scan.title + ': ' + nv.volumes.length + ' volumes, crosshair at the highest score');
    }
    scans.forEach((s, i) => choice.add(new Option(s.title, i)));
    choice.hidden = scans.length < 2;
    choice.onchange = () => show(+choice.value);
    slider.oninput = () => setThreshold(+slider.value);
    background.onchange = () => nv.setOpacity(1, background.value === 'phi' ? 1 : 0);
    await show(0);
    const box = document.getElementById('dal-viewer-canvas').getBoundingClientRect();
    console.log('dal viewer: drawn ' + JSON.stringify({canvas: [box.left, box.top, box.width, box.height],
                                                       page_width: document.documentElement.scrollWidth}));
  } catch (error) {
    document.body.dataset.viewer = 'failed';
    say('the 3D viewer failed: ' + error);
    console.error('dal viewer failed:', error);
  }
})();
"""


def viewer_section(scans: list[dict]) -> str:
    """The HTML of the viewer (a canvas, its controls and legend, NiiVue and the data) for the
    scans made by :func:`scan_volumes`; one viewer per page, with a list to choose the scan."""
    has_label = any("label" in s["volumes"] for s in scans)
    settings = {"span": COLOUR_SPAN, "scores": _colormap(score_colours(), "dal-scores"),
                "labels": {"lesions": _label_colours(LESION_COLOUR, "lesion mask"),
                           "label": _label_colours(LABEL_COLOUR, "label")}}
    legend = [f"<span style='color:{LESION_COLOUR}'>&#9632;</span> cyan outline: lesion mask, the voxels at or above "
              "the threshold (the NIfTI mask also drops components below the minimum size)",
              f"colour: score from the threshold up to {COLOUR_SPAN:g} times it (below it, none)"]
    if has_label:
        legend.append(f"<span style='color:{LABEL_COLOUR}'>&#9632;</span> green outline: label (ground truth)")
    data = json.dumps(scans).replace("</", "<\\/")
    return (f"<div class='viewer'><p class='note'>Interactive (NiiVue {NIIVUE_VERSION}): drag to move the "
            "crosshair, scroll to change slice, drag the 3D view to turn it. Model space (the checkpoint's grid), "
            "8-bit volumes.</p>"
            "<p><select id='dal-viewer-scan'></select> "
            "<label>background <select id='dal-viewer-background'><option value='scan'>scan</option>"
            "<option value='phi'>pseudo-healthy image</option></select></label> "
            "<label>threshold <input type='range' id='dal-threshold' style='width:320px'></label> "
            "<output id='dal-threshold-value'></output></p>"
            f"<div style='height:{VIEWER_HEIGHT_PX}px'><canvas id='dal-viewer-canvas'></canvas></div>"
            f"<p class='note'>{'; '.join(legend)}.</p><p class='note' id='dal-viewer-status'>loading the viewer&hellip;</p>"
            f"<script type='application/json' id='dal-viewer-settings'>{json.dumps(settings)}</script>"
            f"<script type='application/json' id='dal-viewer-data'>{data}</script>"
            f"<script type='application/octet-stream' id='dal-niivue'>{_niivue_base64()}</script>"
            f"<script>{_SCRIPT}</script></div>")


def viewer_page(result, title: str | None = None) -> str:
    """A self-contained HTML page of one scan (``dal infer --report``): the 3D viewer, then the
    static overlay (PNG) and the scan's summary, for a browser without WebGL2."""
    from dal.engine.report import html_image, html_report, html_table, overlay_figure, png_base64

    title = title or result.name
    summary = result.summary()
    rows = [{"field": k, "value": json.dumps(v) if isinstance(v, (list, dict)) else v} for k, v in summary.items()
            if k not in ("timings_s",)]
    sections = [("3D viewer", viewer_section([scan_volumes(result, title)])),
                ("Overlay (static)", html_image(png_base64(overlay_figure(result), facecolor="black"),
                                                 result.name)),
                ("Summary", html_table(rows, ["field", "value"]))]
    return html_report(f"dal infer: {title}", sections)
