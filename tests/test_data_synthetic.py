"""The synthetic population: determinism, tissue maps, lesions where intensities changed, dal synth."""
import json

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
from click.testing import CliRunner

from dal.cli import main
from dal.data.synthetic import (CONTRASTS, TISSUE_INTENSITY, TUMOUR_LABELS, generate_case, generate_healthy,
                                quantise_tissue, write_dataset)
from dal.data.templates import load_mni152


def test_template_tissue_maps_sum_to_one_in_the_brain():
    template = load_mni152(2)
    total = template.tissue.sum(axis=0)
    np.testing.assert_allclose(total[template.mask], 1, atol=1e-5)
    assert not total[~template.mask].any() and template.tissue.min() >= 0


def test_same_seed_same_case_and_other_seed_another():
    first = generate_case(3, ("t1", "flair"), "wmh")
    second = generate_case(3, ("t1", "flair"), "wmh")
    for contrast in ("t1", "flair"):
        np.testing.assert_array_equal(first.images[contrast], second.images[contrast])
    np.testing.assert_array_equal(first.label, second.label)
    np.testing.assert_array_equal(first.tissue, second.tissue)
    other = generate_case(4, ("t1", "flair"), "wmh")
    assert not np.array_equal(first.images["t1"], other.images["t1"])
    assert not np.array_equal(first.tissue, other.tissue)


def test_anatomy_and_contrast_do_not_depend_on_what_else_is_asked():
    alone = generate_case((9, 2), "t2", "none")
    together = generate_case((9, 2), ("t1", "t2"), "stroke")  # a stroke has no mass effect
    np.testing.assert_array_equal(alone.tissue, together.tissue)
    unchanged = together.label == 0
    dilated = ndi.binary_dilation(~unchanged, iterations=2)
    # Same noise and bias: away from the lesion (blur tails aside) the scans agree.
    np.testing.assert_allclose(alone.images["t2"][~dilated], together.images["t2"][~dilated], rtol=0.005)
    far = ~ndi.binary_dilation(~unchanged, iterations=5)
    np.testing.assert_array_equal(alone.images["t2"][far], together.images["t2"][far])


@pytest.mark.parametrize("lesion", ["none", "tumour", "stroke", "wmh"])
def test_tissue_maps_sum_to_one_inside_the_brain(lesion):
    case = generate_case(21, "t1", lesion)
    total = case.tissue.sum(axis=0)
    assert case.tissue.shape == (3, *case.mask.shape) and case.tissue.dtype == np.float32
    np.testing.assert_allclose(total[case.mask], 1, atol=1e-5)
    assert not total[~case.mask].any() and case.tissue.min() >= 0
    assert not case.images["t1"][~case.mask].any()  # skull-stripped


@pytest.mark.parametrize("lesion", ["tumour", "stroke", "wmh"])
@pytest.mark.parametrize("contrast", ["t1", "flair"])
def test_labels_lie_where_the_intensities_changed(lesion, contrast):
    case = generate_case(30, (contrast,), lesion, return_healthy=True)
    label = case.label > 0
    assert label.any() and case.info["lesion_voxels"] == label.sum()
    change = np.abs(case.images[contrast] - case.healthy[contrast])
    typical = np.median(case.healthy[contrast][case.mask])
    changed = change > 0.05 * typical
    # What changed lies in the label, give or take the partial-volume edge (under a quarter lesion)
    # and the blur.
    assert changed[~ndi.binary_dilation(label, iterations=2)].sum() <= 0.005 * label.sum()
    assert change[~ndi.binary_dilation(label, iterations=3)].max() < 0.1 * typical
    # And the label holds real changes: most of it differs clearly from the healthy scan.
    assert changed[label].mean() > 0.6
    assert np.median(change[label]) > 0.15 * typical


def test_lesion_intensities_fit_the_contrast():
    case = generate_case(31, ("t1", "t2", "flair"), "stroke", return_healthy=True)
    label = case.label > 0
    wm = (case.tissue[2] > 0.9) & ~ndi.binary_dilation(label, iterations=3)
    # An infarct is dark on T1, bright on T2 and FLAIR, relative to white matter.
    assert np.median(case.images["t1"][label]) < 0.7 * np.median(case.images["t1"][wm])
    assert np.median(case.images["t2"][label]) > 1.5 * np.median(case.images["t2"][wm])
    assert np.median(case.images["flair"][label]) > 1.5 * np.median(case.images["flair"][wm])


