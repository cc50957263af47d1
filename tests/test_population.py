"""The healthy population (scoring.population): voxel statistics, the maps' storage, the residual
weighed against them, and the population fitted by dal train and used by dal infer."""
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn

from dal.data.synthetic import generate_case
from dal.engine.checkpoint import load_checkpoint, save_checkpoint
from dal.engine.config import Config, ConfigError, checkpoint_scoring
from dal.engine.infer import Detector
from dal.engine.population import (HealthyPopulation, fit_population, population_residual, tissue_prior_term,
                                   white_matter_prior)
from dal.engine.scoring import score_volume
from dal.engine.train import train
from dal.errors import ArgumentError, CheckpointError
from dal.models.population import voxel_statistics
from test_train import cache, tiny_config  # noqa: F401 (cache: the fixture of the shared synthetic cache)

SHAPE = (20, 24, 16)


def _brain() -> torch.Tensor:
    brain = torch.zeros(SHAPE, dtype=torch.bool)
    brain[3:17, 3:21, 3:13] = True
    return brain


def _population(seed: int = 0, scans: int = 6) -> tuple[dict, dict, dict]:
    generator = torch.Generator().manual_seed(seed)
    brain = _brain()
    residuals = [torch.rand(SHAPE, generator=generator) * brain for _ in range(scans)]
    images = [(1 + 0.1 * torch.randn(SHAPE, generator=generator)) * brain for _ in range(scans)]
    return {"t2": residuals}, {"t2": images}, {"t2": [brain] * scans}


def test_voxel_statistics_are_numpys_mean_and_std_inside_the_population_brain():
    rng = np.random.default_rng(0)
    images = [rng.normal(2.0, 0.5, SHAPE) for _ in range(5)]
    masks = [np.ones(SHAPE, bool) for _ in range(4)] + [np.zeros(SHAPE, bool)]  # the last scan has no brain
    mean, std, inside = voxel_statistics(images, masks)
    stack = np.stack(images[:4])
    np.testing.assert_allclose(mean.numpy(), stack.mean(0), rtol=1e-5)
    floor = np.quantile(stack.std(0, ddof=1), 0.1)
    np.testing.assert_allclose(std.numpy(), np.maximum(stack.std(0, ddof=1), floor), rtol=1e-4)
    assert bool(inside.all())
    # Fewer than half the scans with brain: outside, 0.
    masks = [np.zeros(SHAPE, bool)] * 3 + [np.ones(SHAPE, bool)] * 2
    mean, std, inside = voxel_statistics(images, masks)
    assert not bool(inside.any()) and float(mean.abs().max()) == 0 and float(std.abs().max()) == 0
    with pytest.raises(ArgumentError, match="masks"):
        voxel_statistics(images, masks[:2])


def test_smoothing_keeps_a_constant_field_and_reduces_noise():
    rng = np.random.default_rng(1)
    brain = _brain().numpy()
    constant = [np.where(brain, 3.0 + i, 0) for i in range(4)]  # each voxel's mean 4.5 over the scans
    mean, _, inside = voxel_statistics(constant, [brain] * 4, smooth_voxels=1.0)
    np.testing.assert_allclose(mean[inside].numpy(), 4.5, rtol=1e-5)  # the edge is not pulled towards the zeros outside
    noisy = [rng.normal(1.0, 1.0, SHAPE) for _ in range(4)]
    rough, _, _ = voxel_statistics(noisy, [brain] * 4)
    smooth, _, _ = voxel_statistics(noisy, [brain] * 4, smooth_voxels=1.0)
    assert float(smooth[inside].std()) < 0.6 * float(rough[inside].std())


