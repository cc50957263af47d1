"""End-to-end speed of `dal infer` on one 160 x 192 x 160 1 mm scan (the grid `dal synth` writes):
read the NIfTI, preprocess to model space, the model over the slices in batches, residual
scoring, back to the scan's grid, lesion mask, and the write of the three maps and the JSON
(with and without the overlay). The models have the default configuration (the shipped
checkpoint's size), randomly initialised: the speed of a trained one is the same. DAL and its
two baselines side by side; the time of each stage (``dal infer --verbose``) goes into
``extra_info`` and is printed.

A second group is the cold command on a 181 x 217 x 181 1 mm scan (the MNI152 grid), as a user
runs it: ``python -m dal infer SCAN -v`` with the shipped checkpoint and its overlay, in a new
process each round, beside ``python -c "import torch"`` in the same session: the ratio of the two
says how much dal adds to the import that every torch program pays.

Run: PYTHONPATH=$PWD/python python -m pytest benchmarks/bench_infer.py --benchmark-only -p no:cacheprovider -s
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dal.data.synthetic import SYNTH_SHAPE, SYNTH_SPACING, generate_case
from dal.engine.checkpoint import save_checkpoint
from dal.engine.config import Config
from dal.engine.infer import Detector
from dal.models import build_model

GROUP = "dal infer 160x192x160 1 mm, end to end"
COLD_GROUP = "cold dal infer command, 181x217x181 1 mm, beside import torch"
MNI_SHAPE = (181, 217, 181)
PYTHON_PATH = str(Path(__file__).resolve().parent.parent / "python")
cold_seconds: dict[str, float] = {}


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    case = generate_case(3, ("flair",), "tumour", spacing=SYNTH_SPACING, shape=SYNTH_SHAPE)
    path = tmp_path_factory.mktemp("scan") / "case_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.round(case.images["flair"]).astype(np.int16), case.affine), str(path))
    return path


def _detector(tmp_path, kind: str) -> Detector:
    config = Config().replace({"model.kind": kind})
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / f"{kind}.safetensors", build_model(config.model), model_kind=kind,
                           config=config.to_dict(), preprocessing=config.preprocessing.to_dict(),
                           thresholds={"fpr_0.01": 0.2, "fpr_0.05": 0.1})
    return Detector.load(path)


def _run_end_to_end(benchmark, detector, scan_path, out, overlay: bool):
    stages: list[dict] = []

    def infer():
        if out.exists():
            shutil.rmtree(out)
        result = detector.predict(scan_path)
        result.save(out, overlay=overlay)
        stages.append(result.timings)
        return result

    result = benchmark.pedantic(infer, rounds=3, warmup_rounds=1, iterations=1)
    assert result.anomaly.shape == SYNTH_SHAPE
    measured = stages[1:]  # without the warm-up round
    mean = {stage: float(np.mean([s[stage] for s in measured])) for stage in measured[0]}
    benchmark.extra_info.update({f"stage_{k}_s": round(v, 3) for k, v in mean.items()})
    print(f"\n{benchmark.name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in mean.items())
          + f"; total {sum(mean.values()):.2f} s")


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("kind", ["dal", "ae", "dae"])
def test_infer_maps_and_json(benchmark, scan_path, tmp_path, kind):
    _run_end_to_end(benchmark, _detector(tmp_path, kind), scan_path, tmp_path / "out", overlay=False)


@pytest.mark.benchmark(group=GROUP)
def test_infer_dal_with_overlay(benchmark, scan_path, tmp_path):
    _run_end_to_end(benchmark, _detector(tmp_path, "dal"), scan_path, tmp_path / "out", overlay=True)


@pytest.fixture(scope="module")
def mni_grid_scan(tmp_path_factory):
    case = generate_case(5, ("flair",), "tumour", spacing=1.0, shape=MNI_SHAPE)
    path = tmp_path_factory.mktemp("mni") / "case_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.round(case.images["flair"]).astype(np.int16), case.affine), str(path))
    return path


def _cold(benchmark, command: list[str], name: str) -> str:
    outputs: list[str] = []

    def run():
        done = subprocess.run(command, capture_output=True, text=True, check=True,
                              env={"PYTHONPATH": PYTHON_PATH, "PATH": "/usr/bin:/bin"})
        outputs.append(done.stdout)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    cold_seconds[name] = benchmark.stats.stats.median
    if len(cold_seconds) == 2:
        ratio = cold_seconds["infer"] / cold_seconds["torch"]
        benchmark.extra_info["cold_infer_over_import_torch"] = round(ratio, 2)
        print(f"\ncold dal infer {cold_seconds['infer']:.2f} s, import torch {cold_seconds['torch']:.2f} s: "
              f"ratio {ratio:.2f}")
    return outputs[-1]


@pytest.mark.benchmark(group=COLD_GROUP)
def test_cold_import_torch(benchmark):
    _cold(benchmark, [sys.executable, "-c", "import torch"], "torch")


@pytest.mark.benchmark(group=COLD_GROUP)
def test_cold_dal_infer_with_overlay(benchmark, mni_grid_scan, tmp_path):
    out = _cold(benchmark, [sys.executable, "-m", "dal", "infer", str(mni_grid_scan), "--out", str(tmp_path / "out"),
                            "--verbose", "--overwrite", "--device", "cpu"], "infer")
    stages = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([0-9.]+) s", out.splitlines()[-1]))
    benchmark.extra_info.update({f"stage_{k}_s": v for k, v in stages.items()})
    print(f"\n{benchmark.name}: {out.splitlines()[-1].strip()}")
    assert (tmp_path / "out" / "case_flair_overlay.png").is_file()