def test_tumour_has_core_rim_oedema_and_mass_effect():
    case = generate_case(32, ("flair",), "tumour")
    assert set(np.unique(case.label)) == {0, *TUMOUR_LABELS.values()}
    plain = generate_case(32, ("flair",), "none")
    # Mass effect: the anatomy around the tumour moved; far from it the two subjects agree.
    label = case.label > 0
    near = ndi.binary_dilation(label, iterations=4) & ~label
    far = ~ndi.binary_dilation(label, iterations=20)
    moved_near = np.abs(case.tissue - plain.tissue)[:, near].mean()
    moved_far = np.abs(case.tissue - plain.tissue)[:, far].mean()
    assert moved_near > 10 * max(moved_far, 1e-4)


@pytest.mark.parametrize("contrast", CONTRASTS)
def test_tissue_contrast_order(contrast):
    case = generate_healthy(40, contrast)
    medians = [np.median(case.images[contrast][(case.tissue[k] > 0.9)]) for k in range(3)]
    expected = [TISSUE_INTENSITY[contrast][t] for t in ("csf", "gm", "wm")]
    # The order of the tissues' intensities is the contrast's (ties within 15% ignored).
    for a in range(3):
        for b in range(3):
            if expected[a] > 1.15 * expected[b]:
                assert medians[a] > medians[b], (contrast, a, b, medians)


def test_other_grid():
    case = generate_case(5, "t1", "wmh", spacing=1.5, shape=(100, 120, 100))
    assert case.images["t1"].shape == (100, 120, 100)
    np.testing.assert_allclose(np.diag(case.affine)[:3], 1.5)
    assert case.mask.sum() * 1.5 ** 3 > 1.2e6  # a whole brain, in mm^3


@pytest.mark.parametrize("kwargs, message", [
    ({"contrasts": "t3"}, "contrasts"), ({"lesion": "cyst"}, "lesion"), ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"), ({"shape": (4, 4, 4)}, "shape"),
])
def test_bad_arguments(kwargs, message):
    arguments = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_case(**arguments)


def test_quantised_tissue_still_sums_to_one():
    case = generate_case(6, "t1", "none")
    stored = quantise_tissue(case.tissue)
    total = stored.sum(axis=0)
    assert np.array_equal(total[case.mask], np.ones(case.mask.sum(), np.float32))
    assert stored.min() >= 0 and np.abs(stored - case.tissue).max() <= 1.5 / 1024


def read(path):
    return np.asarray(nib.load(str(path)).dataobj)


def test_dal_synth_writes_a_deterministic_brats_like_layout(tmp_path):
    arguments = ["synth", "--n", "2", "--contrast", "t1,flair", "--lesions", "tumour,none", "--seed", "5",
                 "--spacing", "2", "--shape", "96,112,96"]
    runner = CliRunner()
    for folder in ("a", "b"):
        result = runner.invoke(main, [*arguments, "--out", str(tmp_path / folder)])
        assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["generator"] == "dal synth" and manifest["count"] == 2
    assert [case["lesion"] for case in manifest["cases"]] == ["tumour", "none"]
    for case in manifest["cases"]:
        assert set(case["files"]) == {"t1", "flair", "seg", "mask", "tissue"}
        for role, name in case["files"].items():
            a, b = read(tmp_path / "a" / name), read(tmp_path / "b" / name)
            np.testing.assert_array_equal(a, b)
        image = nib.load(str(tmp_path / "a" / case["files"]["t1"]))
        assert image.shape == (96, 112, 96) and np.allclose(image.affine, manifest["affine"])
        assert read(tmp_path / "a" / case["files"]["tissue"]).shape == (96, 112, 96, 3)
    assert read(tmp_path / "a" / manifest["cases"][0]["files"]["seg"]).any()
    assert not read(tmp_path / "a" / manifest["cases"][1]["files"]["seg"]).any()
    assert not [p for p in (tmp_path / "a").rglob("*") if ".tmp" in p.name]
    # The files hold the generator's case (scans rounded to int16).
    case = generate_case((5, 0), ("t1", "flair"), "tumour", spacing=2, shape=(96, 112, 96))
    np.testing.assert_array_equal(read(tmp_path / "a" / manifest["cases"][0]["files"]["flair"]),
                                  np.round(case.images["flair"]))


def test_dal_synth_refuses_to_overwrite_and_checks_names(tmp_path):
    write_dataset(tmp_path, 1, ("t1",), ("none",), spacing=2, shape=(96, 112, 96))
    runner = CliRunner()
    result = runner.invoke(main, ["synth", "--out", str(tmp_path), "--n", "1", "--contrast", "t1", "--spacing", "2",
                                  "--shape", "96,112,96"])
    assert result.exit_code == 1 and "give --overwrite" in result.output
    result = runner.invoke(main, ["synth", "--out", str(tmp_path / "x"), "--lesions", "tumour,cyst"])
    assert result.exit_code != 0 and "lesions" in result.output and "'cyst'" in result.output
    result = runner.invoke(main, ["synth", "--out", str(tmp_path / "x"), "--shape", "96,112"])
    assert result.exit_code != 0 and "--shape" in result.output