def test_the_stored_maps_are_half_resolution_float16_and_come_back_close():
    residuals, images, masks = _population()
    population = fit_population(residuals, images, masks, spacing_mm=2.0)  # as stored
    tensors = population.to_tensors()
    assert set(tensors) == {f"population.t2.{name}" for name in ("residual_std", "mean", "std", "brain")}
    assert all(t.dtype == torch.float16 and tuple(t.shape) == (10, 12, 8) for t in tensors.values())
    back = HealthyPopulation.from_tensors(tensors, population.metadata(), SHAPE, "test")
    brain = _brain()
    full = {"mean": voxel_statistics(images["t2"], masks["t2"], 1.0)[0], "std": voxel_statistics(images["t2"], masks["t2"], 1.0)[1],
            "residual_std": voxel_statistics(residuals["t2"], masks["t2"], 1.0)[1]}  # at full resolution
    for name in ("residual_std", "mean", "std"):
        fitted, stored = full[name][brain], back.maps["t2"][name][brain]
        assert float((fitted - stored).abs().mean()) < 0.05 * float(fitted.abs().mean()), name
        assert float((fitted - stored).abs().max()) < 0.3 * float(fitted.abs().mean()), name
        # fit_population returns the maps as stored: a second storage round trip barely moves them
        assert float((population.maps["t2"][name] - back.maps["t2"][name])[brain].abs().mean()) < 0.02 * float(fitted.abs().mean())
    assert bool((back.maps["t2"]["std"][brain] > 0).all())  # every brain voxel stays inside
    assert back.volumes == {"t2": 6} and back.for_contrast("t2") is back.maps["t2"] and back.for_contrast("t1") is None
    with pytest.raises(CheckpointError, match="population.t2.std"):
        HealthyPopulation.from_tensors({k: v for k, v in tensors.items() if not k.endswith(".std")},
                                       population.metadata(), SHAPE, "test")
    with pytest.raises(CheckpointError, match="expected a finite volume of shape"):  # maps of another model space
        HealthyPopulation.from_tensors(tensors, population.metadata(), (40, 48, 32), "test")


def test_maps_of_an_odd_model_space_keep_every_brain_voxel_inside():
    shape = (21, 25, 17)
    brain = torch.zeros(shape, dtype=torch.bool)
    brain[2:19, 3:22, 2:15] = True
    generator = torch.Generator().manual_seed(3)
    images = [(1.5 + 0.1 * torch.randn(shape, generator=generator)) * brain for _ in range(5)]
    population = fit_population({"t1": [i * 0.1 for i in images]}, {"t1": images}, {"t1": [brain] * 5}, 2.0)
    back = HealthyPopulation.from_tensors(population.to_tensors(), population.metadata(), shape, "test")
    assert bool((back.maps["t1"]["std"][brain] > 0).all())  # the z-score is kept to the brain's corners
    full_mean = voxel_statistics(images, [brain] * 5, 1.0)[0]
    assert float((back.maps["t1"]["mean"] - full_mean)[brain].abs().max()) < 0.15


def test_the_residual_is_divided_by_its_expected_spread_and_the_z_score_added_on_the_lesion_side():
    brain = _brain()
    spread = torch.where(torch.arange(SHAPE[0])[:, None, None] < 10, 0.1, 0.3).expand(SHAPE).contiguous()
    maps = {"residual_std": spread, "mean": torch.ones(SHAPE) * brain, "std": 0.1 * brain.float()}
    residual = torch.ones(SHAPE)
    weighed = population_residual(residual, torch.ones(SHAPE), brain, maps, weight=0.0, sign=1)
    typical = float(spread[brain].median())
    assert torch.allclose(weighed, 1 / (typical + spread))  # image at the mean: no z-score
    brighter = population_residual(residual, torch.full(SHAPE, 1.2), brain, maps, weight=0.5, sign=1)
    darker = population_residual(residual, torch.full(SHAPE, 0.8), brain, maps, weight=0.5, sign=1)
    inside = brain
    assert torch.allclose(brighter[inside], weighed[inside] + 0.5 * 2.0)  # z = (1.2 - 1) / 0.1 = 2
    assert torch.allclose(darker, weighed)  # the other side counts nothing
    assert torch.allclose(brighter[~inside], weighed[~inside])  # no z-score outside the population's brain
    t1_darker = population_residual(residual, torch.full(SHAPE, 0.8), brain, maps, weight=0.5, sign=-1)
    assert torch.allclose(t1_darker[inside], weighed[inside] + 0.5 * 2.0)  # on T1 darker counts
    assert torch.allclose(population_residual(residual, torch.full(SHAPE, 1.2), brain, maps, 0.5, -1), weighed)
    both = population_residual(residual, torch.full(SHAPE, 0.8), brain, maps, weight=0.5, sign=None)
    assert torch.allclose(both[inside], weighed[inside] + 1.0)
    with pytest.raises(ArgumentError, match="shape"):
        population_residual(residual[1:], torch.ones(SHAPE)[1:], brain[1:], maps, 0.5, 1)


