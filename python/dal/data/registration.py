"""Affine registration of a scan to the MNI152 template (SimpleITK), with its inverse.

The result is one 4x4 matrix in world (RAS mm) coordinates that maps a point of MNI space to the
matching point of the scan, so resampling the scan into MNI space reads it at ``matrix @ p`` and
the way back uses ``inv(matrix)``. Both images are resampled to a coarse grid first (4 mm by
default): an affine needs no fine detail, and this keeps a registration to a couple of seconds.

Mattes mutual information works across contrasts (the template is T1-weighted), from an initial
alignment of the centres of mass. The template has no skull, so the scan is first cut down to a
rough brain region (:func:`~dal.data.masks.rough_brain_mask`), or to the brain mask given with
it. For a scan with a skull, the template's brain mask brought over this way is the honest
fallback when no skull stripping is at hand: coarse (an affine cannot follow a brain's shape),
not a replacement for HD-BET or SynthStrip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from dal.data.io import DataError, Scan
from dal.data.masks import rough_brain_mask
from dal.data.resample import field_of_view_grid, resample, voxel_map
from dal.data.templates import load_mni152
from dal.errors import ArgumentError


@dataclass
class AffineRegistration:
    """``matrix`` maps MNI world points to scan world points (4x4, RAS mm)."""

    matrix: np.ndarray

    @property
    def inverse_matrix(self) -> np.ndarray:
        return np.linalg.inv(self.matrix)

    def to_dict(self) -> dict:
        return {"matrix": np.asarray(self.matrix).tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "AffineRegistration":
        matrix = np.asarray(data["matrix"], dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ArgumentError(f"matrix: expected 4x4, got {matrix.shape}")
        return cls(matrix)


def _to_sitk(volume: np.ndarray, affine: np.ndarray) -> sitk.Image:
    # Axis-aligned grid: sitk index (x, y, z) = array (i, j, k) after the transpose; physical space = RAS world.
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0), dtype=np.float32))
    image.SetSpacing([float(s) for s in np.diag(affine)[:3]])
    image.SetOrigin([float(o) for o in affine[:3, 3]])
    return image


def register_to_mni(scan: Scan, mask: np.ndarray | None = None, *, spacing: float = 4.0, iterations: int = 200,
                    seed: int = 0) -> AffineRegistration:
    """Find the affine map from MNI152 space to ``scan``.

    Args:
        scan: the scan (any orientation; with or without skull).
        mask: its brain mask (bool, the scan's shape), if one is given: the registration then sees
            the brain inside it only. Without it, a rough brain region found in the image.
        spacing: the grid, in mm, both images are registered on.
        iterations: optimiser iterations per resolution level.
        seed: seed of the metric's random sampling (the result is deterministic for a seed).

    Returns:
        The :class:`AffineRegistration` (MNI world -> scan world).
    """
    if mask is not None and np.shape(mask) != scan.data.shape:
        raise ArgumentError(f"mask: expected the shape of scan {scan.path or '(in memory)'}, {scan.data.shape}, "
                            f"got {np.shape(mask)}")
    template = load_mni152(2)
    fixed_shape, fixed_affine = field_of_view_grid(template.affine, template.t1.shape, spacing)
    fixed = resample(template.t1, voxel_map(template.affine, fixed_affine), fixed_shape, antialias=True)
    # The template has no skull: show the registration the scan's brain only (the given mask, or a
    # rough one made on a 2 mm grid, fine enough to see the skull), else it aligns the brain to the
    # whole head: on ITK's T1 with a skull and its mask, 18% too large a brain without the mask.
    brain_shape, brain_affine = field_of_view_grid(scan.affine, scan.data.shape, 2.0)
    to_scan = voxel_map(scan.affine, brain_affine)
    brain = resample(scan.data, to_scan, brain_shape, antialias=True)
    if mask is None:
        inside = rough_brain_mask(brain)
    else:
        inside = resample((np.asarray(mask) != 0).astype(np.float32), to_scan, brain_shape) >= 0.5
    brain = np.where(inside, brain, 0).astype(np.float32)
    moving_shape, moving_affine = field_of_view_grid(scan.affine, scan.data.shape, spacing)
    moving = resample(brain, voxel_map(brain_affine, moving_affine), moving_shape, antialias=True)
    if not np.any(moving > 0):
        raise DataError(f"scan {scan.path}: nothing to register (no positive intensity)")
    fixed_image, moving_image = _to_sitk(fixed, fixed_affine), _to_sitk(moving, moving_affine)

    initial = sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.25, seed)
    # One thread: ITK's threads sum the metric in an order that changes from run to run, and the
    # registration then differs with them; one thread makes it a function of the seed.
    method.SetNumberOfThreads(1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=iterations,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed_image, moving_image)
    affine = sitk.AffineTransform(sitk.CompositeTransform(transform).GetNthTransform(0)) \
        if isinstance(transform, sitk.CompositeTransform) else sitk.AffineTransform(transform)
    # ITK: y = A (x - c) + c + t, from the fixed (MNI) to the moving (scan) physical space.
    linear = np.array(affine.GetMatrix()).reshape(3, 3)
    centre, translation = np.array(affine.GetCenter()), np.array(affine.GetTranslation())
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = translation + centre - linear @ centre
    return AffineRegistration(matrix)
