"""The 2D slice data set DAL trains on: axial slices inside the brain, two augmented views each.

Volumes are held in model space (after :class:`~dal.data.preprocess.Preprocessor`), so training
sees exactly what inference will. Each item is a dict of float32 tensors:

- ``image`` (1, H, W): the slice as preprocessed;
- ``view1``, ``view2`` (1, H, W): two independent random imaging changes of it (the same anatomy);
- ``mask`` (1, H, W): the brain mask, 0 or 1;
- ``tissue`` (4, H, W): background, CSF, GM, WM probabilities summing to one at every pixel
  (only when the volumes have tissue maps).

Randomness: item ``i`` of epoch ``e`` draws from ``numpy.random.default_rng([seed, e, i])``, so
the data set is deterministic for a seed, whatever worker process serves the item and in whatever
order. Call :meth:`SliceDataset.set_epoch` before each epoch (DataLoader workers copy the data set
each time the loader is iterated, unless ``persistent_workers``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dal.data.augment import Augmentation
from dal.data.io import Scan, load_mask, load_scan, load_tissue
from dal.data.layouts import find_cases
from dal.data.preprocess import Preprocessor
from dal.data.synthetic import CONTRASTS, generate_case


@dataclass
class ModelVolume:
    """A volume in model space: ``image`` and ``mask`` (X, Y, Z); ``tissue`` (3, X, Y, Z) CSF, GM, WM
    or None; ``label`` (X, Y, Z) uint8 lesion label (any non-zero voxel is lesion) or None."""

    image: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray | None = None
    name: str = ""
    label: np.ndarray | None = None


def _model_tissue(tissue: np.ndarray, done, preprocessor: Preprocessor) -> np.ndarray:
    """Tissue maps (3, ...) on the scan's grid -> model space, renormalised to sum to one in the mask."""
    tissue = np.stack([preprocessor.to_model(t, done.state, "linear") for t in tissue]) * done.mask
    total = tissue.sum(axis=0)
    return np.where(done.mask, tissue / np.maximum(total, 1e-6), 0).astype(np.float32)


def load_volumes(root, contrast: str | None = None, preprocessor: Preprocessor | None = None) -> list[ModelVolume]:
    """Every case of a data folder (any layout of :func:`~dal.data.layouts.find_cases`) in model
    space: its ``contrast`` scan, with its brain mask, tissue maps and label where the case has them."""
    preprocessor = preprocessor or Preprocessor()
    volumes = []
    for case in find_cases(root, contrast):
        scan = load_scan(case.image(contrast))
        mask = load_mask(case.mask, scan) if case.mask else None
        done = preprocessor.forward(scan, mask)
        tissue = _model_tissue(load_tissue(case.tissue, scan), done, preprocessor) if case.tissue else None
        label = None
        if case.label:
            label = load_mask(case.label, scan, kind="label", allow_zero=True).astype(np.uint8)  # on the scan's grid
            label = preprocessor.to_model(label, done.state, "nearest").astype(np.uint8)
        volumes.append(ModelVolume(done.image, done.mask, tissue, name=case.id, label=label))
    return volumes


def synthetic_volumes(count: int, contrasts: Sequence[str] = CONTRASTS, seed: int = 0,
                      preprocessor: Preprocessor | None = None, lesions: Sequence[str] = ("none",)) -> list[ModelVolume]:
    """``count`` synthetic subjects in model space, with their tissue maps and labels; healthy by default.

    Subject ``i`` has seed ``(seed, i)``, contrast ``contrasts[i % len(contrasts)]`` and lesion
    ``lesions[i % len(lesions)]``; it goes through ``preprocessor`` (default config) like any scan,
    its tissue maps and label too. The scans are on the template's 2 mm grid (no resampling loss).
    """
    preprocessor = preprocessor or Preprocessor()
    volumes = []
    for i in range(count):
        contrast, lesion = contrasts[i % len(contrasts)], lesions[i % len(lesions)]
        case = generate_case((seed, i), (contrast,), lesion)
        done = preprocessor.forward(Scan(case.images[contrast], case.affine, None), mask=case.mask)
        tissue = _model_tissue(case.tissue, done, preprocessor)
        label = preprocessor.to_model(case.label, done.state, "nearest").astype(np.uint8)
        volumes.append(ModelVolume(done.image, done.mask, tissue, name=f"synth-{seed}-{i}-{contrast}-{lesion}",
                                   label=label))
    return volumes


class SliceDataset(torch.utils.data.Dataset):
    """Axial slices with at least ``min_brain_fraction`` of their pixels in the brain, each with
    two augmented views (see the module docstring).

    Args:
        volumes: model-space volumes (all of one shape).
        augmentation: the imaging changes; default :class:`Augmentation`.
        seed: the data set's seed.
        min_brain_fraction: least fraction of a slice's pixels inside the brain mask.
    """

    def __init__(self, volumes: Sequence[ModelVolume], augmentation: Augmentation | None = None, seed: int = 0,
                 min_brain_fraction: float = 0.05):
        if not volumes:
            raise ValueError("volumes: expected at least one volume")
        shapes = {v.image.shape for v in volumes}
        if len(shapes) != 1:
            raise ValueError(f"volumes: expected one shape, got {sorted(shapes)}")
        self.volumes = list(volumes)
        self.augmentation = augmentation or Augmentation()
        self.seed = int(seed)
        self.epoch = 0
        self.has_tissue = all(v.tissue is not None for v in self.volumes)
        self.slices = [(n, z) for n, v in enumerate(self.volumes)
                       for z in np.flatnonzero(v.mask.mean(axis=(0, 1)) >= min_brain_fraction)]
        if not self.slices:
            raise ValueError(f"volumes: no slice has {min_brain_fraction:.0%} of its pixels in the brain mask")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        volume_index, z = self.slices[index]
        volume = self.volumes[volume_index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, mask = volume.image[:, :, z], volume.mask[:, :, z]
        tissue = volume.tissue[:, :, :, z] if self.has_tissue else None
        item = {"image": image[None], "mask": mask[None].astype(np.float32),
                "view1": self.augmentation(image, mask, tissue, rng)[None],
                "view2": self.augmentation(image, mask, tissue, rng)[None]}
        if tissue is not None:
            item["tissue"] = np.concatenate([(~mask)[None].astype(np.float32), tissue])
        return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in item.items()}
