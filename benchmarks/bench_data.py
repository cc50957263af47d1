"""Speed of the data path: preprocessing a 1 mm scan to model space and back, `dal synth` of one
case, the slice data set, and registration to MNI152.

Run: PYTHONPATH=$PWD/python python -m pytest benchmarks/bench_data.py --benchmark-only -p no:cacheprovider
"""
import nibabel as nib
import numpy as np
import pytest
import torch

from dal.data.dataset import SliceDataset, synthetic_volume
from dal.data.io import Scan
from dal.data.preprocess import Preprocessor
from dal.data.registration import register_to_mni
from dal.data.synthetic import SYNTH_SHAPE, SYNTH_SPACING, generate_case, write_case


@pytest.fixture(scope="module")
def scan_1mm():
    """A 256 x 256 x 170 1 mm scan in LPS order (as DICOM converters often write), with its mask."""
    case = generate_case(1, ("flair",), "tumour", spacing=1.0, shape=(256, 256, 170))
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [255, 255]
    data = np.ascontiguousarray(case.images["flair"][::-1, ::-1])
    mask = np.ascontiguousarray(case.mask[::-1, ::-1])
    return Scan(data, case.affine @ flip, nib.Nifti1Header()), mask


@pytest.mark.benchmark(group="preprocess 256x256x170 1 mm -> 2 mm model space -> back")
def test_dal_preprocess_round_trip(benchmark, scan_1mm):
    scan, _ = scan_1mm
    preprocessor = Preprocessor()

    def round_trip():
        out = preprocessor.forward(scan)  # Otsu mask computed
        return preprocessor.inverse(out.image, out.state, restore_intensity=True)

    back = benchmark.pedantic(round_trip, rounds=5, iterations=1, warmup_rounds=1)
    assert back.shape == scan.data.shape


@pytest.mark.benchmark(group="preprocess 256x256x170 1 mm -> 2 mm model space -> back")
def test_dal_preprocess_round_trip_given_mask(benchmark, scan_1mm):
    scan, mask = scan_1mm
    preprocessor = Preprocessor()

    def round_trip():
        out = preprocessor.forward(scan, mask)
        return preprocessor.inverse(out.image, out.state, restore_intensity=True)

    benchmark.pedantic(round_trip, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="preprocess 256x256x170 1 mm -> 2 mm model space -> back")
def test_nilearn_resample_round_trip(benchmark, scan_1mm):
    """The peer: nilearn's scipy-based resampling to 2 mm and back (no mask, no normalisation)."""
    from nilearn.image import resample_img, resample_to_img

    scan, _ = scan_1mm
    image = nib.Nifti1Image(scan.data, scan.affine)

    def round_trip():
        low = resample_img(image, target_affine=np.diag([2.0, 2.0, 2.0]), interpolation="linear",
                           force_resample=True, copy_header=True)
        return resample_to_img(low, image, interpolation="linear", force_resample=True, copy_header=True)

    benchmark.pedantic(round_trip, rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group=f"dal synth: one case {'x'.join(map(str, SYNTH_SHAPE))} at {SYNTH_SPACING:g} mm, t1+t2+flair")
def test_synth_one_case_generate_and_write(benchmark, tmp_path):
    counter = iter(range(1000))

    def one_case():
        i = next(counter)
        case = generate_case((0, i), ("t1", "t2", "flair"), "tumour", spacing=SYNTH_SPACING, shape=SYNTH_SHAPE)
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        return write_case(case, folder, f"synth-{i:04d}")

    benchmark.pedantic(one_case, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group=f"dal synth: one case {'x'.join(map(str, SYNTH_SHAPE))} at {SYNTH_SPACING:g} mm, t1+t2+flair")
def test_synth_one_case_generate_only(benchmark):
    counter = iter(range(1000))
    benchmark.pedantic(lambda: generate_case((0, next(counter)), ("t1", "t2", "flair"), "tumour",
                                             spacing=SYNTH_SPACING, shape=SYNTH_SHAPE),
                       rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="synthetic healthy subject, 2 mm template grid, one contrast (training data)")
def test_synth_healthy_2mm(benchmark):
    counter = iter(range(1000))
    benchmark.pedantic(lambda: generate_case((1, next(counter)), ("t1",), "none"), rounds=5, iterations=1,
                       warmup_rounds=1)


@pytest.fixture(scope="module")
def slice_dataset():
    return SliceDataset([synthetic_volume((0, i), c) for i, c in enumerate(("t1", "t2"))], seed=0)


@pytest.mark.benchmark(group="slice data set: a batch of 32 items (two augmented views each), 96x112")
def test_slice_batch(benchmark, slice_dataset):
    rng = np.random.default_rng(0)

    def batch():
        indices = rng.choice(len(slice_dataset), 32, replace=False)
        return torch.utils.data.default_collate([slice_dataset[int(i)] for i in indices])

    benchmark(batch)


@pytest.mark.benchmark(group="affine registration to MNI152 (4 mm)")
def test_register_to_mni(benchmark, scan_1mm):
    scan, _ = scan_1mm
    benchmark.pedantic(lambda: register_to_mni(scan), rounds=3, iterations=1)
