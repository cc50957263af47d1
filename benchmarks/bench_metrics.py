"""Voxel metrics of a 5-million-voxel score map (about a 2 mm brain set): dal.metrics' AP + AUROC
+ exact best Dice (one sort) vs scikit-learn's average_precision_score + roc_auc_score plus the
100-step Dice sweep (numpy) that peers use, which only approximates the best Dice."""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from dal import metrics

VOXELS = 5_000_000


@pytest.fixture(scope="module")
def scores_and_labels():
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(VOXELS, generator=g) < 0.02
    scores = torch.rand(VOXELS, generator=g) + 0.5 * labels  # separable in part, as a real map
    return scores, labels


def _run(benchmark, fn, rounds):
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)


@pytest.mark.benchmark(group="AP + AUROC + best Dice, 5M voxels")
def test_metrics_dal(benchmark, scores_and_labels):
    scores, labels = scores_and_labels
    result = _run(benchmark, lambda: metrics.voxel_metrics(scores, labels), rounds=5)
    assert result.average_precision == pytest.approx(average_precision_score(labels.numpy(), scores.numpy()), abs=1e-9)


@pytest.mark.benchmark(group="AP + AUROC + best Dice, 5M voxels")
def test_metrics_sklearn_and_100_step_dice_sweep(benchmark, scores_and_labels):
    s, y = scores_and_labels[0].numpy(), scores_and_labels[1].numpy()

    def peers():
        ap, auc = average_precision_score(y, s), roc_auc_score(y, s)
        lesion = y.sum()
        dice = max(2 * (p & y).sum() / (p.sum() + lesion) for p in (s >= t for t in np.linspace(s.min(), s.max(), 100)))
        return ap, auc, dice

    _run(benchmark, peers, rounds=3)
