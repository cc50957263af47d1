"""The 3D viewer of the HTML reports: the vendored NiiVue is the pinned file, the volumes survive
their 8-bit packing, a page stands alone, and in a real browser (headless Chromium) the page
loads without console errors and draws the volumes (skipped, visibly, where no Chromium is)."""
import base64
import gzip
import hashlib
import json
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from dal.engine import viewer
from dal.engine.infer import Detector

from infer_phantoms import oracle_checkpoint, phantom, ras_affine

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
# WebGL2 without a GPU: SwiftShader through ANGLE; as root, no sandbox.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader",
                  "--enable-unsafe-swiftshader", "--enable-logging=stderr", "--v=0", "--window-size=1400,1000",
                  "--virtual-time-budget=8000"]


@pytest.fixture(scope="module")
def result():
    return Detector(oracle_checkpoint()).predict(nib.Nifti1Image(phantom()[0], ras_affine()), name="case_t1")


def test_the_vendored_niivue_is_the_pinned_release_with_its_licence():
    code = gzip.decompress(viewer.NIIVUE_FILE.read_bytes())
    assert hashlib.sha256(code).hexdigest() == viewer.NIIVUE_SHA256
    assert b"sA.niivue={}" in code[:1000]  # the UMD build, which defines window.niivue
    licence = (viewer.NIIVUE_FILE.parent / "LICENSE").read_text()
    assert "BSD 2-Clause" in licence and "Niivue" in licence
    assert viewer.NIIVUE_VERSION in (viewer.NIIVUE_FILE.parent / "README.md").read_text()


def test_volumes_keep_their_values_to_one_step_and_labels_exactly():
    data = np.random.default_rng(0).uniform(0, 3, (9, 8, 7)).astype(np.float32)
    packed, slope, inter = viewer.nifti_base64(data, ras_affine((9, 8, 7)), high=2.0)
    image = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(packed)))
    assert image.get_data_dtype() == np.uint8 and np.allclose(image.affine, ras_affine((9, 8, 7)))
    assert np.abs(image.get_fdata() - np.clip(data, 0, 2)).max() <= slope / 2 + 1e-6
    label, _, _ = viewer.nifti_base64(data > 1.5, ras_affine((9, 8, 7)), label=True)
    image = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(label)))
    assert image.header.get_intent()[0] == "label"  # NiiVue draws label images as outlines
    assert np.array_equal(image.get_fdata() > 0, data > 1.5)


def test_the_report_is_one_small_self_contained_page(tmp_path, result):
    written = result.save(tmp_path, report=True)
    page = written["report"].read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)  # nothing fetched: it opens offline
    scans = json.loads(re.search(r"id='dal-viewer-data'>(.*?)</script>", page).group(1))
    assert set(scans[0]["volumes"]) == {"scan", "phi", "score", "lesions"}
    assert scans[0]["threshold"] == result.threshold and "calibrated" in scans[0]["threshold_how"]
    assert written["report"].stat().st_size < 1.5e6  # NiiVue is 1.06 MB of it
    assert json.loads(written["json"].read_text())["outputs"]["report"] == "case_t1_report.html"


def console_and_screenshot(page, tmp_path):
    shot = tmp_path / "shot.png"
    run = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                         text=True, timeout=240)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return console, shot


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium; .ci/run does)")
def test_the_report_draws_the_volumes_in_chromium(tmp_path, result):
    from PIL import Image

    page = result.save(tmp_path, report=True)["report"]
    console, shot = console_and_screenshot(page, tmp_path)
    drawn = [line for line in console if "dal viewer: drawn" in line]
    errors = [line for line in console if "ERROR:CONSOLE" in line or "Uncaught" in line or "failed" in line]
    assert drawn and not errors, console
    layout = json.loads(re.search(r"drawn (\{.*?\})\"", drawn[0]).group(1))
    assert layout["page_width"] <= 1400  # nothing wider than the window
    left, top, width, height = (int(v) for v in layout["canvas"])
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)[top:top + height, left:left + width]
    assert pixels.std() > 20  # not a blank canvas
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((red > 200) & (blue < 80) & (green < 200)).sum() > 50  # the scores, in the hot colours
    assert ((red < 80) & (green > 200) & (blue > 200)).sum() > 20  # the lesion mask's cyan outline
    assert (abs(red - green) < 10).mean() > 0.5  # mostly the grey scan on black
