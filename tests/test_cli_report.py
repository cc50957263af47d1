"""What a user sees of the commands: one --device default, no empty folder after a failure, no
progress bar copied into a log, and lesions counted as lesions."""
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from dal.cli import main
from dal.engine.infer import Detector, count_lesions
from dal.engine.report import colour_range, overlay_figure

from infer_phantoms import oracle_checkpoint, phantom, ras_affine, save, tiny_checkpoint


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


@pytest.fixture(scope="module")
def oracle():
    return Detector(oracle_checkpoint())


def test_one_threshold_makes_the_mask_the_outline_and_the_colour_start(oracle):
    scan, label, _ = phantom()
    result = oracle.predict(nib.Nifti1Image(scan, ras_affine()), name="case")
    figure = overlay_figure(result, label=label)
    images = [axes.images[-1] for axes in figure.axes if axes.images]
    assert len(images) == 3 and {image.get_clim() for image in images} == {colour_range(result.threshold)}
    texts = " ".join(t.get_text() for legend in figure.legends for t in legend.get_texts())
    assert f"score >= {result.threshold:.3g}" in texts and "label (ground truth)" in texts
    assert "colour: score" in texts and figure.texts and "calibrated: 1%" in figure.get_suptitle()
    assert "label" not in " ".join(t.get_text() for t in overlay_figure(result).legends[0].get_texts())
    summary = result.summary()
    assert summary["threshold_source"] == "fpr_0.01" and "one threshold" in summary["threshold_rule"]
    assert "closer than 5 mm" in summary["lesion_count_rule"] and summary["lesion_count"] == 1
    # the colour scale is the checkpoint's, not the scan's: another peak, the same colours
    brighter = oracle.predict(nib.Nifti1Image(np.where(label > 0, scan * 1.5, scan), ras_affine()), name="b")
    assert brighter.peak_score > result.peak_score
    assert overlay_figure(brighter).axes[0].images[-1].get_clim() == images[0].get_clim()


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_the_pseudo_healthy_image_keeps_the_scans_data_type(tmp_path, oracle, dtype):
    scan = phantom()[0] * (0.5 if dtype == np.uint8 else 1.0)
    path = save(tmp_path / "s.nii.gz", np.round(scan), dtype=dtype)
    result = oracle.predict(path)
    written = nib.load(result.save(tmp_path / "out", overlay=False)["phi"])
    assert written.get_data_dtype() == dtype
    step = (np.ptp(result.phi) / np.iinfo(dtype).max) if dtype != np.float32 else 1e-6
    assert np.abs(written.get_fdata() - result.phi).max() <= max(step, 1e-6) + 1e-6
