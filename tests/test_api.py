"""The public API: what `import dal` gives, the errors a caller may catch, and the CLI's way with a bug."""
import json

import pytest
from click.testing import CliRunner

import dal
from dal.cli import main
from infer_phantoms import phantom, save

ERRORS = ["ArgumentError", "CheckpointError", "ConfigError", "DataError", "DeviceError", "FolderInUse", "OutputError",
          "TrainingError"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    out = tmp_path_factory.mktemp("cases")
    dal.synthesize(out, 2, contrasts=("t2",), lesions=("none", "stroke"), seed=1, spacing=4.0, shape=(40, 48, 40))
    return out


def test_every_public_name_resolves():
    for name in dal.__all__:
        assert getattr(dal, name) is not None, name
    for name in ERRORS:
        assert issubclass(getattr(dal, name), dal.DalError), name


@pytest.mark.parametrize("call, error, words", [
    (lambda tmp: dal.synthesize(tmp / "s", 0), "ArgumentError", "count"),
    (lambda tmp: dal.synthesize(tmp / "s", 1, tissue=tmp / "t.nii.gz"), "ConfigError", "anatomy"),
    (lambda tmp: dal.train(tmp / "run", settings={"model.kind": "nope"}), "ConfigError", "model.kind"),
    (lambda tmp: dal.train(tmp / "run", settings={"data.data": str(tmp / "absent")}), "ConfigError", "no such folder"),
    (lambda tmp: dal.evaluate(tmp / "absent"), "DataError", "absent"),
    (lambda tmp: dal.Detector.load(device="tpu"), "DeviceError", "device"),
    (lambda tmp: dal.Detector.load(tmp / "absent.safetensors"), "CheckpointError", "absent.safetensors"),
])
def test_bad_input_raises_the_documented_dal_error(tmp_path, call, error, words):
    with pytest.raises(getattr(dal, error), match=words):
        call(tmp_path)


def test_detector_runs_files_and_folders(tmp_path, checkpoint, cases):
    detector = dal.Detector.load(checkpoint)
    scan = save(tmp_path / "scan.nii.gz", phantom()[0])
    outcomes = list(detector.run([scan, cases], tmp_path / "out", contrast="t2", overlay=False))
    assert [o.scan.name for o in outcomes] == ["scan.nii.gz", "synth-0000_t2.nii.gz", "synth-0001_t2.nii.gz"]
    assert all(o.error is None and o.written["json"].is_file() for o in outcomes), [o.error for o in outcomes]
    # The folder's cases bring their brain masks.
    assert json.loads(outcomes[1].written["json"].read_text())["brain_mask"] == "given"
    with pytest.raises(dal.ArgumentError, match="one --mask per scan"):
        detector.run([scan, scan], tmp_path / "out", masks=[scan])


def test_evaluate_takes_a_loaded_detector(tmp_path, checkpoint, cases):
    report = dal.evaluate(cases, tmp_path / "eval", model=dal.Detector.load(checkpoint), overlays=False)
    assert report["summary"]["volumes"] == 2 and report["summary"]["lesion_volumes"] == 1
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_a_bug_shows_its_traceback_and_asks_for_a_report(tmp_path, monkeypatch, checkpoint):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("dal.api.synthesize", broken)
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError: a bug" in result.stderr and "report" in result.stderr
    # In a batch, the scan's bug is reported with its name and the other scans go on.
    monkeypatch.setattr("dal.engine.infer.Detector.predict", broken)
    scan = save(tmp_path / "scan.nii.gz", phantom()[0])
    result = CliRunner().invoke(main, ["infer", str(scan), "--model", str(checkpoint), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and f"scan {scan}" in result.stderr and "Traceback" in result.stderr
    assert "1 of 1 scan(s) failed" in result.stderr


def test_a_dal_error_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "s"), "--contrast", "xray"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "Error: contrasts: expected names from ('t1', 't2', 'flair', 'pd'), got 'xray'"]