class _Blur(nn.Module):
    """A PHI that is the scan without its bright spots: the scan clamped at 1.1."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def pseudo_healthy(self, x):
        return {"phi": x.clamp(max=1.1)}


def test_score_volume_weighs_an_equal_residual_by_where_healthy_scans_miss():
    brain = _brain()
    volume = torch.where(brain, 1.0, 0.0)
    volume[5:8, 8:11, 6:9] = 1.6  # the same lesion twice: at a place of large healthy error ...
    volume[12:15, 8:11, 6:9] = 1.6  # ... and at one of small
    spread = torch.full(SHAPE, 0.05)
    spread[:10] = 0.5
    maps = {"residual_std": spread, "mean": torch.ones(SHAPE) * brain, "std": 0.2 * brain.float()}
    plain = score_volume(_Blur(), volume, brain, 2.0, median_mm=0, erode_mm=0, sign=1, normalise=False,
                         flip_average=False, residual_map=True)
    weighed = score_volume(_Blur(), volume, brain, 2.0, median_mm=0, erode_mm=0, sign=1, normalise=False,
                           flip_average=False, population=maps, population_weight=0.0)
    assert torch.allclose(plain["score"][6, 9, 7], plain["score"][13, 9, 7])
    assert torch.equal(plain["residual"], plain["score"])  # no median: the score is the residual
    assert float(weighed["score"][13, 9, 7]) > 3 * float(weighed["score"][6, 9, 7])


def test_a_z_score_with_a_median_window_of_its_own_keeps_a_small_lesion_that_the_residuals_median_erases():
    brain = _brain()
    volume = torch.where(brain, 1.0, 0.0)
    volume[9, 9, 7] = 1.08  # one voxel brighter than every healthy scan, under the PHI's clamp: no residual
    maps = {"residual_std": torch.full(SHAPE, 0.1), "mean": torch.ones(SHAPE) * brain, "std": 0.02 * brain.float()}
    common = dict(erode_mm=0, sign=1, normalise=False, flip_average=False, population=maps, population_weight=0.5)
    together = score_volume(_Blur(), volume, brain, 2.0, median_mm=6, **common)["score"]
    apart = score_volume(_Blur(), volume, brain, 2.0, median_mm=6, population_median_mm=2, **common)["score"]
    assert float(together.max()) == 0  # the 3-voxel median of one bright voxel: nothing
    assert float(apart[9, 9, 7]) == pytest.approx(0.5 * 0.08 / 0.02) and float(apart.sum()) == float(apart[9, 9, 7])
    same = score_volume(_Blur(), volume, brain, 2.0, median_mm=6, population_median_mm=6, **common)["score"]
    assert torch.equal(same, together)  # the same window: one median of the sum
    assert Config().scoring.population_median_for("flair") == 2.0 and Config().scoring.population_median_for("t1") == 10.0
    with pytest.raises(ConfigError, match="scoring.population_median_mm.flair: expected a size in mm >= 0"):
        Config().replace({"scoring.population_median_mm": {"flair": -1}})


def test_the_intensities_std_allows_for_misregistration_at_the_borders_of_the_mean_only():
    from dal.engine.population import allow_for_misregistration

    mean = torch.zeros(8, 8, 8)
    mean[4:] = 1.0  # a border between two tissues along the first axis
    std = torch.full((8, 8, 8), 0.1)
    std[:, :, 0] = 0  # outside the population's brain
    widened = allow_for_misregistration(mean, std, spacing_mm=2.0, registration_mm=6.0)
    # central differences: a slope of 0.25 per mm on the two voxels beside the border
    assert float(widened[3, 4, 4]) == pytest.approx((0.1 ** 2 + (6.0 * 0.25) ** 2) ** 0.5)
    assert torch.equal(widened[:2, :, 1:], std[:2, :, 1:]) and torch.equal(widened[6:, :, 1:], std[6:, :, 1:])
    assert torch.equal(widened[:, :, 0], torch.zeros(8, 8))
    assert torch.equal(allow_for_misregistration(mean, std, 2.0, 0.0), std)


class _Anatomy(_Blur):
    """A PHI that paints the lesion as it is (no residual) with an anatomy that calls it grey
    matter (index 2) inside white matter (3), as DAL's encoder takes a T2 WMH."""

    def pseudo_healthy(self, x):
        labels = torch.where(x > 1.3, 2, 3) * (x > 0)
        anatomy = torch.nn.functional.one_hot(labels[:, 0], 4).permute(0, 3, 1, 2).float()
        return {"phi": x, "anatomy": anatomy, "restored_anatomy": anatomy}


