"""Brain masks computed from the image alone (no deep learning at hand).

- :func:`otsu_brain_mask`, for skull-stripped scans (the field's convention: BraTS ships them,
  IXI is stripped with HD-BET first).
- :func:`rough_brain_mask`, for scans with a skull: the brain region that survives an erosion
  through the dark skull, grown back. It is only used to point the affine registration to MNI152
  at the brain; the brain mask of such a scan is the template's, brought over by that registration.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from skimage.filters import threshold_otsu


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == np.argmax(sizes)


def _foreground(image: np.ndarray) -> np.ndarray:
    """Voxels above half of Otsu's threshold (dark CSF falls below Otsu's own)."""
    values = image[image > 0]
    if values.size == 0:
        return np.zeros(image.shape, bool)
    return image > 0.5 * threshold_otsu(image if values.size < image.size else values)


def otsu_brain_mask(image: np.ndarray) -> np.ndarray:
    """Brain mask of a skull-stripped scan: half of Otsu's threshold over the volume (dark CSF
    falls below Otsu's own), closing, hole filling, the largest component, a light opening."""
    mask = ndi.binary_closing(_foreground(image), iterations=2, border_value=0)
    mask = _largest_component(ndi.binary_fill_holes(mask))
    return ndi.binary_opening(mask, iterations=1)


def rough_brain_mask(image: np.ndarray, erosion: int = 2) -> np.ndarray:
    """The largest region of the foreground after ``erosion`` voxels of erosion (which cuts the
    scalp from the brain through the dark skull), dilated back inside the foreground, closed and
    filled. On a skull-stripped scan it is about the brain itself."""
    foreground = _foreground(image)
    core = _largest_component(ndi.binary_erosion(foreground, iterations=erosion))
    if not core.any():
        return foreground
    brain = ndi.binary_dilation(core, iterations=erosion) & foreground
    return ndi.binary_fill_holes(ndi.binary_closing(brain, iterations=2))
