"""dal.metrics against scikit-learn, brute-force sweeps and scipy/scikit-image components."""
import math

import numpy as np
import pytest
import scipy.ndimage
import skimage.morphology
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from dal import metrics


def _case(kind, n, dtype, device, seed=0, lesion_fraction=0.1):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    if kind == "ties":
        scores = torch.round(scores * 2)  # about ten distinct values for thousands of voxels
    elif kind == "constant":
        scores = torch.full((n,), 0.25, dtype=torch.float64)
    elif kind == "signed_zeros":
        scores = torch.where(scores > 0, torch.zeros_like(scores), -torch.zeros_like(scores))
    labels = (torch.rand(n, generator=g) < lesion_fraction).to(torch.uint8) * 2  # non-zero is lesion
    # Lesions score a little higher, as in a useful map, yet with overlap.
    if kind == "random":
        scores = scores + labels.double()
    return scores.to(dtype=dtype, device=device), labels.to(device)


def _brute_best_dice(scores, labels):
    s, y = scores.double().cpu(), labels.cpu() != 0
    best = 0.0
    for t in torch.unique(s):
        p = s >= t
        best = max(best, 2.0 * int((p & y).sum()) / (int(p.sum()) + int(y.sum())))
    return best


KINDS = ["random", "ties", "constant", "signed_zeros"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
def test_voxel_metrics_equal_scikit_learn_and_brute_force(device, dtype, kind):
    scores, labels = _case(kind, 3000, dtype, device)
    m = metrics.voxel_metrics(scores, labels)
    s_np, y_np = scores.float().cpu().numpy().astype(np.float64), (labels.cpu().numpy() != 0)
    assert m.average_precision == pytest.approx(average_precision_score(y_np, s_np), abs=1e-9)
    assert m.auroc == pytest.approx(roc_auc_score(y_np, s_np), abs=1e-9)
    assert m.best_dice == pytest.approx(_brute_best_dice(scores, labels), abs=1e-12)
    predicted = scores.double() >= m.best_threshold
    y = labels != 0
    assert 2 * int((predicted & y).sum()) / (int(predicted.sum()) + int(y.sum())) == pytest.approx(m.best_dice, abs=1e-12)
    assert (m.lesion_voxels, m.healthy_voxels) == (int(y.sum()), int((~y).sum()))
    assert metrics.average_precision(scores, labels) == m.average_precision
    assert metrics.auroc(scores, labels) == m.auroc
    assert metrics.best_dice(scores, labels) == (m.best_dice, m.best_threshold)


def test_constant_scores_give_prevalence_and_one_half(device):
    scores, labels = _case("constant", 1000, torch.float32, device)
    prevalence = float((labels != 0).double().mean())
    assert metrics.average_precision(scores, labels) == pytest.approx(prevalence, abs=1e-12)
    assert metrics.auroc(scores, labels) == pytest.approx(0.5, abs=1e-12)
    assert metrics.best_dice(scores, labels)[0] == pytest.approx(2 * prevalence / (1 + prevalence), abs=1e-12)


def test_perfect_and_inverted_scores(device):
    labels = torch.tensor([0, 0, 1, 1, 0, 1], device=device)
    assert metrics.average_precision(labels.float(), labels) == 1.0
    assert metrics.auroc(labels.float(), labels) == 1.0
    assert metrics.auroc(-labels.float(), labels) == 0.0
    assert metrics.best_dice(labels.float(), labels) == (1.0, 1.0)


def test_infinite_scores_are_ordered(device):
    scores = torch.tensor([-math.inf, 0.0, 1.0, math.inf, math.inf], device=device)
    labels = torch.tensor([0, 0, 1, 1, 0], device=device)
    assert metrics.auroc(scores, labels) == pytest.approx(roc_auc_score(labels.cpu(), scores.cpu().clamp(-1e30, 1e30)))


def test_mask_selects_the_voxels_evaluated(device):
    scores, labels = _case("random", 4000, torch.float32, device, seed=3)
    mask = torch.rand(4000, generator=torch.Generator().manual_seed(4)) < 0.6
    mask = mask.to(device)
    m = metrics.voxel_metrics(scores.reshape(40, 100), labels.reshape(40, 100), mask.reshape(40, 100))
    s, y = scores[mask].cpu().numpy(), labels[mask].cpu().numpy() != 0
    assert m.average_precision == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert m.auroc == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert m.lesion_voxels + m.healthy_voxels == int(mask.sum())


def test_undefined_values_are_nan_and_documented_cases(device):
    scores = torch.linspace(0, 1, 50, device=device)
    healthy_only = torch.zeros(50, device=device)
    m = metrics.voxel_metrics(scores, healthy_only)
    assert math.isnan(m.average_precision) and math.isnan(m.auroc) and math.isnan(m.best_dice)
    lesion_only = torch.ones(50, device=device)
    m = metrics.voxel_metrics(scores, lesion_only)
    assert m.average_precision == 1.0 and math.isnan(m.auroc) and m.best_dice == 1.0
    empty = metrics.voxel_metrics(scores, lesion_only, torch.zeros(50, device=device))
    assert empty.lesion_voxels == 0 and math.isnan(empty.average_precision)


def test_evaluate_per_volume_and_pooled(device):
    volumes = [_case("random", 600, torch.float32, device, seed=s) for s in range(3)]
    healthy_scores = torch.rand(600, generator=torch.Generator().manual_seed(9)).to(device)
    scores = [v[0].reshape(6, 10, 10) for v in volumes] + [healthy_scores.reshape(6, 10, 10)]
    labels = [v[1].reshape(6, 10, 10) for v in volumes] + [torch.zeros(6, 10, 10, device=device)]
    result = metrics.evaluate(scores, labels)
    assert (result.lesion_volumes, result.healthy_volumes) == (3, 1)
    aps = [average_precision_score(y.cpu().numpy().ravel() != 0, s.cpu().numpy().ravel()) for s, y in zip(scores[:3], labels[:3])]
    assert result.mean_average_precision == pytest.approx(np.mean(aps), abs=1e-9)
    assert not math.isnan(result.mean_auroc) and not math.isnan(result.mean_best_dice)
    s_all = torch.cat([s.reshape(-1) for s in scores]).cpu().numpy()
    y_all = torch.cat([y.reshape(-1) for y in labels]).cpu().numpy() != 0
    assert result.pooled.average_precision == pytest.approx(average_precision_score(y_all, s_all), abs=1e-9)
    assert result.pooled.auroc == pytest.approx(roc_auc_score(y_all, s_all), abs=1e-9)
    summary = result.summary()
    assert summary["volumes_without_lesion"] == 1 and "left out" in summary["note"]


def test_evaluate_without_lesion_volume_has_no_mean(device):
    scores = torch.rand(2, 5, 5, device=device)
    result = metrics.evaluate(scores, torch.zeros(2, 5, 5, device=device))
    assert result.mean_average_precision is None and result.mean_auroc is None and result.mean_best_dice is None
    assert result.lesion_volumes == 0 and result.healthy_volumes == 2


def test_evaluate_at_a_threshold_counts_dice_and_lesions(device):
    labels = torch.zeros(2, 12, 12, device=device)
    labels[0, 1:4, 1:4] = 1  # lesion found
    labels[0, 8:10, 8:10] = 1  # lesion missed
    scores = torch.zeros(2, 12, 12, device=device)
    scores[0, 1:4, 1:4] = 0.9
    scores[0, 6, 1:3] = 0.8  # a two-voxel false positive, removed by min_size=3
    scores[1, 5:9, 5:9] = 0.7  # a false positive in the healthy volume
    result = metrics.evaluate(scores, labels, threshold=0.5, min_size=3)
    assert result.dice_at_threshold[0] == pytest.approx(2 * 9 / (9 + 13))
    assert result.dice_at_threshold[1] == 0.0
    assert result.mean_dice_at_threshold == result.dice_at_threshold[0]  # lesion volumes only
    assert [(d.lesions, d.detected, d.false_positives) for d in result.detection] == [(2, 1, 0), (0, 0, 1)]
    assert result.lesion_recall == 0.5 and result.false_positives_per_volume == 0.5
    assert math.isnan(result.detection[1].recall)


def test_dice_at_threshold(device):
    scores = torch.tensor([[0.1, 0.6, 0.7], [0.9, 0.2, 0.6]], device=device)
    labels = torch.tensor([[0, 1, 1], [0, 0, 4]], device=device)
    assert metrics.dice_at_threshold(scores, labels, 0.6) == pytest.approx(2 * 3 / (4 + 3))
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]], device=device)
    assert metrics.dice_at_threshold(scores, labels, 0.6, mask) == 1.0
    assert metrics.dice_at_threshold(scores, torch.zeros_like(labels), 1.0) == 1.0  # nothing to find, nothing found


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("kind", ["random", "ties", "constant"])
def test_threshold_at_fpr_is_the_lowest_allowed(device, fpr, kind):
    volumes = [_case(kind, 700, torch.float32, device, seed=s)[0].reshape(7, 100) for s in range(2)]
    masks = [torch.ones(7, 100, dtype=torch.bool, device=device), torch.rand(7, 100).to(device) < 0.5]
    t = metrics.threshold_at_fpr(volumes, fpr, masks)
    healthy = torch.cat([v[m] for v, m in zip(volumes, masks)])
    flagged = int((healthy >= t).sum())
    assert flagged <= fpr * healthy.numel() + 1e-9
    lower = healthy[healthy < t]
    if lower.numel():  # the next lower score value would flag too many
        assert int((healthy >= lower.max()).sum()) > fpr * healthy.numel()
    if fpr == 1.0:
        assert flagged == healthy.numel()


