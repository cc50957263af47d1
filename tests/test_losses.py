"""Each loss on hand-made cases: zero for a perfect answer, positive otherwise."""
import pytest
import torch
import torch.nn.functional as F

from dal.models.losses import invariance_loss, prior_loss, reconstruction_loss, restoration_loss


def _tissue(n=2, k=4, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.softmax(torch.randn(n, k, h, w, generator=g) * 2, 1)


def test_reconstruction_zero_when_perfect_and_l1_otherwise():
    x = torch.rand(2, 1, 8, 8)
    assert reconstruction_loss(x.clone(), x) == 0
    assert reconstruction_loss(x + 0.25, x) == pytest.approx(0.25)


def test_prior_zero_when_probabilities_match_the_tissue_maps():
    tissue = _tissue()
    assert prior_loss(torch.log(tissue), tissue) == pytest.approx(0.0, abs=1e-6)
    assert prior_loss(torch.zeros_like(tissue), tissue) > 0.05


def test_prior_with_one_hot_tissue_vanishes_for_confident_logits():
    labels = torch.randint(0, 4, (2, 8, 8))
    tissue = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    assert prior_loss(tissue * 40, tissue) < 1e-6
    assert prior_loss(tissue.roll(1, 1) * 40, tissue) > 10


def test_prior_is_a_kl_divergence():
    tissue, other = _tissue(seed=0), _tissue(seed=1)
    expected = F.kl_div(torch.log(other), tissue, reduction="none").sum(1).mean()
    assert prior_loss(torch.log(other), tissue) == pytest.approx(float(expected), rel=1e-5)


def test_invariance_zero_for_equal_anatomy_and_bounded():
    logits = torch.randn(2, 4, 8, 8)
    assert invariance_loss(logits, logits + 3.0) == pytest.approx(0.0, abs=1e-6)  # softmax ignores shifts
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    one, other = (F.one_hot(labels + i, 4).permute(0, 3, 1, 2).float() * 50 for i in (0, 1))
    assert invariance_loss(one, other) == pytest.approx(2.0, abs=1e-4)


def test_restoration_zero_for_confident_correct_logits():
    labels = torch.randint(0, 4, (2, 8, 8))
    anatomy = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    assert restoration_loss(anatomy * 50, anatomy) < 1e-6
    assert restoration_loss(anatomy.roll(1, 1) * 50, anatomy) > 10
    logits = torch.randn(anatomy.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(restoration_loss(logits, anatomy), F.cross_entropy(logits, anatomy.argmax(1)))
