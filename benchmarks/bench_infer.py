"""End-to-end speed of `dal infer` on one 160 x 192 x 160 1 mm scan (the grid `dal synth` writes):
read the NIfTI, preprocess to model space, the model over the slices in batches, residual
scoring, back to the scan's grid, lesion mask, and the write of the three maps and the JSON
(with and without the nilearn overlay). The models have the default configuration (the shipped
checkpoint's size), randomly initialised: the speed of a trained one is the same. DAL and its
two baselines side by side; the time of each stage (``dal infer --verbose``) goes into
``extra_info`` and is printed.

Run: PYTHONPATH=$PWD/python python -m pytest benchmarks/bench_infer.py --benchmark-only -p no:cacheprovider -s
"""
import shutil

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
