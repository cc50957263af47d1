"""NIfTI loading: every bad input raises DataError naming the file and the problem."""
import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from dal.data.io import DataError, image_like, load_mask, load_scan, save_nifti


def write(path, data, affine=None):
    header = nib.Nifti1Header()
    if affine is not None:  # through the sform rows, as nibabel refuses to set a singular affine
        for row, name in enumerate(("srow_x", "srow_y", "srow_z")):
            header[name] = affine[row]
        header["sform_code"] = 1
    nib.save(nib.Nifti1Image(np.asarray(data), None, header), str(path))
    return path


def good_volume():
    return np.random.default_rng(0).random((6, 7, 8)).astype(np.float32) + 0.1


def test_loads_a_valid_scan(tmp_path):
    affine = np.diag([2.0, 1.5, 1.0, 1.0])
    scan = load_scan(write(tmp_path / "a.nii.gz", good_volume(), affine))
    assert scan.data.shape == (6, 7, 8) and scan.data.dtype == np.float32
    np.testing.assert_allclose(scan.affine, affine)
    np.testing.assert_allclose(scan.spacing, [2.0, 1.5, 1.0])
    np.testing.assert_allclose(scan.data, good_volume())


def test_squeezes_a_singleton_fourth_dimension(tmp_path):
    scan = load_scan(write(tmp_path / "a.nii", good_volume()[..., None]))
    assert scan.data.shape == (6, 7, 8)


@pytest.mark.parametrize("name, data, affine, problem", [
    ("four_d.nii.gz", np.ones((4, 4, 4, 2)), None, "expected a 3D volume"),
    ("two_d.nii.gz", np.ones((4, 4)), None, "expected a 3D volume"),
    ("flat.nii.gz", np.ones((4, 4, 1)), None, "every axis needs 2 voxels"),
    ("nan.nii.gz", np.where(np.eye(4)[..., None] > 0, np.nan, 1.0) * np.ones((4, 4, 3)), None, "NaN or infinite"),
    ("inf.nii.gz", np.full((4, 4, 3), np.inf), None, "NaN or infinite"),
    ("zero.nii.gz", np.zeros((4, 4, 3)), None, "every voxel is zero"),
    ("singular.nii.gz", np.ones((4, 4, 3)), np.diag([1.0, 0.0, 1.0, 1.0]), "affine"),
    ("huge_voxels.nii.gz", np.ones((4, 4, 3)), np.diag([1.0, 100.0, 1.0, 1.0]), "voxel sizes"),
])
def test_bad_volume_raises_data_error_naming_file_and_problem(tmp_path, name, data, affine, problem):
    path = write(tmp_path / name, data.astype(np.float32), affine)
    with pytest.raises(DataError, match=problem) as error:
        load_scan(path)
    assert str(path) in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as error:
        load_scan(tmp_path / "absent.nii.gz")
    assert "absent.nii.gz" in str(error.value)


def test_not_a_nifti_name(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="not a NIfTI file"):
        load_scan(path)


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "dir.nii.gz").mkdir()
    with pytest.raises(DataError, match="not a file"):
        load_scan(tmp_path / "dir.nii.gz")


@pytest.mark.parametrize("content", [b"not a nifti at all", gzip.compress(b"garbage" * 100)])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot be read as NIfTI") as error:
        load_scan(path)
    assert str(path) in str(error.value)


def test_mask_on_another_grid(tmp_path):
    scan = load_scan(write(tmp_path / "scan.nii.gz", good_volume()))
    with pytest.raises(DataError, match="shape"):
        load_mask(write(tmp_path / "m1.nii.gz", np.ones((6, 7, 9), np.uint8)), scan)
    with pytest.raises(DataError, match="affine differs"):
        load_mask(write(tmp_path / "m2.nii.gz", np.ones((6, 7, 8), np.uint8), np.diag([2.0, 1, 1, 1])), scan)
    mask = load_mask(write(tmp_path / "m3.nii.gz", (good_volume() > 0.5).astype(np.uint8)), scan)
    assert mask.dtype == bool and mask.sum() == (good_volume() > 0.5).sum()


def test_empty_label_allowed_only_when_asked(tmp_path):
    path = write(tmp_path / "seg.nii.gz", np.zeros((4, 4, 3), np.uint8))
    assert not load_mask(path, kind="label", allow_zero=True).any()
    with pytest.raises(DataError, match="label .*every voxel is zero"):
        load_mask(path, kind="label")


def test_save_is_atomic_and_keeps_the_header(tmp_path):
    source = nib.Nifti1Image(good_volume(), np.diag([-1.0, -1.0, 1.0, 1.0]))
    source.header["descrip"] = b"from the scanner"
    source.set_qform(source.affine, 2)
    source.set_sform(source.affine, 4)
    out = save_nifti(good_volume() * 2, source.affine, tmp_path / "out" / "map.nii.gz", header=source.header)
    assert sorted(os.listdir(tmp_path / "out")) == ["map.nii.gz"]
    loaded = nib.load(str(out))
    assert loaded.header["descrip"].tobytes().startswith(b"from the scanner")
    assert int(loaded.header["qform_code"]) == 2 and int(loaded.header["sform_code"]) == 4
    np.testing.assert_allclose(loaded.affine, source.affine)
    np.testing.assert_allclose(loaded.get_fdata(), good_volume() * 2, rtol=1e-6)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask


def test_image_like_sets_dtype_without_scaling():
    image = image_like(np.ones((2, 2, 2)), np.eye(4), nib.Nifti1Header(), np.uint8)
    assert image.get_data_dtype() == np.uint8


def test_tissue_maps(tmp_path):
    from dal.data.io import load_tissue

    maps = np.random.default_rng(1).dirichlet([1, 1, 1], size=(6, 7, 8)).astype(np.float32)
    tissue = load_tissue(write(tmp_path / "t.nii.gz", maps))
    assert tissue.shape == (3, 6, 7, 8)
    np.testing.assert_allclose(tissue.sum(0), 1, atol=1e-5)
    with pytest.raises(DataError, match="4D"):
        load_tissue(write(tmp_path / "3d.nii.gz", maps[..., 0]))
    with pytest.raises(DataError, match="probabilities"):
        load_tissue(write(tmp_path / "big.nii.gz", maps * 3))
    with pytest.raises(DataError, match="grid"):
        load_tissue(tmp_path / "t.nii.gz", load_scan(write(tmp_path / "s.nii.gz", good_volume()[:5] + 1)))
