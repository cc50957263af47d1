"""The losses of DAL and its baselines; each returns a scalar and is 0 for a perfect answer."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all pixels (the scans are 0 outside the brain, and so must be
    their reconstructions)."""
    return (x_hat - x).abs().mean()


def prior_loss(logits: torch.Tensor, tissue: torch.Tensor) -> torch.Tensor:
    """KL divergence KL(tissue || softmax(logits)) per pixel, summed over classes, averaged over
    pixels: 0 when the anatomy's probabilities equal the tissue maps.

    Args:
        logits: (N, K, H, W) anatomy logits.
        tissue: (N, K, H, W) tissue probabilities (summing to one per pixel).
    """
    log_p = F.log_softmax(logits.float(), 1)
    target = tissue.float()
    entropy_term = torch.where(target > 0, target * torch.log(target.clamp_min(1e-12)), torch.zeros_like(target))
    return (entropy_term - target * log_p).sum(1).mean()


def invariance_loss(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of the L1 distance between the two views' anatomy probabilities (0 to 2)."""
    return (F.softmax(logits_1.float(), 1) - F.softmax(logits_2.float(), 1)).abs().sum(1).mean()


def restoration_loss(logits: torch.Tensor, anatomy: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of restored anatomy logits (N, K, H, W) against a one-hot anatomy (N, K, H, W).
    The one-hot is given as class probabilities: the same value as its arg-max as class indices,
    without an arg-max over the channels of a channels-last tensor."""
    return F.cross_entropy(logits.float(), anatomy.float())