def test_an_anatomy_of_grey_matter_where_mni152_has_white_matter_scores_with_its_probability():
    brain = _brain()
    volume = torch.where(brain, 1.0, 0.0)
    volume[8:10, 8:10, 6:8] = 1.5  # a lesion the PHI rebuilds, taken for grey matter
    white_matter = torch.zeros(SHAPE)
    white_matter[8, 8:10, 6:8] = 1.0  # certain white matter under half of it, under the rest 3 in 4
    white_matter[9, 8:10, 6:8] = 0.75
    white_matter[12:15] = 1.0  # white matter labelled so: nothing
    common = dict(median_mm=10, erode_mm=0, sign=1, normalise=False, flip_average=False, white_matter=white_matter)
    scored = score_volume(_Anatomy(), volume, brain, 2.0, tissue_prior=0.5, **common)
    assert scored["tissue_prior"]
    assert float(scored["score"][8, 8, 6]) == pytest.approx(0.5) and float(scored["score"][9, 8, 6]) == pytest.approx(0.25)
    assert float(scored["score"].sum()) == pytest.approx(4 * 0.5 + 4 * 0.25)  # no median of its own: the voxels
    off = score_volume(_Anatomy(), volume, brain, 2.0, tissue_prior=0.0, **common)
    assert not off["tissue_prior"] and float(off["score"].max()) == 0
    no_anatomy = score_volume(_Blur(), volume, brain, 2.0, tissue_prior=0.5, **common)
    assert not no_anatomy["tissue_prior"]  # the term needs a PHI with an anatomy (DAL)
    with pytest.raises(ArgumentError, match="white_matter: expected the anatomy's shape"):
        tissue_prior_term(torch.zeros(SHAPE, dtype=torch.int64), torch.zeros(3, 3, 3))


def test_the_white_matter_prior_is_mni152s_on_registered_model_space_and_old_checkpoints_go_without():
    config = Config().replace({"preprocessing.register": True})
    prior = white_matter_prior(config.preprocessing)
    assert tuple(prior.shape) == tuple(config.preprocessing.shape)
    assert 0 <= float(prior.min()) and 0.95 < float(prior.max()) <= 1.0
    assert white_matter_prior(Config().preprocessing) is None  # model space is not MNI152's
    assert Config().scoring.tissue_prior == 0.5 and checkpoint_scoring({"scoring": {}})["tissue_prior"] == 0.0
    with pytest.raises(ConfigError, match="scoring.tissue_prior: expected a weight >= 0"):
        Config().replace({"scoring.tissue_prior": -0.1})


def test_population_needs_model_space_in_mni152():
    with pytest.raises(ConfigError, match="preprocessing.register"):
        Config().replace({"scoring.population": True})
    assert Config().replace({"scoring.population": True, "preprocessing.register": True}).scoring.population
    with pytest.raises(ConfigError, match="--contrast"):  # training scans of one known contrast to fit on
        Config().replace({"scoring.population": True, "preprocessing.register": True, "data.data": "scans"})
    with pytest.raises(ConfigError, match="population_volumes"):
        Config().replace({"scoring.population_volumes": 1})


def test_dal_train_fits_the_population_of_its_best_weights_and_dal_infer_scores_against_it(tmp_path, cache):
    config = tiny_config(cache, **{"train.max_steps": 2, "preprocessing.register": True, "scoring.population": True,
                                   "scoring.population_volumes": 2, "data.synthetic_contrasts": ["t1", "t2"]})
    train(config, tmp_path / "run", progress=False)
    best = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert best.population is not None and sorted(best.population.maps) == ["t1", "t2"]
    assert best.population.volumes == {"t1": 2, "t2": 2}
    assert "plain_residual_ap" in best.metrics and 0 <= best.metrics["ap"] <= 1
    maps = best.population.maps["t1"]
    assert maps["mean"].shape == tuple(config.preprocessing.shape) and bool((maps["std"] > 0).any())
    detector = Detector(best)
    case = generate_case(5, contrasts=("t1",), lesion="tumour")
    scan = nib.Nifti1Image(case.images["t1"], case.affine)
    result = detector.predict(scan, case.mask, contrast="t1")
    assert result.info["population"] is True and result.info["registered_to_mni"] is True
    unknown = detector.predict(scan, case.mask, contrast="flair")
    assert unknown.info["population"] is False and any("healthy population has no maps" in w for w in unknown.warnings)
    # A checkpoint that says it scores against a population it does not hold is refused.
    save_checkpoint(tmp_path / "bare.safetensors", best.model, model_kind="dal", config=best.config,
                    preprocessing=best.preprocessing, thresholds=best.thresholds)
    with pytest.raises(CheckpointError, match="no population maps"):
        Detector(load_checkpoint(tmp_path / "bare.safetensors"))
