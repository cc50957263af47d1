"""Lesions implanted into a real anatomy (`dal synth --anatomy`): tissue from maps, labels or a fit;
the scan kept outside the lesions; the lesion model's intensities on the scan's own scale."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
from click.testing import CliRunner

from dal.cli import main
from dal.data.anatomy import load_anatomy
from dal.data.io import DataError, save_nifti
from dal.data.synthetic import generate_case

ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """A stand-in real subject: a healthy generated T1 on a 2x2x3 mm grid, written as NIfTI with
    its mask, tissue maps and FAST-style labels (the generator's own cases are not what is
    tested: its files are read back as any scan would be)."""
    folder = tmp_path_factory.mktemp("subject")
    case = generate_case(77, "t1", "none", spacing=2.5, shape=(64, 76, 64))
    affine = case.affine
    save_nifti(np.round(case.images["t1"]), affine, folder / "t1.nii.gz", dtype=np.int16)
    save_nifti(case.mask, affine, folder / "mask.nii.gz", dtype=np.uint8)
    save_nifti(np.moveaxis(case.tissue, 0, -1), affine, folder / "tissue.nii.gz", dtype=np.float32)
    labels = np.where(case.mask, case.tissue.argmax(axis=0) + 1, 0)
    save_nifti(labels, affine, folder / "labels.nii.gz", dtype=np.uint8)
    return folder, case


@pytest.mark.parametrize("tissue", ["tissue.nii.gz", "labels.nii.gz", None])
def test_tissue_comes_from_maps_labels_or_a_fit_and_agrees_with_the_truth(subject, tissue):
    folder, case = subject
    anatomy = load_anatomy(folder / "t1.nii.gz", tissue=None if tissue is None else folder / tissue,
                           mask=folder / "mask.nii.gz")
    assert anatomy.tissue.shape == (3, *case.mask.shape) and anatomy.contrast == "t1"
    np.testing.assert_allclose(anatomy.tissue.sum(axis=0)[anatomy.mask], 1, atol=1e-5)
    assert not anatomy.tissue[:, ~anatomy.mask].any()
    pure = anatomy.mask & (case.tissue.max(axis=0) > 0.9)  # away from partial volume
    agree = (anatomy.tissue.argmax(axis=0) == case.tissue.argmax(axis=0))[pure].mean()
    assert agree > (0.99 if tissue else 0.85), agree


def test_lesions_change_the_real_scan_only_in_the_label_and_keep_it_elsewhere(subject):
    folder, _ = subject
    anatomy = load_anatomy(folder / "t1.nii.gz", tissue=folder / "tissue.nii.gz", mask=folder / "mask.nii.gz")
    for lesion in ("stroke", "wmh"):
        case = generate_case(5, ("t1", "flair"), lesion, anatomy=anatomy, return_healthy=True)
        label = case.label > 0
        assert label.any() and not label[~anatomy.mask].any()
        np.testing.assert_array_equal(case.healthy["t1"], anatomy.image)  # the subject's own scan
        np.testing.assert_array_equal(case.images["t1"][~label & (case.tissue.sum(0) > 0)
                                                        & ~ndi.binary_dilation(label, iterations=1)],
                                      anatomy.image[~label & (case.tissue.sum(0) > 0)
                                                    & ~ndi.binary_dilation(label, iterations=1)])
        wm = (anatomy.tissue[2] > 0.9) & ~ndi.binary_dilation(label, iterations=3)
        # The lesion model's contrast on this scan's scale: dark on T1, bright on FLAIR.
        assert np.median(case.images["t1"][label]) < 0.85 * np.median(anatomy.image[wm])
        assert np.median(case.images["flair"][label]) > 1.3 * np.median(case.images["flair"][wm])
    again = generate_case(5, ("t1", "flair"), "wmh", anatomy=anatomy)
    np.testing.assert_array_equal(again.images["flair"], case.images["flair"])  # deterministic for a seed


def test_a_tumour_pushes_the_real_anatomy_out(subject):
    folder, _ = subject
    anatomy = load_anatomy(folder / "t1.nii.gz", tissue=folder / "tissue.nii.gz", mask=folder / "mask.nii.gz")
    case = generate_case(8, "t1", "tumour", anatomy=anatomy)
    label = case.label > 0
    near = ndi.binary_dilation(label, iterations=3) & ~label
    far = ~ndi.binary_dilation(label, iterations=12)
    moved = np.abs(case.tissue - anatomy.tissue)
    assert moved[:, near].mean() > 10 * max(moved[:, far].mean(), 1e-4)


def test_bad_anatomy_inputs_name_the_file(subject, tmp_path):
    folder, case = subject
    with pytest.raises(DataError, match="anatomy-contrast"):
        load_anatomy(folder / "t1.nii.gz", contrast="t3")
    save_nifti(np.ones((4, 4, 4)), np.eye(4), tmp_path / "small.nii.gz")
    with pytest.raises(DataError, match="tissue labels .*shape"):
        load_anatomy(folder / "t1.nii.gz", tissue=tmp_path / "small.nii.gz")
    save_nifti(np.where(case.mask, 7, 0), case.affine, tmp_path / "sevens.nii.gz", dtype=np.uint8)
    with pytest.raises(DataError, match="expected labels 1"):
        load_anatomy(folder / "t1.nii.gz", tissue=tmp_path / "sevens.nii.gz", mask=folder / "mask.nii.gz")
    with pytest.raises(ValueError, match="spacing, shape"):
        generate_case(1, "t1", "none", spacing=2.0, anatomy=load_anatomy(folder / "t1.nii.gz"))


def test_dal_synth_anatomy_writes_a_labelled_set_on_the_scan_grid(subject, tmp_path):
    folder, case = subject
    runner = CliRunner()
    result = runner.invoke(main, ["synth", "--out", str(tmp_path / "real"), "--n", "2", "--contrast", "t1,t2",
                                  "--lesions", "none,stroke", "--anatomy", str(folder / "t1.nii.gz"),
                                  "--anatomy-mask", str(folder / "mask.nii.gz")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "real" / "manifest.json").read_text())
    assert manifest["anatomy"] == {"name": "t1", "contrast": "t1"}
    scan = nib.load(str(tmp_path / "real" / manifest["cases"][1]["files"]["t2"]))
    assert scan.shape == case.mask.shape and np.allclose(scan.affine, case.affine)
    assert np.asarray(nib.load(str(tmp_path / "real" / manifest["cases"][1]["files"]["seg"])).dataobj).any()
    result = runner.invoke(main, ["synth", "--out", str(tmp_path / "x"), "--tissue", str(folder / "labels.nii.gz")])
    assert result.exit_code != 0 and "--anatomy" in result.output


@pytest.mark.skipif(not (ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz").is_file(),
                    reason="Debian's insighttoolkit5-examples is not installed (the real T1 of the README's test)")
def test_the_itk_real_t1_gets_a_three_class_fit_and_lesions():
    anatomy = load_anatomy(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz", mask=ITK_DATA / "KmeansTest_T1RawSkullStrip.nii.gz")
    medians = [np.median(anatomy.image[anatomy.tissue[k] > 0.5]) for k in range(3)]
    assert medians[0] < medians[1] < medians[2]  # T1: CSF darker than GM darker than WM
    volumes = anatomy.tissue.reshape(3, -1).sum(axis=1) * 12 / 1000  # 2x2x3 mm voxels, ml
    assert 900 < volumes.sum() < 1800 and volumes[2] > 250
    case = generate_case(3, ("t1", "flair"), "wmh", anatomy=anatomy)
    assert case.images["flair"].shape == anatomy.mask.shape and (case.label > 0).sum() > 5
