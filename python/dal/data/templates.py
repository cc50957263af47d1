"""The MNI152 2009 template, brain mask and tissue maps that ship inside nilearn (no download)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

TISSUES = ("csf", "gm", "wm")


@dataclass(frozen=True)
class Template:
    """MNI152 maps on one grid: T1 intensity, binary brain mask, tissue probabilities (CSF, GM, WM).

    ``tissue`` has shape (3, X, Y, Z) and sums to exactly one inside ``mask`` (zero outside):
    nilearn's GM and WM maps are rescaled where they add up to more than one, and CSF is the rest,
    as docs/design.md defines it (brain mask - GM - WM).
    """

    t1: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> float:
        return float(abs(self.affine[0, 0]))


def normalised_tissue(tissue: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tissue maps (3, X, Y, Z) restricted to ``mask`` and renormalised to sum to one in it
    (resampling and the mask's edge leave sums below one); zero where no tissue is left. float32."""
    tissue = tissue * mask
    total = tissue.sum(axis=0)
    return np.where(mask & (total > 1e-6), tissue / np.maximum(total, 1e-6), 0).astype(np.float32)


def tissue_from_gm_wm(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tissue maps (CSF, GM, WM) summing to one inside ``mask``: GM and WM clipped to [0,1] and
    rescaled where their sum exceeds one, CSF = 1 - GM - WM; all zero outside the mask."""
    gm = np.clip(gm, 0, 1)
    wm = np.clip(wm, 0, 1)
    total = gm + wm
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-6), 1.0)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(1 - gm - wm, 0, 1)
    return np.stack([csf, gm, wm]).astype(np.float32) * mask.astype(np.float32)


@functools.lru_cache(maxsize=2)
def load_mni152(resolution: int = 2) -> Template:
    """The nilearn MNI152 2009 maps at ``resolution`` mm (1 or 2), cached per process."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution)
    mask = datasets.load_mni152_brain_mask(resolution=resolution).get_fdata() > 0.5
    gm = datasets.load_mni152_gm_template(resolution=resolution).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=resolution).get_fdata()
    t1_data = np.clip(t1.get_fdata(), 0, None).astype(np.float32)
    for array in (t1_data, mask):
        array.setflags(write=False)
    tissue = tissue_from_gm_wm(gm, wm, mask)
    tissue.setflags(write=False)
    return Template(t1=t1_data, mask=mask, tissue=tissue, affine=np.asarray(t1.affine, dtype=np.float64))


@functools.lru_cache(maxsize=2)
def brain_centre(resolution: int = 2) -> np.ndarray:
    """World point (mm) at the centre of the template brain mask's bounding box."""
    template = load_mni152(resolution)
    index = np.argwhere(template.mask)
    centre = (index.min(axis=0) + index.max(axis=0)) / 2
    return template.affine[:3, :3] @ centre + template.affine[:3, 3]
