"""Small scans and models for the tests of dal infer / dal evaluate (fast: no template warping).

A phantom is an ellipsoidal "brain" (white-matter core, grey shell, a dark ventricle, noise) with
an optional bright spherical lesion and its label. The oracle model's pseudo-healthy image is the
scan with intensities clipped to the healthy range, so its score map is exactly the lesion: a
test of the geometry of the whole pipeline (model space and back to any input grid).
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn as nn

from dal.data.preprocess import PreprocessConfig
from dal.engine.checkpoint import Checkpoint, save_checkpoint
from dal.engine.config import Config
from dal.models import build_model

SHAPE = (40, 48, 40)
SPACING = 3.0
PREPROCESSING = PreprocessConfig(spacing=4.0, shape=(40, 48, 40))
TINY = dict(channels=4, levels=2, restoration_channels=4, code_channels=4, decoder_channels=4, ae_latent=4)
THRESHOLDS = {"fpr_0.01": 0.3, "fpr_0.05": 0.2}
LESION_CENTRE_MM = np.array([18.0, 10.0, 12.0])
LESION_RADIUS_MM = 13.0


def ras_affine(shape=SHAPE, spacing=SPACING) -> np.ndarray:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (np.array(shape) - 1) / 2
    return affine


def phantom(affine: np.ndarray | None = None, shape=SHAPE, lesion: bool = True, seed: int = 0):
    """(scan, label, brain) float32/uint8 arrays on the grid ``shape`` x ``affine`` (any
    orientation): the same object in world space whatever the grid."""
    affine = ras_affine(shape) if affine is None else affine
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    radius = np.sqrt(((world / np.array([52.0, 62.0, 50.0])) ** 2).sum(-1))
    brain = radius < 1
    scan = np.where(radius < 0.75, 100.0, 60.0) * brain
    scan[np.sqrt(((world - [0, -5, 5]) / [8, 14, 8]) ** 2).sum(-1) < 1] = 20.0
    label = np.zeros(shape, np.uint8)
    if lesion:
        label = (np.sqrt(((world - LESION_CENTRE_MM) ** 2).sum(-1)) < LESION_RADIUS_MM).astype(np.uint8)
        scan[label > 0] = 300.0
    scan = scan + np.random.default_rng(seed).normal(0, 3, shape) * brain
    return scan.astype(np.float32), label, brain.astype(np.uint8)


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None, dtype=None) -> Path:
    affine = ras_affine((list(data.shape) + [1, 1])[:3]) if affine is None else affine
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype or data.dtype), affine)
    nib.save(image, str(path))
    return path


class ClippingOracle(nn.Module):
    """Pseudo-healthy image = the scan clipped to the healthy range (the phantom's lesion is far above it)."""

    def __init__(self, ceiling: float = 0.8):
        super().__init__()
        self.ceiling = ceiling

    def pseudo_healthy(self, x: torch.Tensor) -> dict:
        return {"phi": x.clamp(max=self.ceiling)}


def oracle_checkpoint(thresholds=THRESHOLDS, polarity: str = "absolute") -> Checkpoint:
    """The oracle as a checkpoint; its scoring counts both sides of the residual by default (the
    phantom's lesion is bright whatever contrast a test calls it)."""
    config = Config().replace({"scoring.polarity": polarity}).to_dict()
    return Checkpoint(model=ClippingOracle(), model_kind="oracle", config=config,
                      preprocessing=PREPROCESSING.to_dict(), thresholds=dict(thresholds), version="test")


def tiny_checkpoint(path: Path, kind: str = "ae", thresholds=THRESHOLDS) -> Path:
    """A randomly initialised tiny model saved as a real checkpoint (what `dal infer --model` reads)."""
    overrides = {"model.kind": kind, **{f"model.{k}": v for k, v in TINY.items()},
                 "preprocessing.spacing": PREPROCESSING.spacing, "preprocessing.shape": list(PREPROCESSING.shape)}
    config = Config().replace(overrides)
    torch.manual_seed(0)
    return save_checkpoint(path, build_model(config.model), model_kind=kind, config=config.to_dict(),
                           preprocessing=config.preprocessing.to_dict(), thresholds=thresholds)
