"""What a user sees of the commands: one --device default, no empty folder after a failure, no
progress bar copied into a log, and lesions counted as lesions."""
import numpy as np
import pytest
from click.testing import CliRunner

from dal.cli import main
from dal.engine.infer import count_lesions

from infer_phantoms import phantom, save, tiny_checkpoint


@pytest.mark.parametrize("command", ["infer", "evaluate", "train"])
def test_every_command_defaults_to_the_same_device(command):
    device = next(p for p in main.commands[command].params if p.name == "device")
    assert device.default in ("auto", None)  # train: None, its config's "auto"
    assert "auto" in device.help and "cpu" in device.help


def test_train_config_device_is_auto():
    from dal.engine.config import Config

    assert Config().train.device == "auto"


def test_a_failed_evaluate_leaves_no_folder_it_created(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.safetensors")
    run = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "nowhere"), "--model", str(model),
                                    "--out", str(tmp_path / "new" / "report")])
    assert run.exit_code == 1 and "no such folder" in run.stderr
    assert not (tmp_path / "new" / "report").exists()
    (tmp_path / "mine").mkdir()  # a folder of the user's stays, even empty
    CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "nowhere"), "--model", str(model),
                              "--out", str(tmp_path / "mine")])
    assert (tmp_path / "mine").is_dir()


def test_no_progress_bar_goes_into_a_log(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.safetensors")
    scans = [save(tmp_path / f"s{i}.nii.gz", phantom(seed=i)[0]) for i in range(2)]
    run = CliRunner().invoke(main, ["infer", *map(str, scans), "--model", str(model), "--out", str(tmp_path / "o"),
                                    "--no-overlay", "--threads", "1"])
    assert run.exit_code == 0, run.output
    assert "\r" not in run.stderr and "scan/s" not in run.stderr and "it/s" not in run.stderr
    assert run.stdout.count("lesion(s)") == 2  # a plain line a scan


def test_lesions_closer_than_the_median_window_are_one():
    mask = np.zeros((40, 40, 40), bool)
    mask[5:10, 5:10, 5:10] = True
    mask[5:10, 5:10, 13:18] = True  # 3 voxels (3 mm) away: the same tumour cut by a band
    mask[30:35, 30:35, 30:35] = True  # far away: another lesion
    assert count_lesions(mask, (1.0, 1.0, 1.0), merge_mm=5.0) == 2
    assert count_lesions(mask, (1.0, 1.0, 1.0), merge_mm=0.0) == 3
    assert count_lesions(mask, (2.0, 2.0, 2.0), merge_mm=5.0) == 3  # at 2 mm the gap is 6 mm
    assert count_lesions(np.zeros((5, 5, 5), bool), (1, 1, 1), 5.0) == 0
