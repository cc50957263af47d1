"""`dal infer` on bad input: each problem is one line naming the file, the other scans of the
batch are still processed, no partial output is left, the exit code says something failed, an
input is never overwritten and a checkpoint never runs code."""
import gzip
import json
import os
import pickle

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from dal.cli import main
from dal.data.outputs import JOURNAL_NAME
from dal.engine.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint

from infer_phantoms import SHAPE, phantom, ras_affine, save, tiny_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    scan, _, brain = phantom()
    return save(folder / "good.nii.gz", scan), save(folder / "good_mask.nii.gz", brain)


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def outputs(folder, name):
    return sorted(p.name for p in folder.glob(f"{name}*")) if folder.exists() else []


def hidden(folder):
    """Hidden files but dal's journal of the files it wrote (temporaries, a lock left behind)."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != JOURNAL_NAME] \
        if folder.exists() else []


def bad_scans(folder):
    """name -> (path, the problem the message must state)."""
    scan, _, _ = phantom()
    folder.mkdir(exist_ok=True)
    (folder / "text.nii.gz").write_text("not an image")
    (folder / "notes.txt").write_text("hello")
    whole = gzip.compress(nib.Nifti1Image(scan, ras_affine()).to_bytes())
    (folder / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    nan = scan.copy()
    nan[5, 5, 5] = np.inf
    return {
        "text": (folder / "text.nii.gz", "cannot be read as NIfTI"),
        "notes": (folder / "notes.txt", "not a NIfTI file"),
        "truncated": (folder / "truncated.nii.gz", "cannot be read as NIfTI"),
        "flat": (save(folder / "flat.nii.gz", scan[:, :, :1]), "not a volume"),
        "slice2d": (save(folder / "slice2d.nii.gz", scan[:, :, 7]), "expected a 3D volume"),
        "4d": (save(folder / "4d.nii.gz", np.stack([scan, scan], -1)), "expected a 3D volume"),
        "nan": (save(folder / "nan.nii.gz", nan), "NaN or infinite"),
        "zero": (save(folder / "zero.nii.gz", np.zeros(SHAPE, np.float32)), "every voxel is zero"),
        "missing": (folder / "missing.nii.gz", "no such file"),
    }


def test_every_bad_scan_fails_alone_with_one_line_naming_it(tmp_path, checkpoint, good):
    bad = bad_scans(tmp_path / "in")
    out = tmp_path / "out"
    code, stdout, stderr = run("infer", good[0], *[p for p, _ in bad.values()], "--model", checkpoint, "--out", out,
                               "--no-overlay")
    assert code == 1
    assert outputs(out, "good") == ["good.json", "good_anomaly.nii.gz", "good_lesions.nii.gz", "good_phi.nii.gz"]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad)
    for name, (path, problem) in bad.items():
        line = next((e for e in errors if f" {path}:" in e), None)
        assert line is not None and problem in line, (name, errors)
        assert outputs(out, path.name.split(".")[0]) == []
    assert f"{len(bad)} of {len(bad) + 1} scan(s) failed" in stderr
    assert hidden(out) == []
    assert "good.nii.gz: " in stdout


def test_a_4d_scan_with_one_volume_is_fine(tmp_path, checkpoint):
    scan = save(tmp_path / "one.nii.gz", phantom()[0][..., None])
    code, _, stderr = run("infer", scan, "--model", checkpoint, "--out", tmp_path / "out", "--no-overlay")
    assert code == 0, stderr
    assert nib.load(str(tmp_path / "out" / "one_anomaly.nii.gz")).shape == SHAPE


def test_masks_of_another_grid_fail_and_a_good_mask_is_used(tmp_path, checkpoint, good):
    scan, mask = good
    brain = phantom()[2]
    wrong_shape = save(tmp_path / "small_mask.nii.gz", brain[:-2])
    shifted = ras_affine()
    shifted[:3, 3] += 4
    wrong_affine = save(tmp_path / "shifted_mask.nii.gz", brain, shifted)
    out = tmp_path / "out"
    for wrong, problem in ((wrong_shape, "shape"), (wrong_affine, "affine differs")):
        code, _, stderr = run("infer", scan, "--mask", wrong, "--model", checkpoint, "--out", out, "--no-overlay")
        assert code == 1 and str(wrong) in stderr and problem in stderr
        assert outputs(out, "good") == []
    code, _, stderr = run("infer", scan, "--mask", mask, "--model", checkpoint, "--out", out, "--no-overlay")
    assert code == 0, stderr
    assert json.loads((out / "good.json").read_text())["brain_mask"] == "given"
    code, _, stderr = run("infer", scan, scan, "--mask", mask, "--model", checkpoint, "--out", out)
    assert code == 2 and "one --mask per scan" in stderr


def test_an_unusable_output_folder_fails_every_scan(tmp_path, checkpoint, good):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    for out in (blocker, blocker / "below"):
        code, _, stderr = run("infer", good[0], "--model", checkpoint, "--out", out, "--no-overlay")
        assert code == 1 and str(out) in stderr
    assert blocker.read_text() == "I am a file"


def test_outputs_never_overwrite_an_input_scan(tmp_path, checkpoint):
    scan, _, _ = phantom()
    first = save(tmp_path / "a.nii.gz", scan)
    clash = save(tmp_path / "a_phi.nii.gz", scan)  # an input named like an output of a.nii.gz
    before = clash.read_bytes()
    code, _, stderr = run("infer", first, clash, "--model", checkpoint, "--out", tmp_path, "--no-overlay")
    assert code == 1 and "would overwrite an input" in stderr
    assert clash.read_bytes() == before
    assert (tmp_path / "a_phi_anomaly.nii.gz").exists()  # the other scan went on
    assert not (tmp_path / "a_anomaly.nii.gz").exists()


def test_a_folder_is_every_scan_in_it(tmp_path, checkpoint):
    scan, _, brain = phantom()
    for case in ("c1", "c2"):
        (tmp_path / "data" / case).mkdir(parents=True)
        save(tmp_path / "data" / case / f"{case}_t1.nii.gz", scan)
        save(tmp_path / "data" / case / f"{case}_mask.nii.gz", brain)
    code, _, stderr = run("infer", tmp_path / "data", "--model", checkpoint, "--out", tmp_path / "out", "--no-overlay",
                          "--verbose", "--contrast", "T1w")
    assert code == 0, stderr
    assert len(list((tmp_path / "out").glob("*_anomaly.nii.gz"))) == 2
    assert json.loads((tmp_path / "out" / "c1_t1.json").read_text())["brain_mask"] == "given"


def test_verbose_prints_the_time_of_each_stage(tmp_path, checkpoint, good):
    code, stdout, stderr = run("infer", good[0], "--model", checkpoint, "--out", tmp_path, "--verbose",
                               "--threads", 1, "--fpr", "0.05")
    assert code == 0, stderr
    for stage in ("read", "preprocess", "model", "scoring", "postprocess", "write"):
        assert f"{stage} " in stdout
    assert (tmp_path / "good_overlay.png").exists() and "good_overlay.png" in stdout
    assert json.loads((tmp_path / "good.json").read_text())["threshold_source"] == "fpr_0.05"


class _Exploit:
    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _checkpoint_with_version(source, target, version):
    """A copy of a safetensors checkpoint whose header claims another format version."""
    data = source.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["__metadata__"]["format_version"] = str(version)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    target.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + size:])
    return target


def test_bad_checkpoints_fail_with_one_line_and_never_run_code(tmp_path, checkpoint, good):
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    (tmp_path / "pickled.safetensors").write_bytes(pickle.dumps(_Exploit(), protocol=4))
    (tmp_path / "corrupt.safetensors").write_bytes(os.urandom(200))
    (tmp_path / "truncated.safetensors").write_bytes(checkpoint.read_bytes()[:300])
    _checkpoint_with_version(checkpoint, tmp_path / "newer.safetensors", FORMAT_VERSION + 1)
    loaded = load_checkpoint(checkpoint)
    save_checkpoint(tmp_path / "foreign.safetensors", loaded.model, model_kind=loaded.model_kind, config=loaded.config,
                    preprocessing={**loaded.preprocessing, "skull_strip": "hd-bet"}, thresholds=loaded.thresholds)
    cases = {"pickled": "refuses", "corrupt": "corrupt", "truncated": "truncated", "newer": "upgrade dal",
             "missing": "no such file", "foreign": "incompatible preprocessing settings"}
    for name, problem in cases.items():
        path = tmp_path / f"{name}.safetensors"
        code, _, stderr = run("infer", good[0], "--model", path, "--out", tmp_path / "out")
        assert code == 1, (name, stderr)
        assert len(stderr.strip().splitlines()) == 1 and str(path) in stderr and problem in stderr, (name, stderr)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_no_shipped_checkpoint_is_said_plainly(tmp_path, good, monkeypatch):
    monkeypatch.delenv("DAL_PRETRAINED", raising=False)
    monkeypatch.setattr("dal.pretrained.DEFAULT_NAME", "no-such-file.safetensors")
    code, _, stderr = run("infer", good[0], "--out", tmp_path)
    assert code == 1 and "no pretrained checkpoint is shipped" in stderr and "--model" in stderr


def test_a_checkpoint_without_threshold_needs_one(tmp_path, good):
    path = tiny_checkpoint(tmp_path / "raw.safetensors", thresholds={})
    code, _, stderr = run("infer", good[0], "--model", path, "--out", tmp_path / "out")
    assert code == 1 and "no threshold calibrated" in stderr and str(path) in stderr
    code, _, stderr = run("infer", good[0], "--model", path, "--out", tmp_path / "out", "--threshold", 0.5,
                          "--no-overlay")
    assert code == 0, stderr


def test_device_that_is_not_there(tmp_path, checkpoint, good):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, stderr = run("infer", good[0], "--model", checkpoint, "--out", tmp_path, "--device", "cuda")
    assert code == 2 and "no CUDA device" in stderr


def test_two_scans_with_one_name_do_not_overwrite_each_other(tmp_path, checkpoint):
    scan = phantom()[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = save(tmp_path / "a" / "x.nii.gz", scan), save(tmp_path / "b" / "x.nii.gz", scan)
    code, _, stderr = run("infer", first, second, "--model", checkpoint, "--out", tmp_path / "out", "--no-overlay")
    assert code == 1 and f"scan {second}: its outputs would have the same names as those of {first}" in stderr
    assert json.loads((tmp_path / "out" / "x.json").read_text())["scan"] == str(first)
