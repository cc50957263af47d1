"""Data set layouts: each one found, contrasts picked, and clear errors."""
import json

import nibabel as nib
import numpy as np
import pytest

from dal.data.io import DataError
from dal.data.layouts import canonical_contrast, find_cases
from dal.data.synthetic import write_dataset


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4)), str(path))
    return path


def test_flat_ixi_like_folder(tmp_path):
    for subject in ("IXI002-Guys-0828", "IXI012-HH-1211"):
        for contrast in ("T1", "T2", "PD"):
            touch(tmp_path / f"{subject}-{contrast}.nii.gz")
    touch(tmp_path / "unnamed.nii")
    cases = find_cases(tmp_path)
    assert [c.id for c in cases] == ["IXI002-Guys-0828", "IXI012-HH-1211", "unnamed"]
    assert {c.layout for c in cases} == {"flat"}
    assert set(cases[0].images) == {"t1", "t2", "pd"}
    assert cases[1].image("T2w").name == "IXI012-HH-1211-T2.nii.gz"
    assert cases[2].image().name == "unnamed.nii"
    t2 = find_cases(tmp_path, contrast="t2")
    assert [c.id for c in t2] == ["IXI002-Guys-0828", "IXI012-HH-1211"]
    with pytest.raises(DataError, match="3 scans .*--contrast"):
        cases[0].image()


@pytest.mark.parametrize("names, case_ids", [
    ({"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg", "mask": "_mask"},
     ["BraTS2021_00000", "BraTS2021_00002"]),
    ({"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
     ["BraTS-GLI-00000-000", "BraTS-GLI-00002-000"]),
])
def test_brats_like_case_folders(tmp_path, names, case_ids):
    for case_id in case_ids:
        for suffix in names.values():
            touch(tmp_path / "TrainingData" / case_id / f"{case_id}{suffix}.nii.gz")
    cases = find_cases(tmp_path)
    assert [c.id for c in cases] == case_ids and {c.layout for c in cases} == {"BraTS-like"}
    for case in cases:
        assert set(case.images) == {"t1", "t1ce", "t2", "flair"}
        assert case.image("flair").name == f"{case.id}{names['flair']}.nii.gz"
        assert case.label.name == f"{case.id}{names['seg']}.nii.gz"
        assert (case.mask is not None) == ("mask" in names)


def test_bids_with_sessions_and_derivative_labels(tmp_path):
    touch(tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    touch(tmp_path / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz")
    touch(tmp_path / "sub-01" / "anat" / "sub-01_ce-gadolinium_T1w.nii.gz")
    touch(tmp_path / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T2w.nii.gz")
    touch(tmp_path / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_T2w.nii.gz")
    (tmp_path / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_T2w.json").write_text("{}")
    touch(tmp_path / "derivatives" / "lesions" / "sub-01" / "anat" / "sub-01_space-orig_desc-lesion_mask.nii.gz")
    touch(tmp_path / "derivatives" / "masks" / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz")
    touch(tmp_path / "derivatives" / "lesions" / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_label-lesion_roi.nii.gz")
    (tmp_path / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.8.0"}))
    cases = {c.id: c for c in find_cases(tmp_path)}
    assert sorted(cases) == ["sub-01", "sub-02_ses-1", "sub-02_ses-2"]
    assert set(cases["sub-01"].images) == {"t1", "flair", "t1ce"}
    assert cases["sub-01"].label.name == "sub-01_space-orig_desc-lesion_mask.nii.gz"
    assert cases["sub-01"].mask.name == "sub-01_desc-brain_mask.nii.gz"
    assert cases["sub-02_ses-1"].label is None
    assert cases["sub-02_ses-2"].label.name == "sub-02_ses-2_label-lesion_roi.nii.gz"
    assert [c.id for c in find_cases(tmp_path, contrast="T2w")] == ["sub-02_ses-1", "sub-02_ses-2"]


def test_dal_synth_folder(tmp_path):
    write_dataset(tmp_path, 2, ("t1", "flair"), ("wmh",), seed=1, spacing=2, shape=(96, 112, 96))
    cases = find_cases(tmp_path, contrast="flair")
    assert [c.id for c in cases] == ["synth-0000", "synth-0001"] and cases[0].layout == "dal synth"
    for case in cases:
        assert case.image("flair").is_file() and case.label.is_file() and case.mask.is_file()
        assert case.tissue.is_file()


def test_empty_folder_error_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("no scans here")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError) as error:
        find_cases(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "no usable scan" in message
    for expected in ("manifest.json", "BIDS", "_T2w", "IXI", "BraTS", "_flair", "-t2f"):
        assert expected in message


def test_missing_folder_and_missing_contrast(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        find_cases(tmp_path / "absent")
    touch(tmp_path / "a_t1.nii.gz")
    with pytest.raises(DataError, match="no flair scan; the scans found are t1"):
        find_cases(tmp_path, contrast="flair")
    with pytest.raises(DataError, match="unknown"):
        find_cases(tmp_path, contrast="dwi")


@pytest.mark.parametrize("alias, name", [("T1w", "t1"), ("t1n", "t1"), ("T1c", "t1ce"), ("t2w", "t2"),
                                         ("T2-FLAIR", "flair"), ("t2f", "flair"), ("PDw", "pd")])
def test_contrast_aliases(alias, name):
    assert canonical_contrast(alias) == name


def test_the_contrast_a_file_name_declares():
    from dal.data.layouts import contrast_of_file

    assert contrast_of_file("sub-01_ses-1_T2w.nii.gz") == "t2" and contrast_of_file("/d/case_flair.nii") == "flair"
    assert contrast_of_file("BraTS-GLI-00000-000-t1n.nii.gz") == "t1" and contrast_of_file("scan.nii.gz") is None
    assert contrast_of_file("case_seg.nii.gz") is None  # a role, not a contrast
