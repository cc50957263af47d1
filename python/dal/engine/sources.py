"""Where training and validation volumes come from: the embedded synthetic population (generated
once, cached on disk) or data folders, all brought to model space by the same Preprocessor.

Synthetic subjects: training subject ``i`` has seed ``(seed, 0, i)`` and contrast
``synthetic_contrasts[i % n]``; validation subjects ``(seed, 1, j)`` (one per contrast and lesion
type), healthy validation subjects ``(seed, 2, j)`` and the healthy population scores are
weighed against (``scoring.population``) ``(seed, 3, j)``: four disjoint populations.
"""
from __future__ import annotations

import os
from pathlib import Path

from dal.data.dataset import ModelVolume, load_volumes, synthetic_volume
from dal.data.preprocess import Preprocessor, mni_tissue
from dal.data.templates import normalised_tissue


def cache_folder(configured: str | None) -> Path:
    return Path(configured or os.environ.get("DAL_CACHE") or Path.home() / ".cache" / "dal") / "synthetic"


def synthetic_training_volumes(count: int, contrasts, seed: int, preprocessor: Preprocessor,
                               cache: Path) -> list[ModelVolume]:
    return [synthetic_volume((seed, 0, i), contrasts[i % len(contrasts)], "none", preprocessor, tissue=True,
                             cache=cache, name=f"synth-train-{i}-{contrasts[i % len(contrasts)]}")
            for i in range(count)]


def synthetic_validation_volumes(contrasts, lesions, healthy_per_contrast: int, seed: int, preprocessor: Preprocessor,
                                 cache: Path) -> list[ModelVolume]:
    pairs = [(c, lesion) for lesion in lesions for c in contrasts]
    volumes = [synthetic_volume((seed, 1, j), contrast, lesion, preprocessor, tissue=False, cache=cache,
                                name=f"synth-val-{j}-{contrast}-{lesion}") for j, (contrast, lesion) in enumerate(pairs)]
    for j in range(healthy_per_contrast * len(contrasts)):
        contrast = contrasts[j % len(contrasts)]
        volumes.append(synthetic_volume((seed, 2, j), contrast, "none", preprocessor, tissue=False, cache=cache,
                                        name=f"synth-healthy-{j}-{contrast}"))
    return volumes


def synthetic_population_volumes(per_contrast: int, contrasts, seed: int, preprocessor: Preprocessor,
                                 cache: Path) -> list[ModelVolume]:
    return [synthetic_volume((seed, 3, j), contrasts[j % len(contrasts)], "none", preprocessor, tissue=False, cache=cache,
                             name=f"synth-population-{j}-{contrasts[j % len(contrasts)]}")
            for j in range(per_contrast * len(contrasts))]


def folder_training_volumes(root: str, contrast: str | None, preprocessor: Preprocessor) -> list[ModelVolume]:
    """Every case of a data folder in model space, with tissue maps where the cases have them."""
    return load_volumes(root, contrast, preprocessor)


def folder_validation_volumes(root: str, contrast: str | None, preprocessor: Preprocessor) -> list[ModelVolume]:
    """The cases of a labelled folder in model space; a case without a label file, or with an
    empty one (a healthy case of ``dal synth``), is healthy."""
    return load_volumes(root, contrast, preprocessor, tissue=False)


def with_template_tissue(volumes: list[ModelVolume], preprocessor: Preprocessor) -> list[ModelVolume]:
    """Volumes in MNI152 space (``register``) given the MNI152 tissue maps as their anatomical
    prior where they have none of their own, restricted to each brain mask and renormalised."""
    maps = mni_tissue(preprocessor.config)
    return [volume if volume.tissue is not None else
            ModelVolume(volume.image, volume.mask, normalised_tissue(maps, volume.mask), volume.name, volume.label,
                        volume.contrast, volume.lesion) for volume in volumes]
