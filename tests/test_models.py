"""DAL and its baselines: shapes, the disentanglement's structure, ablations, and score_volume."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dal.engine.scoring import erosion_voxels, median_kernel_voxels, score_volume
from dal.models import DAL, AutoEncoder, DenoisingAutoEncoder, LossConfig, ModelConfig, build_model
from dal.models.autoencoders import coarse_noise
from dal.models.dal import edge_dropout, simulate_anomalies, tissue_statistics

TINY = dict(channels=4, levels=2, restoration_channels=4, code_channels=4, decoder_channels=4, ae_latent=4)


def _batch(n=3, h=16, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 1, h, w, generator=g)
    return {"image": image, "view1": image, "view2": torch.rand(n, 1, h, w, generator=g),
            "mask": torch.ones(n, 1, h, w), "tissue": F.softmax(torch.randn(n, 4, h, w, generator=g), 1)}


def _phantom(intensities, h=16, w=20):
    """A hand-made slice: a one-hot anatomy of 4 tissues and an image painting each tissue with one intensity."""
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[2:14, 2:18] = 3
    labels[4:12, 5:15] = 2
    labels[6:10, 8:12] = 1
    anatomy = F.one_hot(labels, 4).permute(2, 0, 1)[None].float()
    image = torch.tensor(intensities)[labels][None, None]
    return anatomy, image


@pytest.mark.parametrize("kind", ["dal", "ae", "dae"])
def test_every_model_trains_a_step_and_gives_a_phi_of_the_input_shape(kind):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, **TINY))
    losses = model(_batch())
    assert losses["loss"].dim() == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not without_grad, f"parameters without gradient: {without_grad}"
    model.eval()
    out = model.pseudo_healthy(torch.rand(5, 1, 16, 20))
    assert out["phi"].shape == (5, 1, 16, 20)


def test_dal_outputs_are_exact_one_hot_maps():
    torch.manual_seed(0)
    model = DAL(ModelConfig(**TINY)).eval()
    out = model.pseudo_healthy(torch.rand(2, 1, 16, 20))
    for key in ("anatomy", "restored_anatomy"):
        assert out[key].shape == (2, 4, 16, 20)
        assert set(out[key].unique().tolist()) <= {0.0, 1.0}
        assert torch.all(out[key].sum(1) == 1)
    assert out["edges"].shape == (2, 4, 16, 20) and torch.all(out["edges"] >= 0)


def test_dal_losses_list_every_term_and_the_prior_only_with_tissue_maps():
    torch.manual_seed(0)
    model = DAL(ModelConfig(**TINY))
    batch = _batch()
    assert set(model(batch)) == {"reconstruction", "cross", "invariance", "prior", "restoration", "phi", "loss"}
    del batch["tissue"]
    assert "prior" not in model(batch)


def test_perfect_reconstruction_gives_zero_reconstruction_loss():
    """An untrained decoder paints each tissue with its mean: on a piecewise-constant scan with
    its own anatomy, the rebuilt image is the scan, exactly."""
    model = DAL(ModelConfig(**TINY))
    anatomy, image = _phantom([0.0, 0.3, 0.6, 1.0])
    rebuilt = model.decoder(anatomy, model.imaging_encoder(image, anatomy))
    torch.testing.assert_close(rebuilt, image, atol=1e-6, rtol=0)


def test_swapped_imaging_code_changes_the_contrast_not_the_anatomy():
    model = DAL(ModelConfig(**TINY))
    anatomy, t1_like = _phantom([0.0, 0.25, 0.6, 1.0])
    _, t2_like = _phantom([0.0, 1.0, 0.5, 0.35])
    swapped = model.decoder(anatomy, model.imaging_encoder(t2_like, anatomy))
    # Contrast: the other scan's intensities; anatomy: the level sets of the given anatomy.
    torch.testing.assert_close(swapped, t2_like, atol=1e-6, rtol=0)
    assert not torch.allclose(swapped, t1_like)
    labels = anatomy.argmax(1)
    for k in range(4):
        assert swapped[0, 0][labels[0] == k].unique().numel() == 1


def test_trained_decoder_keeps_anatomy_when_the_code_is_swapped():
    """After fitting the decoder to two contrasts of one anatomy, decoding that anatomy with
    the other contrast's code rebuilds the other contrast."""
    torch.manual_seed(0)
    model = DAL(ModelConfig(**TINY))
    anatomy, a = _phantom([0.0, 0.25, 0.6, 1.0])
    _, b = _phantom([0.0, 1.0, 0.5, 0.35])
    bias = torch.linspace(0.9, 1.1, 20).view(1, 1, 1, 20)
    a, b = a * bias, b * bias
    optimizer = torch.optim.Adam(list(model.decoder.parameters()) + list(model.imaging_encoder.parameters()), 1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        loss = sum((model.decoder(anatomy, model.imaging_encoder(x, anatomy)) - x).abs().mean() for x in (a, b))
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        from_b = model.decoder(anatomy, model.imaging_encoder(b, anatomy))
    assert (from_b - b).abs().mean() < 0.5 * (a - b).abs().mean()


def test_tissue_statistics_are_masked_median_and_deviation_and_resist_a_lesion():
    anatomy, image = _phantom([0.0, 0.3, 0.6, 1.0])
    image = image + torch.linspace(0, 0.1, 20).view(1, 1, 1, 20)
    image[0, 0, 3:6, 3:6] = 3.0  # a bright lesion inside white matter
    median, spread = tissue_statistics(image, anatomy)
    for k in range(4):
        values = image[0, 0][anatomy[0, k] > 0].double().sort().values
        lower_median = values[(values.numel() - 1) // 2]
        assert median[0, k] == pytest.approx(float(lower_median), abs=1e-6)
        assert spread[0, k] == pytest.approx(float((values - lower_median).abs().mean()), abs=1e-5)
    assert median[0, 3] < 1.2  # the white matter's median ignores the lesion; its mean would not
    absent = tissue_statistics(image, torch.cat([anatomy, torch.zeros_like(anatomy[:, :1])], 1))
    assert absent[0][0, 4] == 0 and absent[1][0, 4] == 0


def test_edge_dropout_zeroes_whole_blocks_and_keeps_the_rest():
    torch.manual_seed(0)
    edges = torch.rand(4, 3, 32, 40) + 0.1
    dropped = edge_dropout(edges, 1.0, 8)
    kept = dropped != 0
    assert torch.equal(dropped[kept], edges[kept])
    blocks = kept.view(4, 3, 4, 8, 5, 8)
    assert torch.all(blocks.all((3, 5)) | (~blocks).all((3, 5)))  # each block kept or dropped whole
    assert 0 < kept.float().mean() < 1
    assert torch.equal(edge_dropout(edges, 0.0, 8), edges)


def test_simulated_anomalies_are_wrong_tissue_blobs_inside_the_brain():
    torch.manual_seed(0)
    anatomy, _ = _phantom([0.0, 0.2, 0.6, 1.0], h=48, w=56)
    anatomy = anatomy.repeat(16, 1, 1, 1)
    abnormal = simulate_anomalies(anatomy, 1.0, 3)
    assert abnormal.shape == anatomy.shape and abnormal.dtype == anatomy.dtype
    assert torch.all(abnormal.sum(1) == 1) and set(abnormal.unique().tolist()) <= {0.0, 1.0}
    changed = (abnormal != anatomy).any(1)
    outside = anatomy[:, 0] == 1
    assert not changed[outside].any()                          # the background stays background
    assert not abnormal[:, 0][~outside].any()                  # no brain pixel becomes background
    assert changed.flatten(1).any(1).float().mean() > 0.5      # most slices got a region
    assert changed.float().mean() < 0.5                        # regions, not the whole slice
    assert torch.equal(simulate_anomalies(anatomy, 0.0, 3), anatomy)


def test_restoration_in_masked_passes_takes_each_pixel_from_the_pass_that_hid_it():
    torch.manual_seed(0)
    model = DAL(ModelConfig(restoration_passes=2, restoration_block=4, **TINY)).eval()
    edges = torch.rand(2, 4, 16, 20) + 0.1
    with torch.no_grad():
        logits = model.restore(edges)
        rows, cols = torch.meshgrid(torch.arange(16) // 4, torch.arange(20) // 4, indexing="ij")
        group = (rows + cols) % 2
        expected = torch.zeros_like(logits)
        for p in range(2):
            alone = model.restorer(edges * (group != p))
            expected = torch.where(group == p, alone, expected)
    torch.testing.assert_close(logits, expected)
    one_pass = DAL(ModelConfig(**TINY)).eval()
    with torch.no_grad():
        assert torch.equal(one_pass.restore(edges), one_pass.restorer(edges))


@pytest.mark.parametrize("switch", [{}, {"restoration": False}, {"onehot": False}, {"anomaly_probability": 0.0}])
def test_every_trainable_parameter_gets_a_gradient(switch):
    """What DistributedDataParallel needs of a step: no trainable parameter left without a gradient."""
    torch.manual_seed(0)
    model = DAL(ModelConfig(**TINY, **switch))
    model(_batch())["loss"].backward()
    idle = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not idle
    assert any(p.requires_grad for p in model.restorer.parameters()) is switch.get("restoration", True)


def test_dal_ablations_change_the_anatomy_operator_and_the_phi_path():
    torch.manual_seed(0)
    soft = DAL(ModelConfig(onehot=False, **TINY)).eval()
    out = soft.pseudo_healthy(torch.rand(2, 1, 16, 20))
    assert not set(out["anatomy"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(out["anatomy"].sum(1), torch.ones(2, 16, 20))
    direct = DAL(ModelConfig(restoration=False, **TINY))
    assert "restoration" not in direct(_batch())
    direct.eval()
    out = direct.pseudo_healthy(torch.rand(2, 1, 16, 20))
    assert torch.equal(out["anatomy"], out["restored_anatomy"])


def test_second_view_gradient_is_optional():
    batch = _batch()
    grads = {}
    for flag in (False, True):
        torch.manual_seed(0)
        model = DAL(ModelConfig(second_view_grad=flag, **TINY), LossConfig(reconstruction=0, cross=0, phi=0, prior=0,
                                                                           restoration=0, invariance=1))
        model(batch)["loss"].backward()
        grads[flag] = model.anatomy_encoder.head.weight.grad.clone()
    # Only the invariance term reaches the anatomy encoder here; through view 2 as well when asked.
    assert grads[False].abs().sum() > 0
    assert not torch.allclose(grads[False], grads[True])


def test_auxiliary_terms_see_their_share_of_the_batch():
    seen = {}
    for fraction, expected in ((0.5, 4), (0.25, 2), (1.0, 8)):
        torch.manual_seed(0)
        model = DAL(ModelConfig(auxiliary_fraction=fraction, **TINY))
        sizes = []
        model.restorer.register_forward_hook(lambda _m, inputs, _out: sizes.append(inputs[0].shape[0]))
        model.anatomy_encoder.register_forward_hook(lambda _m, inputs, _out: sizes.append(inputs[0].shape[0]))
        losses = model(_batch(n=8))
        assert sizes == [8, expected, expected]  # view 1, view 2, the restoration
        seen[fraction] = losses["cross"].item()
    assert len(set(seen.values())) == 3  # the cross term averages over different slices
    with pytest.raises(ValueError, match="model.auxiliary_fraction"):
        ModelConfig(auxiliary_fraction=0)


def test_autoencoder_has_no_skip_path_and_dae_noise_is_coarse_and_masked():
    ae = AutoEncoder(ModelConfig(kind="ae", **TINY))
    assert not ae.net.skips and ae.net.squeeze is not None
    torch.manual_seed(0)
    x = torch.zeros(2, 1, 48, 48)
    mask = torch.zeros_like(x)
    mask[..., 8:40, 8:40] = 1
    noise = coarse_noise(x, 0.2, 6, mask)
    assert torch.all(noise[mask == 0] == 0)
    assert 0.05 < noise[mask == 1].std() < 0.4
    # Coarse: neighbouring pixels nearly equal (cells of 8 px).
    assert (noise[..., 1:, :] - noise[..., :-1, :]).abs().mean() < 0.2 * noise[mask == 1].abs().mean()
    assert isinstance(build_model(ModelConfig(kind="dae", **TINY)), DenoisingAutoEncoder)


def test_model_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="model.kind"):
        ModelConfig(kind="vae")
    with pytest.raises(ValueError, match="model.tau"):
        ModelConfig(tau=0)
    with pytest.raises(ValueError, match="loss.prior"):
        LossConfig(prior=-1)


def test_unet_input_size_must_divide():
    model = AutoEncoder(ModelConfig(kind="ae", **TINY))
    with pytest.raises(ValueError, match="divisible"):
        model.pseudo_healthy(torch.rand(1, 1, 18, 20))


# ---------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("mm, spacing, voxels", [(5, 2, 3), (5, 1, 5), (5, 0.5, 7), (2, 2, 1), (4, 2, 3), (0, 2, 1)])
def test_median_kernel_from_millimetres(mm, spacing, voxels):
    assert median_kernel_voxels(mm, spacing) == voxels


def test_erosion_from_millimetres():
    assert erosion_voxels(2, 2) == 1 and erosion_voxels(0, 2) == 0 and erosion_voxels(4, 1) == 4
    with pytest.raises(ValueError, match="spacing_mm"):
        erosion_voxels(2, 0)


class _Oracle(torch.nn.Module):
    """pseudo_healthy returns a fixed healthy value inside the brain (a perfect PHI of the phantom)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def pseudo_healthy(self, x):
        self.calls.append(x.shape[0])
        return {"phi": (x > 0).float() * 0.5 * self.scale}


def test_score_volume_finds_a_small_lesion_at_2mm_and_matches_residual_score():
    from dal.ops import residual_score

    shape = (24, 20, 18)
    mask = np.zeros(shape, bool)
    mask[2:22, 2:18, 2:16] = True
    volume = np.where(mask, 0.5, 0).astype(np.float32)
    volume[10:13, 9:12, 8:11] = 1.0  # a 3x3x3 lesion (6 mm at 2 mm): a 5-voxel median would erase it
    model = _Oracle()
    out = score_volume(model, volume, mask, spacing_mm=2.0, batch_size=5, flip_average=False)
    assert out["score"].shape == shape and out["phi"].shape == shape
    assert sum(model.calls) == 14 and max(model.calls) == 5  # only slices with brain, in batches
    assert out["score"][11, 10, 9] > 0.4
    assert float(out["score"][~torch.from_numpy(mask)].abs().max()) == 0
    expected = residual_score(torch.from_numpy(volume)[None, None], out["phi"][None, None],
                              torch.from_numpy(mask)[None, None].float(), 3, 1)[0, 0]
    torch.testing.assert_close(out["score"], expected)
    erased = score_volume(model, volume, mask, spacing_mm=2.0, median_mm=10.0)["score"]
    assert erased.max() == 0  # the 5-voxel window erases it: why the kernel is in millimetres


def test_lesion_polarity_scores_only_the_side_lesions_take():
    from dal.engine.scoring import lesion_sign

    shape = (24, 20, 18)
    mask = np.zeros(shape, bool)
    mask[2:22, 2:18, 2:16] = True
    volume = np.where(mask, 0.5, 0).astype(np.float32)
    volume[5:8, 5:8, 5:8] = 1.0     # brighter than the PHI: a FLAIR lesion
    volume[15:18, 12:15, 10:13] = 0.1  # darker: a T1 lesion
    score = {sign: score_volume(_Oracle(), volume, mask, spacing_mm=2.0, sign=sign)["score"] for sign in (None, 1, -1)}
    bright, dark = (6, 6, 6), (16, 13, 11)
    assert score[None][bright] > 0.4 and score[None][dark] > 0.3
    assert score[1][bright] == score[None][bright] and score[1][dark] == 0
    assert score[-1][dark] == score[None][dark] and score[-1][bright] == 0
    assert lesion_sign("lesion", "t1", "dal") == -1 and lesion_sign("lesion", "flair", "dae") == 1
    # Both sides where no direction is known: another contrast, the intensity baseline (no PHI), the old scoring.
    assert lesion_sign("lesion", None, "dal") is None and lesion_sign("lesion", "dwi", "dal") is None
    assert lesion_sign("lesion", "t1", "intensity") is None and lesion_sign("absolute", "t1", "dal") is None


def test_normalise_divides_the_residual_by_the_scans_median_residual():
    shape = (24, 20, 18)
    mask = np.zeros(shape, bool)
    mask[2:22, 2:18, 2:16] = True
    noise = np.random.default_rng(0).normal(0, 0.05, shape).astype(np.float32)
    volume = np.where(mask, 0.5 + noise, 0).astype(np.float32)
    volume[10:13, 9:12, 8:11] = 1.0
    raw = score_volume(_Oracle(), volume, mask, spacing_mm=2.0, normalise=False)
    normalised = score_volume(_Oracle(), volume, mask, spacing_mm=2.0)  # the default
    typical = float(np.median(np.abs(noise[mask])))  # the lesion's 27 voxels hardly move it
    assert raw["residual_scale"] == 1.0 and abs(normalised["residual_scale"] - typical) < 0.002
    torch.testing.assert_close(normalised["score"] * normalised["residual_scale"], raw["score"])
    torch.testing.assert_close(normalised["phi"], raw["phi"])  # the PHI stays in the scan's units
    # Twice the noise (a scan the PHI misses by twice as much): the same normalised score on healthy tissue.
    noisier = np.where(mask, 0.5 + 2 * noise, 0).astype(np.float32)
    noisier[10:13, 9:12, 8:11] = 1.0
    doubled = score_volume(_Oracle(), noisier, mask, spacing_mm=2.0)
    assert doubled["residual_scale"] == pytest.approx(2 * normalised["residual_scale"], rel=1e-5)
    healthy = torch.from_numpy(mask).clone()
    healthy[8:15, 7:14, 6:13] = False  # the lesion and the median's reach around it
    torch.testing.assert_close(doubled["score"][healthy], normalised["score"][healthy])


class _Lopsided(torch.nn.Module):
    """A PHI that is not mirror-symmetric: the slice plus a ramp from right to left."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def pseudo_healthy(self, x):
        self.calls += 1
        ramp = torch.linspace(0, 1, x.shape[2]).view(1, 1, -1, 1)
        return {"phi": x + ramp}


def test_flip_average_takes_the_mean_of_the_slices_and_their_mirrors_pseudo_healthy_images():
    volume = np.random.default_rng(0).random((12, 10, 4)).astype(np.float32)
    brain = np.ones_like(volume, bool)
    model = _Lopsided()
    plain = score_volume(model, volume, brain, spacing_mm=2.0, flip_average=False)
    assert model.calls == 1
    averaged = score_volume(model, volume, brain, spacing_mm=2.0)  # the default
    assert model.calls == 3  # one more pass, on the mirrored slices
    ramp = torch.linspace(0, 1, 12).view(-1, 1, 1)
    torch.testing.assert_close(plain["phi"], torch.from_numpy(volume) + ramp)
    # The mirror's PHI, mirrored back, has the ramp reversed: the mean has 0.5 everywhere.
    torch.testing.assert_close(averaged["phi"], torch.from_numpy(volume) + 0.5)


def test_score_volume_of_dal_returns_anatomy_labels_and_checks_shapes():
    torch.manual_seed(0)
    model = DAL(ModelConfig(**TINY))
    volume = np.random.default_rng(0).random((16, 20, 6)).astype(np.float32)
    out = score_volume(model, volume, np.ones_like(volume, bool), spacing_mm=2.0, anatomy_maps=True)
    assert out["anatomy"].shape == (16, 20, 6) and int(out["anatomy"].max()) < 4
    assert "anatomy" not in score_volume(model, volume, np.ones_like(volume, bool), spacing_mm=2.0)  # only when asked
    assert not model.training
    with pytest.raises(ValueError, match="mask"):
        score_volume(model, volume, np.ones((16, 20, 5), bool), spacing_mm=2.0)
    with pytest.raises(ValueError, match="volume"):
        score_volume(model, volume[0], np.ones((20, 6), bool), spacing_mm=2.0)


def test_the_disagreement_term_adds_where_the_restored_anatomy_differs():
    torch.manual_seed(0)
    model = DAL(ModelConfig(**TINY))
    volume = np.random.default_rng(1).random((16, 20, 6)).astype(np.float32)
    brain = np.ones_like(volume, bool)
    plain = score_volume(model, volume, brain, spacing_mm=2.0, median_mm=0, erode_mm=0, anatomy_maps=True)
    weighted = score_volume(model, volume, brain, spacing_mm=2.0, median_mm=0, erode_mm=0, disagreement=10.0)
    differs = plain["anatomy"] != plain["restored_anatomy"]
    assert differs.any()  # an untrained restoration disagrees
    torch.testing.assert_close(weighted["score"], plain["score"] + 10.0 * differs.float())
    direct = DAL(ModelConfig(restoration=False, **TINY))
    torch.testing.assert_close(score_volume(direct, volume, brain, spacing_mm=2.0, disagreement=10.0)["score"],
                               score_volume(direct, volume, brain, spacing_mm=2.0)["score"])
