"""Resampling between voxel grids with SimpleITK (multi-threaded), given a voxel-to-voxel affine map.

Grids are plain arrays plus 4x4 voxel-to-world affines (nibabel's convention, RAS mm). The index
map from output voxels to input voxels is ``inv(A_in) @ W @ A_out``, with W an optional world
transform (the inverse of a registration). SimpleITK sees both arrays with identity geometry, so
its "physical" space is the voxel index space and no LPS/RAS convention is involved.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk

from dal.errors import ArgumentError

INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}


def voxel_map(affine_in: np.ndarray, affine_out: np.ndarray, world: np.ndarray | None = None) -> np.ndarray:
    """The 4x4 map from output voxel indices to input voxel indices; ``world`` maps output world
    points to input world points (identity when None)."""
    world = np.eye(4) if world is None else world
    return np.linalg.inv(affine_in) @ world @ affine_out


def field_of_view_grid(affine: np.ndarray, shape, spacing: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """An axis-aligned RAS grid of ``spacing`` mm that covers the field of view of (affine, shape)."""
    corners = np.array([[i, j, k, 1] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)]) @ affine.T
    low, high = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
    size = tuple(int(n) for n in np.maximum(np.round((high - low) / spacing), 1))
    grid = np.diag([spacing, spacing, spacing, 1.0])
    grid[:3, 3] = (low + high) / 2 - spacing * (np.array(size) - 1) / 2
    return size, grid


def antialias_sigmas(index_map: np.ndarray) -> np.ndarray:
    """Gaussian sigmas (input voxels) that keep a downsampling from aliasing: for each input axis,
    the output step seen along it, ``(step - 1) / 2`` where the step exceeds one (scikit-image's rule)."""
    steps = np.abs(index_map[:3, :3]).max(axis=1)
    return np.maximum(0.0, (steps - 1) / 2)


def resample(volume: np.ndarray, index_map: np.ndarray, shape: tuple[int, ...], *, interpolation: str = "linear",
             antialias: bool = False, fill: float = 0.0) -> np.ndarray:
    """Sample ``volume`` on a new grid of ``shape``; output voxel v takes the input at ``index_map @ v``.

    Args:
        volume: (X, Y, Z) array.
        index_map: 4x4 output-voxel to input-voxel map (see :func:`voxel_map`).
        shape: output shape.
        interpolation: "linear", "nearest" or "bspline".
        antialias: Gaussian-smooth the input first where the output grid is coarser.
        fill: value outside the input's field of view.

    Returns:
        float32 array of ``shape`` ("nearest" keeps the values, so labels stay labels).
    """
    if interpolation not in INTERPOLATORS:
        raise ArgumentError(f"interpolation: expected one of {tuple(INTERPOLATORS)}, got {interpolation!r}")
    # SimpleITK indexes a C-ordered (X, Y, Z) array as (Z, Y, X): reverse the axes of the map
    # instead of copying the volume.
    reverse = np.eye(4)[[2, 1, 0, 3]]
    sitk_map = reverse @ index_map @ reverse
    volume = np.asarray(volume, dtype=np.float32)
    if antialias and interpolation != "nearest":
        sigmas = antialias_sigmas(index_map)
        if np.any(sigmas > 0):  # scipy's separable filter is the fastest of the Gaussians at hand
            volume = ndi.gaussian_filter(volume, sigmas, truncate=3.0)
    image = sitk.GetImageFromArray(volume, isVector=False)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(sitk_map[:3, :3].ravel().tolist())
    transform.SetTranslation(sitk_map[:3, 3].tolist())
    size = [int(s) for s in shape[::-1]]
    out = sitk.Resample(image, size, transform, INTERPOLATORS[interpolation], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                        (1, 0, 0, 0, 1, 0, 0, 0, 1), float(fill), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