def test_threshold_at_fpr_above_everything_flags_nothing(device):
    scores = torch.full((3, 4), 2.5, device=device)
    t = metrics.threshold_at_fpr(scores, 0.5)
    assert t > 2.5 and int((scores >= t).sum()) == 0


@pytest.mark.parametrize("ndim, connectivity", [(2, 1), (2, 2), (3, 1), (3, 3), (3, None)])
@pytest.mark.parametrize("min_size", [0, 1, 3, 8])
def test_remove_small_components_matches_scikit_image(device, ndim, connectivity, min_size):
    g = torch.Generator().manual_seed(ndim * 10 + min_size)
    shape = (24, 24) if ndim == 2 else (10, 12, 12)
    binary = (torch.rand(shape, generator=g) < 0.3).to(device)
    kept = metrics.remove_small_components(binary, min_size, connectivity)
    want = skimage.morphology.remove_small_objects(
        binary.cpu().numpy(), max_size=max(min_size, 1) - 1, connectivity=connectivity or ndim
    )
    assert kept.device.type == torch.device(device).type
    assert np.array_equal(kept.cpu().numpy(), want)


def test_connected_components_matches_scipy(device):
    binary = torch.rand(8, 9, 10, generator=torch.Generator().manual_seed(5)) < 0.3
    labels, count = metrics.connected_components(binary.to(device), connectivity=1)
    want, want_count = scipy.ndimage.label(binary.numpy())
    assert count == want_count and np.array_equal(labels.cpu().numpy(), want)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda d: metrics.voxel_metrics(torch.rand(4, device=d), torch.zeros(5, device=d)), ValueError, "labels must"),
        (lambda d: metrics.voxel_metrics(torch.rand(4, device=d), torch.zeros(4, device=d), torch.ones(3, device=d)), ValueError, "mask must"),
        (lambda d: metrics.auroc(torch.tensor([0.0, math.nan], device=d), torch.tensor([0, 1], device=d)), ValueError, "NaN"),
        (lambda d: metrics.auroc(torch.arange(4, device=d), torch.zeros(4, device=d)), TypeError, "scores must be a floating"),
        (lambda d: metrics.threshold_at_fpr(torch.rand(2, 4, device=d), 1.5), ValueError, "fpr must be in"),
        (lambda d: metrics.threshold_at_fpr([torch.rand(4, device=d)], 0.1, masks=[]), ValueError, "masks must hold"),
        (lambda d: metrics.remove_small_components(torch.ones(3, 3, device=d), 2, connectivity=3), ValueError, "connectivity"),
        (lambda d: metrics.remove_small_components(torch.ones(3, 3, device=d), -1), ValueError, "min_size"),
        (lambda d: metrics.evaluate([torch.rand(3, device=d)], [torch.zeros(3, device=d)] * 2), ValueError, "labels must hold"),
    ],
)
def test_bad_input_names_the_argument(device, call, error, words):
    with pytest.raises(error, match=words):
        call(device)
