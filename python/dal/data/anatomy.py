"""A real subject's healthy anatomy, as the synthetic generator takes it (``dal synth --anatomy``).

A scan (skull-stripped, or with a brain mask) and its tissue maps become a :class:`RealAnatomy`:
CSF, GM and WM probabilities summing to one in the brain, on the scan's own voxel grid. The maps
come from, in order of preference:

- tissue probability maps, 4D (X, Y, Z, 3: CSF, GM, WM), as ``dal synth`` writes them;
- a label volume with 1 = CSF, 2 = GM, 3 = WM (FSL FAST's ``_seg`` convention; other values
  inside the brain count as the nearest of the three by intensity);
- neither: a 3-class Gaussian mixture fit of the scan's intensities inside the brain, the
  classes ordered as the scan's contrast orders CSF, GM and WM (``TISSUE_INTENSITY``).

The generator then places its lesions by these maps, keeps the scan itself for its own contrast
and renders the other contrasts from the maps: a labelled test set made of a real brain that no
part of dal generated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from dal.data.io import DataError, Scan, load_mask, load_scan, load_tissue, nifti_stem
from dal.data.synthetic import CONTRASTS, TISSUE_INTENSITY, SamplingSource, make_source
from dal.data.templates import TISSUES, normalised_tissue

FAST_LABELS = {1: "csf", 2: "gm", 3: "wm"}


@dataclass
class RealAnatomy:
    """A real subject: ``image`` (X, Y, Z) float32 (zero outside the brain), ``tissue`` (3, X, Y, Z)
    CSF, GM, WM summing to one in ``mask``, the voxel-to-world ``affine``, the scan's ``contrast``
    and a ``name`` for manifests."""

    image: np.ndarray
    tissue: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    contrast: str
    name: str
    _source: SamplingSource | None = field(default=None, repr=False)

    @property
    def source(self) -> SamplingSource:
        """The generator's sampling source of this anatomy (built once)."""
        if self._source is None:
            self._source = make_source(self.tissue, self.mask, self.affine, self.image)
        return self._source


def tissue_from_labels(labels: np.ndarray, image: np.ndarray, mask: np.ndarray, where: str) -> np.ndarray:
    """(3, X, Y, Z) one-hot CSF, GM, WM from FAST-style labels (1, 2, 3); brain voxels of any
    other value take the tissue whose median intensity is nearest theirs."""
    labels = np.rint(labels).astype(np.int64)
    tissue = np.stack([(labels == value) & mask for value in FAST_LABELS]).astype(np.float32)
    if tissue.sum(axis=(1, 2, 3)).min() == 0:
        raise DataError(f"{where}: expected labels 1 (CSF), 2 (GM) and 3 (WM) inside the brain, "
                        f"got values {sorted(np.unique(labels[mask]).tolist())[:10]}")
    other = mask & (tissue.sum(axis=0) == 0)
    if other.any():
        medians = np.array([np.median(image[t > 0]) for t in tissue])
        nearest = np.abs(image[other][:, None] - medians[None]).argmin(axis=1)
        for k in range(3):
            tissue[k][other] = nearest == k
    return tissue


def fit_tissue(image: np.ndarray, mask: np.ndarray, contrast: str, seed: int = 0) -> np.ndarray:
    """(3, X, Y, Z) CSF, GM, WM posteriors of a 3-class Gaussian mixture of the brain's intensities
    (scikit-learn), the classes named by the contrast's order of the three tissues."""
    from sklearn.mixture import GaussianMixture  # imported here: only this path needs scikit-learn

    values = image[mask].astype(np.float64)[:, None]
    sample = values[np.random.default_rng(seed).permutation(len(values))[:200_000]]
    mixture = GaussianMixture(3, random_state=seed).fit(sample)
    order = np.argsort(mixture.means_[:, 0])  # components from darkest to brightest
    expected = np.argsort([TISSUE_INTENSITY[contrast][t] for t in TISSUES])  # tissues from darkest
    posterior = mixture.predict_proba(values)
    tissue = np.zeros((3, *image.shape), np.float32)
    for rank, k in enumerate(expected):
        tissue[k][mask] = posterior[:, order[rank]]
    return tissue


def load_anatomy(path: str | os.PathLike, *, tissue: str | os.PathLike | None = None,
                 mask: str | os.PathLike | None = None, contrast: str = "t1") -> RealAnatomy:
    """A real scan's anatomy for the generator.

    Args:
        path: the scan (NIfTI).
        tissue: 4D tissue maps or a 3D label volume (1 CSF, 2 GM, 3 WM) on the scan's grid;
            None: a 3-class fit of the scan.
        mask: the brain mask on the scan's grid; None: the scan's non-zero voxels (skull-stripped),
            or, with labelled tissue, the labelled voxels.
        contrast: the scan's contrast ("t1", "t2", "flair" or "pd").

    Raises:
        DataError: a file is unreadable or off the scan's grid, the brain is empty.
    """
    if contrast not in CONTRASTS:
        raise DataError(f"--anatomy-contrast: expected one of {CONTRASTS}, got {contrast!r}")
    scan: Scan = load_scan(path, kind="anatomy")
    image = np.maximum(scan.data, 0)
    maps = None
    if tissue is not None:
        labels = load_scan(tissue, kind="tissue labels") if not _is_4d(tissue) else None
        if labels is not None:
            if labels.data.shape != image.shape:
                raise DataError(f"tissue labels {tissue}: shape {labels.data.shape} differs from the anatomy's {image.shape}")
        else:
            maps = load_tissue(tissue, scan)[:3]
    if mask is not None:
        brain = load_mask(mask, scan)
    elif tissue is not None and maps is None:
        brain = np.isin(np.rint(labels.data), list(FAST_LABELS))
    else:
        brain = image > 0
    brain &= image > 0
    if brain.sum() < 1000:
        raise DataError(f"anatomy {path}: fewer than 1000 brain voxels (give its brain mask with --anatomy-mask)")
    if tissue is None:
        maps = fit_tissue(image, brain, contrast)
    elif maps is None:
        maps = tissue_from_labels(labels.data, image, brain, f"tissue labels {tissue}")
    maps = normalised_tissue(maps, brain)
    brain &= maps.sum(axis=0) > 0.5
    return RealAnatomy(image=(image * brain).astype(np.float32), tissue=maps * brain, mask=brain,
                       affine=scan.affine, contrast=contrast, name=nifti_stem(path))


def _is_4d(path) -> bool:
    import nibabel as nib

    try:
        return len(nib.load(str(path)).shape) == 4
    except Exception:  # unreadable: load_scan says why
        return False
