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

import hashlib
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dal._version import __version__
from dal.data.augment import Augmentation
from dal.data.io import Scan, load_label, load_mask, load_scan, load_tissue
from dal.data.layouts import find_cases
from dal.data.outputs import OutputError, remove_dead_temporaries, write_atomic
from dal.data.preprocess import PREPROCESSING_VERSION, Preprocessor
from dal.data.synthetic import GENERATOR_VERSION, generate_case
from dal.data.templates import normalised_tissue
from dal.errors import ArgumentError


@dataclass
class ModelVolume:
    """A volume in model space, the one volume type of training, validation and calibration:
    ``image`` and ``mask`` (X, Y, Z); ``tissue`` (3, X, Y, Z) CSF, GM, WM or None; ``label``
    (X, Y, Z) uint8 lesion label (any non-zero voxel is lesion) or None; the ``contrast`` and
    ``lesion`` kind where known (validation reports AP by each)."""

    image: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray | None = None
    name: str = ""
    label: np.ndarray | None = None
    contrast: str = ""
    lesion: str = ""

    @property
    def healthy(self) -> bool:
        """No lesion voxel (no label, or an empty one)."""
        return self.label is None or not self.label.any()


def _model_tissue(tissue: np.ndarray, done, preprocessor: Preprocessor) -> np.ndarray:
    """Tissue maps (3, ...) on the scan's grid -> model space, renormalised in the mask."""
    return normalised_tissue(np.stack([preprocessor.to_model(t, done.state, "linear") for t in tissue]), done.mask)


def load_volumes(root, contrast: str | None = None, preprocessor: Preprocessor | None = None, *,
                 tissue: bool = True) -> list[ModelVolume]:
    """Every case of a data folder (any layout of :func:`~dal.data.layouts.find_cases`) in model
    space: its ``contrast`` scan, with its brain mask, label and (with ``tissue``) tissue maps
    where the case has them. A case without a label, or with an empty one, is healthy."""
    preprocessor = preprocessor or Preprocessor()
    volumes = []
    for case in find_cases(root, contrast):
        scan = load_scan(case.image(contrast))
        mask = load_mask(case.mask, scan) if case.mask else None
        done = preprocessor.forward(scan, mask)
        maps = _model_tissue(load_tissue(case.tissue, scan), done, preprocessor) if tissue and case.tissue else None
        label = None
        if case.label:
            label = preprocessor.to_model(load_label(case.label, scan).astype(np.uint8), done.state, "nearest")
            label = label.astype(np.uint8)
        volumes.append(ModelVolume(done.image, done.mask, maps, name=case.id, label=label, contrast=contrast or ""))
    return volumes


def synthetic_volume(seed: Sequence[int], contrast: str, lesion: str = "none", preprocessor: Preprocessor | None = None,
                     *, tissue: bool = True, cache: Path | None = None, name: str | None = None) -> ModelVolume:
    """One synthetic subject in model space: the one way training, validation and the tests make one.

    The subject of ``seed`` (:func:`~dal.data.synthetic.generate_case`) with one ``contrast`` scan
    and a ``lesion`` ("none" for healthy) goes through ``preprocessor`` (default config) like any
    scan, its label and (with ``tissue``) tissue maps too; the scans are on the template's 2 mm
    grid (no resampling loss). With ``cache`` (a folder) the model-space arrays are stored there
    under a hash of everything they depend on, and read back the next time.
    """
    preprocessor = preprocessor or Preprocessor()

    def make() -> dict[str, np.ndarray]:
        case = generate_case(tuple(seed), (contrast,), lesion)
        done = preprocessor.forward(Scan(case.images[contrast], case.affine, None), mask=case.mask)
        arrays = {"image": done.image, "mask": done.mask}
        if lesion != "none":
            arrays["label"] = preprocessor.to_model(case.label, done.state, "nearest").astype(np.uint8)
        if tissue:
            arrays["tissue"] = _model_tissue(case.tissue, done, preprocessor)
        return arrays

    key = {"seed": list(seed), "contrast": contrast, "lesion": lesion, "tissue": tissue,
           "preprocessing": preprocessor.config.to_dict()}
    arrays = make() if cache is None else _cached(cache, key, make)
    return ModelVolume(arrays["image"], arrays["mask"].astype(bool), arrays.get("tissue"),
                       name=name or f"synth-{'-'.join(map(str, seed))}-{contrast}-{lesion}", label=arrays.get("label"),
                       contrast=contrast, lesion=lesion)


def _cached(cache: Path, key: dict, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``make()``'s arrays, stored in ``cache`` under a hash of ``key`` (written atomically)."""
    digest = hashlib.sha256(json.dumps({**key, "dal": __version__, "generator": GENERATOR_VERSION,
                                        "preprocessing_code": PREPROCESSING_VERSION},
                                       sort_keys=True).encode()).hexdigest()[:24]
    path = cache / f"{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache entry: make it again
    arrays = make()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(cache)
        write_atomic(path, lambda tmp: np.savez_compressed(tmp, **arrays))
    except (OSError, OutputError) as error:  # the cache saves time only: go on without it
        warnings.warn(f"synthetic cache {cache}: cannot store an entry ({error}); going on without it", stacklevel=3)
    return arrays


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
            raise ArgumentError("volumes: expected at least one volume")
        shapes = {v.image.shape for v in volumes}
        if len(shapes) != 1:
            raise ArgumentError(f"volumes: expected one shape, got {sorted(shapes)}")
        self.volumes = list(volumes)
        self.augmentation = augmentation or Augmentation()
        self.seed = int(seed)
        self.epoch = 0
        self.has_tissue = all(v.tissue is not None for v in self.volumes)
        self.slices = [(n, z) for n, v in enumerate(self.volumes)
                       for z in np.flatnonzero(v.mask.mean(axis=(0, 1)) >= min_brain_fraction)]
        if not self.slices:
            raise ArgumentError(f"volumes: no slice has {min_brain_fraction:.0%} of its pixels in the brain mask")

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
