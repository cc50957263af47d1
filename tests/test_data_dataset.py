"""The slice data set: two augmented views of one slice, deterministic for a seed, worker-safe."""
import numpy as np
import pytest
import torch

from dal.data.augment import Augmentation
from dal.data.dataset import ModelVolume, SliceDataset, synthetic_volume
from dal.data.preprocess import PreprocessConfig, Preprocessor

CONFIG = PreprocessConfig(shape=(88, 104, 88))


@pytest.fixture(scope="module")
def volumes():
    return [synthetic_volume((3, i), contrast, preprocessor=Preprocessor(CONFIG)) for i, contrast in enumerate(("t1", "flair"))]


def test_synthetic_volumes_are_in_model_space(volumes):
    for volume in volumes:
        assert volume.image.shape == CONFIG.shape and volume.mask.shape == CONFIG.shape
        assert volume.tissue.shape == (3, *CONFIG.shape)
        np.testing.assert_allclose(volume.tissue.sum(axis=0)[volume.mask], 1, atol=1e-5)
        assert not volume.image[~volume.mask].any()
        assert abs(np.median(volume.image[volume.mask]) - CONFIG.norm_target) < 0.05


def test_items(volumes):
    dataset = SliceDataset(volumes, seed=0)
    item = dataset[len(dataset) // 2]
    assert set(item) == {"image", "view1", "view2", "mask", "tissue"}
    h, w = CONFIG.shape[:2]
    for key in ("image", "view1", "view2", "mask"):
        assert item[key].shape == (1, h, w) and item[key].dtype == torch.float32
    assert item["tissue"].shape == (4, h, w)
    torch.testing.assert_close(item["tissue"].sum(0), torch.ones(h, w))
    outside = item["mask"][0] == 0
    assert not item["view1"][0][outside].any() and not item["view2"][0][outside].any()
    # Two different imaging changes of one slice.
    assert not torch.allclose(item["view1"], item["view2"])
    assert not torch.allclose(item["view1"], item["image"])
    # Only slices inside the brain.
    assert all(volumes[n].mask[:, :, z].mean() >= 0.05 for n, z in dataset.slices)


def test_deterministic_for_a_seed_and_epoch(volumes):
    first, second = SliceDataset(volumes, seed=7), SliceDataset(volumes, seed=7)
    for index in (0, 5, len(first) - 1):
        for key, value in first[index].items():
            torch.testing.assert_close(value, second[index][key], rtol=0, atol=0)
    other = SliceDataset(volumes, seed=8)
    assert not torch.equal(first[5]["view1"], other[5]["view1"])
    before = first[5]["view1"]
    first.set_epoch(1)
    assert not torch.equal(before, first[5]["view1"])


def test_worker_processes_give_the_same_batches(volumes):
    dataset = SliceDataset(volumes, seed=1)
    indices = list(range(0, len(dataset), 7))[:12]
    subset = torch.utils.data.Subset(dataset, indices)
    in_process = next(iter(torch.utils.data.DataLoader(subset, batch_size=12)))
    workers = next(iter(torch.utils.data.DataLoader(subset, batch_size=12, num_workers=2)))
    for key in in_process:
        torch.testing.assert_close(in_process[key], workers[key], rtol=0, atol=0)


def test_without_tissue_maps_a_random_curve_changes_the_contrast(volumes):
    plain = [ModelVolume(v.image, v.mask) for v in volumes]
    dataset = SliceDataset(plain, seed=2)
    item = dataset[10]
    assert "tissue" not in item
    assert not torch.allclose(item["view1"], item["view2"])


def test_augmentation_keeps_anatomy_and_changes_tissue_means():
    rng = np.random.default_rng(0)
    tissue = np.zeros((3, 32, 32), np.float32)
    tissue[0, :, :10], tissue[1, :, 10:20], tissue[2, :, 20:] = 1, 1, 1
    image = (tissue * np.array([0.1, 0.5, 0.9])[:, None, None]).sum(0)
    mask = np.ones((32, 32), bool)
    quiet = Augmentation(gamma=(0, 0), bias=0, noise=(0, 0), blur_probability=0, tissue_contrast=(1, 1))
    view = quiet(image, mask, tissue, rng)
    means = [view[:, :10].mean(), view[:, 10:20].mean(), view[:, 20:].mean()]
    # Each tissue is uniform and takes a new mean of its own.
    for k, region in enumerate((slice(0, 10), slice(10, 20), slice(20, 32))):
        assert np.ptp(view[:, region]) < 1e-5
        assert quiet.tissue_mean[0] <= means[k] <= quiet.tissue_mean[1]
    assert not np.allclose(means, [0.1, 0.5, 0.9], atol=0.01)


def test_augmentation_config_round_trip():
    config = Augmentation(noise=(0.0, 0.1))
    assert Augmentation.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        Augmentation.from_dict({"elastic": 1})


def test_bad_volumes():
    with pytest.raises(ValueError, match="at least one"):
        SliceDataset([])
    empty = ModelVolume(np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), bool))
    with pytest.raises(ValueError, match="no slice"):
        SliceDataset([empty])


def test_load_volumes_from_a_synth_folder(tmp_path):
    from dal.data.dataset import load_volumes
    from dal.data.synthetic import write_dataset

    write_dataset(tmp_path, 2, ("t2",), ("none", "stroke"), seed=4, spacing=2, shape=(96, 112, 96))
    healthy, stroke = load_volumes(tmp_path, "t2", Preprocessor(CONFIG))
    assert healthy.name == "synth-0000" and healthy.image.shape == CONFIG.shape
    np.testing.assert_allclose(healthy.tissue.sum(axis=0)[healthy.mask], 1, atol=1e-5)
    assert not healthy.label.any() and stroke.label.any() and stroke.label.shape == CONFIG.shape
    assert len(SliceDataset([healthy])) > 20


def test_synthetic_volumes_with_lesions_carry_labels():
    volume = synthetic_volume((5, 0), "flair", "wmh", Preprocessor(CONFIG))
    assert not volume.healthy and volume.contrast == "flair" and volume.lesion == "wmh"
    assert volume.label.any() and np.all(volume.mask[volume.label > 0])
    # White-matter lesions are bright on FLAIR.
    assert np.median(volume.image[volume.label > 0]) > np.percentile(volume.image[volume.mask & (volume.label == 0)], 90)


def test_the_cache_gives_back_what_it_stored(tmp_path):
    made = synthetic_volume((6, 0), "t2", "stroke", Preprocessor(CONFIG), tissue=False, cache=tmp_path)
    again = synthetic_volume((6, 0), "t2", "stroke", Preprocessor(CONFIG), tissue=False, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1 and made.tissue is None
    for field in ("image", "mask", "label"):
        np.testing.assert_array_equal(getattr(made, field), getattr(again, field))


def test_validation_folder_keeps_the_healthy_cases_of_dal_synth(tmp_path):
    """Regression: ``dal train --val DIR`` read labels without allowing them empty, so every
    healthy case that ``dal synth`` writes was rejected ("every voxel is zero")."""
    from dal.data.synthetic import write_dataset
    from dal.engine.sources import folder_validation_volumes

    write_dataset(tmp_path, 2, ("flair",), ("none", "wmh"), seed=2, spacing=2, shape=(96, 112, 96))
    healthy, wmh = folder_validation_volumes(str(tmp_path), "flair", Preprocessor(CONFIG))
    assert healthy.healthy and healthy.label is not None and not wmh.healthy
    assert healthy.tissue is None and healthy.contrast == "flair"
