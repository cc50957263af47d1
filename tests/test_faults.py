"""Faults and hostile files, class by class (issue 17): dal writes only files it owns, one process
per folder, each group of outputs whole or absent, resume from any moment, operating-system errors
as one line, bounded resources, no non-finite numbers, messages that name the file, and the modes
of the files written."""
import errno
import gzip
import json
import math
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from dal.cli import main
from dal.data.io import DataError, default_mode, load_scan
from dal.data.locks import LOCK_NAME
from dal.data.outputs import JOURNAL_NAME, output_folder
from dal.engine.checkpoint import CheckpointError, load_checkpoint, read_metadata
from dal.engine.config import ConfigError, load_config
from dal.engine.infer import Detector
from dal.errors import MESSAGE_LIMIT

from infer_phantoms import SHAPE, oracle_checkpoint, phantom, ras_affine, save, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return save(tmp_path_factory.mktemp("scan") / "s1.nii.gz", phantom()[0])


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def visible(folder):
    """The files in a folder (none when dal removed the folder it created and wrote nothing into)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def leftovers(folder):
    """Temporaries and locks left in a folder tree (dal's journal is not one)."""
    return sorted(str(p) for p in Path(folder).rglob(".*") if p.name != JOURNAL_NAME)


def one_error_line(stderr):
    """The one line of an error (a progress bar's lines aside)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ----------------------------------------------------------------- 1. only files dal owns


def test_infer_never_replaces_a_sidecar_or_a_label_it_did_not_write(tmp_path, checkpoint):
    anat = tmp_path / "bids" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    flair = save(anat / "sub-01_FLAIR.nii.gz", phantom()[0])
    sidecar = anat / "sub-01_FLAIR.json"
    sidecar.write_text('{"RepetitionTime": 9}')
    label = save(anat / "sub-01_FLAIR_lesions.nii.gz", phantom()[1])
    before = label.read_bytes()
    code, _, stderr = run("infer", flair, "--model", checkpoint, "--out", anat, "--no-overlay")
    assert code == 1 and "dal did not write" in stderr
    assert str(label) in stderr or str(sidecar) in stderr
    assert sidecar.read_text() == '{"RepetitionTime": 9}' and label.read_bytes() == before
    assert visible(anat) == ["sub-01_FLAIR.json", "sub-01_FLAIR.nii.gz", "sub-01_FLAIR_lesions.nii.gz"]
    assert leftovers(anat) == []


def test_infer_replaces_its_own_outputs_only_with_overwrite_and_whole(tmp_path, checkpoint, scan):
    out = tmp_path / "out"
    assert run("infer", scan, "--model", checkpoint, "--out", out)[0] == 0
    assert "s1_overlay.png" in visible(out)
    code, _, stderr = run("infer", scan, "--model", checkpoint, "--out", out)
    assert code == 1 and "give --overwrite" in stderr and "s1" in stderr
    code, _, stderr = run("infer", scan, "--model", checkpoint, "--out", out, "--overwrite", "--no-overlay")
    assert code == 0, stderr
    # The group was replaced whole: no overlay of the earlier run stays beside the new maps.
    assert visible(out) == ["s1.json", "s1_anomaly.nii.gz", "s1_lesions.nii.gz", "s1_phi.nii.gz"]


def test_train_never_replaces_the_users_config_in_its_run_folder(tmp_path):
    run_dir = tmp_path / "exp1"
    run_dir.mkdir()
    mine = run_dir / "config.yaml"
    mine.write_text("train:\n  max_steps: 1\n  threads: 1\n")
    code, _, stderr = run("train", "--config", mine, "--out", run_dir, "--quiet")
    assert code == 1 and str(mine) in one_error_line(stderr) and "dal did not write" in stderr
    assert mine.read_text() == "train:\n  max_steps: 1\n  threads: 1\n"
    assert visible(run_dir) == ["config.yaml"] and leftovers(run_dir) == []


def test_evaluate_refuses_reports_it_did_not_write_before_any_work(tmp_path, checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.csv").write_text("mine")
    code, _, stderr = run("evaluate", "--data", tmp_path / "no-such-data", "--model", checkpoint, "--out", out)
    assert code == 1 and str(out / "metrics.csv") in one_error_line(stderr)
    assert (out / "metrics.csv").read_text() == "mine"


# ----------------------------------------------------------------- 2. one process per folder

HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("locks", sys.argv[1])
locks = importlib.util.module_from_spec(spec); spec.loader.exec_module(locks)
with locks.folder_lock(sys.argv[2], "run folder"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_told_who_holds_the_folder_and_a_dead_holder_is_no_obstacle(tmp_path, checkpoint, scan):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT / "python/dal/data/locks.py"), str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, stderr = run("infer", scan, "--model", checkpoint, "--out", out, "--no-overlay")
        line = one_error_line(stderr)
        assert code == 1 and f"in use by pid {holder.pid} on " in line and str(out) in line
        code, _, stderr = run("train", "--out", out, "--quiet")
        assert code == 1 and f"in use by pid {holder.pid}" in one_error_line(stderr)
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_NAME).exists()  # a killed holder leaves its file; the kernel dropped its lock
    code, _, stderr = run("infer", scan, "--model", checkpoint, "--out", out, "--no-overlay")
    assert code == 0, stderr
    assert not (out / LOCK_NAME).exists()


# ----------------------------------------------------------------- 3. all or nothing


def test_a_failed_json_leaves_none_of_the_scans_outputs(tmp_path, checkpoint, scan, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "out"
    code, _, stderr = run("infer", scan, "--model", checkpoint, "--out", out)
    assert code == 1 and "No space left on device (ENOSPC)" in stderr and str(out / "s1.json") in stderr
    assert visible(out) == [] and leftovers(out) == []


def test_a_group_cut_short_and_stale_temporaries_are_removed_when_the_folder_is_next_opened(tmp_path):
    out = tmp_path / "out"
    with output_folder(out) as folder:
        folder.write("a", {"a_1.txt": lambda p: p.write_text("1"), "a_2.txt": lambda p: p.write_text("2")})
        folder.write("b", {"b_1.txt": lambda p: p.write_text("1")})
    # What a kill between the renames leaves: group b pending (one file renamed) and a temporary.
    with open(out / JOURNAL_NAME, "a") as journal:
        journal.write(json.dumps({"write": "b", "files": ["b_1.txt", "b_2.txt"]}) + "\n")
        journal.write(json.dumps({"write": "c", "files": ["../victim.txt"]}) + "\n")  # hostile: never followed
    (out / "b_1.txt").write_text("new")
    (out / ".dal-tmp-99999999-abc.txt").write_text("half")
    (tmp_path / "victim.txt").write_text("keep")
    with output_folder(out) as folder:
        assert folder.owner("a_1.txt") == "a" and folder.owner("b_1.txt") is None
    assert visible(out) == ["a_1.txt", "a_2.txt"] and leftovers(out) == []
    assert (tmp_path / "victim.txt").read_text() == "keep"


def test_synth_overwrite_leaves_exactly_the_manifests_cases(tmp_path):
    common = ["--contrast", "t1", "--spacing", "4", "--shape", "40,48,40", "--out", tmp_path]
    assert run("synth", "--n", 2, *common)[0] == 0
    assert visible(tmp_path) == ["manifest.json", "synth-0000", "synth-0001"]
    code, _, stderr = run("synth", "--n", 1, "--overwrite", *common)
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [case["id"] for case in manifest["cases"]] == ["synth-0000"]
    assert visible(tmp_path) == ["manifest.json", "synth-0000"] and leftovers(tmp_path) == []


def test_a_name_as_long_as_allowed_works_and_a_longer_one_is_one_line(tmp_path, checkpoint):
    longest = "n" * 240  # NAME_lesions.nii.gz and NAME_anomaly.nii.gz are 255 bytes, as long as allowed
    too_long = "m" * 241
    for name in (longest, too_long):
        save(tmp_path / f"{name}.nii.gz", phantom()[0])
    code, _, stderr = run("infer", tmp_path / f"{longest}.nii.gz", tmp_path / f"{too_long}.nii.gz", "--model",
                          checkpoint, "--out", tmp_path / "out", "--no-overlay")
    assert code == 1 and "allows 255" in stderr and "1 of 2 scan(s) failed" in stderr
    assert f"{longest}_anomaly.nii.gz" in visible(tmp_path / "out")


# ----------------------------------------------------------------- 4. resume from any moment


def test_resume_before_the_first_checkpoint_starts_the_run_again(tmp_path, monkeypatch):
    from dal.engine import train as train_module

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({
        "model": {"kind": "ae", "channels": 4, "levels": 2, "ae_latent": 4},
        "data": {"train_volumes": 2, "val_contrasts": ["t1"], "val_lesions": ["tumour"], "val_healthy": 1,
                 "cache": str(tmp_path.parent / "dal-synthetic-cache")},
        "train": {"batch_size": 4, "checkpoint_every": 2, "val_every": 3, "threads": 1, "max_steps": 3},
        "preprocessing": {"spacing": 4.0, "shape": [40, 48, 40]}}))
    run_dir = tmp_path / "run"

    def killed(*_args):
        raise KeyboardInterrupt("killed before the first checkpoint")

    collate = train_module._collate
    monkeypatch.setattr(train_module, "_collate", killed)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(load_config(tmp_path / "tiny.yaml"), run_dir, progress=False)
    assert "config.yaml" in visible(run_dir) and not (run_dir / "last.safetensors").exists()
    assert leftovers(run_dir) == []
    monkeypatch.setattr(train_module, "_collate", collate)
    code, stdout, stderr = run("train", "--out", run_dir, "--resume", "--quiet")  # the run's own config.yaml
    assert code == 0, stderr
    assert "no checkpoint yet" in stdout and "trained 3 steps" in stdout
    code, _, stderr = run("train", "--out", run_dir, "--quiet")
    assert code == 1 and "--resume" in stderr and "--overwrite" in stderr
    code, stdout, stderr = run("train", "--config", tmp_path / "tiny.yaml", "--out", run_dir, "--overwrite", "--quiet")
    assert code == 0 and "trained 3 steps" in stdout, stderr


# ----------------------------------------------------------------- 5. operating-system errors


@pytest.mark.parametrize("code_", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_an_os_error_while_writing_is_one_line_naming_the_path(tmp_path, monkeypatch, code_):
    def refuse(*_args, **_kwargs):
        raise OSError(code_, os.strerror(code_))

    monkeypatch.setattr(nib, "save", refuse)
    out = tmp_path / "synth"
    code, _, stderr = run("synth", "--n", 1, "--contrast", "t1", "--spacing", "4", "--shape", "40,48,40", "--out", out)
    line = one_error_line(stderr)
    assert code == 1 and os.strerror(code_) in line and errno.errorcode[code_] in line and str(out) in line
    assert visible(out) == [] and leftovers(out) == []
    monkeypatch.setattr(Path, "write_text", refuse)
    code, _, stderr = run("train", "--out", tmp_path / "run", "--quiet")
    line = one_error_line(stderr)
    assert code == 1 and str(tmp_path / "run" / "config.yaml") in line and os.strerror(code_) in line


def test_a_damaged_cache_entry_is_made_again(tmp_path):
    from dal.data.dataset import _cached

    made = []

    def make():
        made.append(1)
        return {"x": np.arange(3)}

    first = _cached(tmp_path, {"k": 1}, make)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"PK\x03\x04 not a zip at all")
    again = _cached(tmp_path, {"k": 1}, make)
    assert len(made) == 2 and np.array_equal(first["x"], again["x"])
    assert np.array_equal(np.load(entry)["x"], np.arange(3)) and leftovers(tmp_path) == []


def test_a_config_of_binary_bytes_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(bytes(range(128, 256)) * 4)
    code, _, stderr = run("train", "--config", bad, "--out", tmp_path / "run")
    assert code == 2 and "not a text file" in stderr and "--config" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------- 6. bounded resources


def _gzip_nifti(path, shape, dtype, data: bytes):
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(ras_affine(), 1)
    header.set_sform(ras_affine(), 1)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + data))
    return path


def test_a_small_file_declaring_a_huge_volume_is_refused_before_reading(tmp_path):
    bomb = _gzip_nifti(tmp_path / "bomb.nii.gz", (512, 512, 400), np.int16, b"\0" * 1_000_000)
    assert bomb.stat().st_size < 10_000
    started = time.perf_counter()
    with pytest.raises(DataError, match="more than a gzip file of"):
        load_scan(bomb)
    huge = _gzip_nifti(tmp_path / "huge.nii.gz", (2048, 2048, 2048), np.uint8, b"")
    with pytest.raises(DataError, match="dal reads at most"):
        load_scan(huge)
    assert time.perf_counter() - started < 2  # nothing of 0.2 or 8 GB was allocated


def test_yaml_aliases_are_refused_and_messages_stay_short(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)) + "train: {seed: *i}\n"
    (tmp_path / "laughs.yaml").write_text(laughs)
    with pytest.raises(ConfigError, match="alias") as error:
        load_config(tmp_path / "laughs.yaml")
    assert len(str(error.value)) < 500
    (tmp_path / "long.yaml").write_text(yaml.safe_dump({"train": {"amp": "x" * 100_000}}))
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "long.yaml")
    assert len(str(error.value)) < MESSAGE_LIMIT + 100


def _rewrite_header(source: Path, target: Path, change) -> Path:
    """A copy of a checkpoint whose safetensors header went through ``change``."""
    data = source.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    encoded = change(header)
    encoded = encoded if isinstance(encoded, bytes) else json.dumps(encoded).encode()
    encoded += b" " * (-len(encoded) % 8)
    target.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + size:])
    return target


def _metadata_change(key, edit):
    def change(header):
        value = json.loads(header["__metadata__"][key])
        edit(value)
        header["__metadata__"][key] = json.dumps(value)
        return header
    return change


def test_checkpoints_declaring_deep_nesting_or_a_huge_model_are_refused_cheaply(tmp_path, checkpoint):
    deep = _rewrite_header(checkpoint, tmp_path / "deep.safetensors",
                           lambda header: b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(CheckpointError, match="corrupt header"):
        read_metadata(deep)
    deep_value = _rewrite_header(checkpoint, tmp_path / "deep_value.safetensors", lambda header: {
        **header, "__metadata__": {**header["__metadata__"], "metrics": "[" * 100_000 + "]" * 100_000}})
    with pytest.raises(CheckpointError, match="corrupt dal metadata"):
        read_metadata(deep_value)
    huge = _rewrite_header(checkpoint, tmp_path / "huge.safetensors",
                           _metadata_change("config", lambda c: c["model"].update(channels=1_000_000)))
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="do not fit .* of another shape"):
        load_checkpoint(huge)
    assert time.perf_counter() - started < 5


# ----------------------------------------------------------------- 7. numbers that are numbers


def test_non_finite_weights_or_thresholds_refuse_the_checkpoint(tmp_path, checkpoint, scan):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(checkpoint))
    name = next(k for k in tensors if k.startswith("model.") and tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=read_raw_metadata(checkpoint))
    with pytest.raises(CheckpointError, match=f"{name[len('model.'):]} hold NaN"):
        load_checkpoint(tmp_path / "nan.safetensors")
    for value in (float("nan"), "NaN", "abc", [1]):
        bad = _rewrite_header(checkpoint, tmp_path / "threshold.safetensors",
                              _metadata_change("thresholds", lambda t: t.update({"fpr_0.01": value})))
        code, _, stderr = run("infer", scan, "--model", bad, "--out", tmp_path / "out")
        line = one_error_line(stderr)
        assert code == 1 and str(bad) in line and "threshold 'fpr_0.01'" in line and "--device" not in line


def read_raw_metadata(path):
    data = Path(path).read_bytes()
    return json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]


class _NaNModel(torch.nn.Module):
    def pseudo_healthy(self, x):
        return {"phi": x * float("nan")}


def test_non_finite_outputs_are_an_error_and_never_a_file(tmp_path):
    checkpoint = oracle_checkpoint()
    checkpoint.model = _NaNModel()
    with pytest.raises(DataError, match="NaN or infinite"):
        Detector(checkpoint).predict(nib.Nifti1Image(phantom()[0], ras_affine()))
    result = Detector(oracle_checkpoint()).predict(nib.Nifti1Image(phantom()[0], ras_affine()), name="x")
    result.peak_score = math.inf
    with pytest.raises(ValueError, match="JSON compliant"):
        result.save(tmp_path / "out", overlay=False)
    assert visible(tmp_path / "out") == [] and leftovers(tmp_path / "out") == []


def test_complex_constant_and_near_constant_scans(tmp_path):
    complex_scan = save(tmp_path / "complex.nii.gz", phantom()[0].astype(np.complex64) * (1 + 1j))
    with pytest.raises(DataError, match="complex values"):
        load_scan(complex_scan)
    detector = Detector(oracle_checkpoint())
    with pytest.raises(DataError, match="a constant volume"):
        detector.predict(save(tmp_path / "constant.nii.gz", np.full(SHAPE, 7, np.float32)))
    rng = np.random.default_rng(0)
    nearly = save(tmp_path / "nearly.nii.gz", (100 + rng.normal(0, 0.1, SHAPE)).astype(np.float32))
    assert any("nearly constant" in w for w in detector.predict(nearly).warnings)
    healthy = detector.predict(nib.Nifti1Image(phantom()[0], ras_affine()))
    assert not any("nearly constant" in w for w in healthy.warnings)


# ----------------------------------------------------------------- 8. messages name their file


def test_a_malformed_scoring_section_names_the_checkpoint_not_the_device(tmp_path, checkpoint, scan):
    bad = _rewrite_header(checkpoint, tmp_path / "scoring.safetensors",
                          _metadata_change("config", lambda c: c["scoring"].update(median_mm="wide")))
    code, _, stderr = run("infer", scan, "--model", bad, "--out", tmp_path / "out")
    line = one_error_line(stderr)
    assert code == 1 and str(bad) in line and "scoring.median_mm" in line and "--device" not in line


def test_a_label_of_another_shape_and_a_corrupt_manifest_are_named(tmp_path):
    from dal.data import find_cases, load_volumes

    case = tmp_path / "brats" / "c1"
    case.mkdir(parents=True)
    save(case / "c1_t1.nii.gz", phantom()[0])
    label = save(case / "c1_seg.nii.gz", phantom()[1][:-2])
    with pytest.raises(DataError, match=f"label {label}: shape"):
        load_volumes(tmp_path / "brats")
    (tmp_path / "synth").mkdir()
    manifest = tmp_path / "synth" / "manifest.json"
    manifest.write_text(json.dumps({"generator": "dal synth", "cases": [{"id": "x"}]}))
    with pytest.raises(DataError, match=f"manifest {manifest}: a case entry is malformed"):
        find_cases(tmp_path / "synth")


def test_names_with_dollar_signs_are_drawn_literally_and_escaped_in_html(tmp_path, checkpoint):
    from dal.engine.report import html_table, png_base64, precision_recall_figure

    scan = save(tmp_path / "p$\\frac{$1.nii.gz", phantom()[0])  # not valid matplotlib math
    code, _, stderr = run("infer", scan, "--model", checkpoint, "--out", tmp_path / "out", "--threshold", "0")
    assert code == 0, stderr
    assert (tmp_path / "out" / "p$\\frac{$1_overlay.png").stat().st_size > 0
    png_base64(precision_recall_figure({"$\\frac{$": (np.array([0.0, 1.0]), np.array([1.0, 0.5]))}))
    assert "<script>" not in html_table([{"case": "<script>$x$</script>"}], ["case"])


# ----------------------------------------------------------------- 9. modes


def test_checkpoints_get_the_mode_of_every_other_file(tmp_path):
    path = tiny_checkpoint(tmp_path / "m.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == default_mode()
    assert leftovers(tmp_path) == []
