"""Where training and validation volumes come from: the embedded synthetic population (generated
once, cached on disk) or data folders, all brought to model space by the same Preprocessor.

Synthetic subjects: training subject ``i`` has seed ``(seed, 0, i)`` and contrast
``synthetic_contrasts[i % n]``; validation subjects ``(seed, 1, j)`` (one per contrast and lesion
type) and healthy validation subjects ``(seed, 2, j)``: three disjoint populations.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dal._version import __version__
from dal.data.dataset import ModelVolume
from dal.data.io import DataError, Scan
from dal.data.outputs import OutputError, remove_dead_temporaries, write_atomic
from dal.data.preprocess import Preprocessor
from dal.data.synthetic import GENERATOR_VERSION, generate_case


@dataclass
class LabelledVolume:
    """A validation volume in model space: ``label`` None for a healthy one."""

    image: np.ndarray
    mask: np.ndarray
    label: np.ndarray | None
    name: str
    contrast: str = ""
    lesion: str = ""

    @property
    def healthy(self) -> bool:
        return self.label is None or not self.label.any()


def cache_folder(configured: str | None) -> Path:
    return Path(configured or os.environ.get("DAL_CACHE") or Path.home() / ".cache" / "dal") / "synthetic"


def _cached(cache: Path, key: dict, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``make()``'s arrays, stored in ``cache`` under a hash of ``key`` (written atomically)."""
    digest = hashlib.sha256(json.dumps({**key, "dal": __version__, "generator": GENERATOR_VERSION}, sort_keys=True).encode()).hexdigest()[:24]
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
        warnings.warn(f"synthetic cache {cache}: cannot store an entry ({error}); going on without it", stacklevel=2)
    return arrays


def _synthetic(seed: tuple[int, ...], contrast: str, lesion: str, preprocessor: Preprocessor, cache: Path,
               with_tissue: bool) -> dict[str, np.ndarray]:
    def make():
        case = generate_case(seed, (contrast,), lesion)
        done = preprocessor.forward(Scan(case.images[contrast], case.affine, None), mask=case.mask)
        arrays = {"image": done.image, "mask": done.mask}
        if lesion != "none":
            arrays["label"] = preprocessor.to_model(case.label, done.state, "nearest").astype(np.uint8)
        if with_tissue:
            tissue = np.stack([preprocessor.to_model(t, done.state, "linear") for t in case.tissue]) * done.mask
            total = tissue.sum(axis=0)
            arrays["tissue"] = np.where(done.mask, tissue / np.maximum(total, 1e-6), 0).astype(np.float32)
        return arrays

    key = {"seed": list(seed), "contrast": contrast, "lesion": lesion, "tissue": with_tissue,
           "preprocessing": preprocessor.config.to_dict()}
    return _cached(cache, key, make)


def synthetic_training_volumes(count: int, contrasts, seed: int, preprocessor: Preprocessor,
                               cache: Path) -> list[ModelVolume]:
    volumes = []
    for i in range(count):
        contrast = contrasts[i % len(contrasts)]
        arrays = _synthetic((seed, 0, i), contrast, "none", preprocessor, cache, with_tissue=True)
        volumes.append(ModelVolume(arrays["image"], arrays["mask"].astype(bool), arrays["tissue"],
                                   name=f"synth-train-{i}-{contrast}"))
    return volumes


def synthetic_validation_volumes(contrasts, lesions, healthy_per_contrast: int, seed: int, preprocessor: Preprocessor,
                                 cache: Path) -> list[LabelledVolume]:
    volumes = []
    pairs = [(c, lesion) for lesion in lesions for c in contrasts]
    for j, (contrast, lesion) in enumerate(pairs):
        arrays = _synthetic((seed, 1, j), contrast, lesion, preprocessor, cache, with_tissue=False)
        volumes.append(LabelledVolume(arrays["image"], arrays["mask"].astype(bool), arrays["label"],
                                      f"synth-val-{j}-{contrast}-{lesion}", contrast, lesion))
    for j in range(healthy_per_contrast * len(contrasts)):
        contrast = contrasts[j % len(contrasts)]
        arrays = _synthetic((seed, 2, j), contrast, "none", preprocessor, cache, with_tissue=False)
        volumes.append(LabelledVolume(arrays["image"], arrays["mask"].astype(bool), None,
                                      f"synth-healthy-{j}-{contrast}", contrast, "none"))
    return volumes


def folder_training_volumes(root: str, contrast: str | None, preprocessor: Preprocessor) -> list[ModelVolume]:
    """Every case of a data folder in model space, with tissue maps where the cases have them."""
    from dal.data import load_volumes  # lands with dal.data.layouts

    return load_volumes(root, contrast, preprocessor)


def with_template_tissue(volumes: list[ModelVolume], preprocessor: Preprocessor) -> list[ModelVolume]:
    """Volumes in MNI152 space (``register``) given the MNI152 tissue maps as their anatomical
    prior where they have none of their own, restricted to each brain mask and renormalised."""
    from dal.data.resample import resample, voxel_map
    from dal.data.templates import brain_centre, load_mni152

    config = preprocessor.config
    template = load_mni152(2)
    model_affine = np.diag([config.spacing] * 3 + [1.0])
    model_affine[:3, 3] = brain_centre() - config.spacing * (np.array(config.shape) - 1) / 2
    index_map = voxel_map(template.affine, model_affine)
    maps = np.stack([resample(t, index_map, config.shape, antialias=config.antialias) for t in template.tissue])
    out = []
    for volume in volumes:
        if volume.tissue is None:
            tissue = maps * volume.mask
            total = tissue.sum(axis=0)
            tissue = np.where(volume.mask, tissue / np.maximum(total, 1e-6), 0).astype(np.float32)
            volume = ModelVolume(volume.image, volume.mask, tissue, volume.name)
        out.append(volume)
    return out


def folder_validation_volumes(root: str, contrast: str | None, preprocessor: Preprocessor) -> list[LabelledVolume]:
    """The cases of a labelled folder in model space; cases without a label file count as healthy."""
    from dal.data.io import load_mask, load_scan
    from dal.data.layouts import find_cases

    volumes = []
    for case in find_cases(root, contrast):
        scan = load_scan(case.image(contrast))
        done = preprocessor.forward(scan, load_mask(case.mask, scan) if case.mask else None)
        label = None
        if case.label is not None:
            raw = load_scan(case.label).data
            if raw.shape != scan.data.shape:
                raise DataError(f"label {case.label}: shape {raw.shape} differs from its scan's {scan.data.shape}")
            label = (preprocessor.to_model((raw != 0).astype(np.float32), done.state, "nearest") > 0).astype(np.uint8)
        volumes.append(LabelledVolume(done.image, done.mask, label, case.id, contrast or "", ""))
    return volumes
