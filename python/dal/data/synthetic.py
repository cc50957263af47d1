"""A synthetic population of brain MRI scans, healthy or with lesions, from the MNI152 template.

Each case is one random subject: nilearn's MNI152 2009 brain mask and GM/WM maps (2 mm, shipped
with nilearn, no download) warped by a random small rotation, anisotropic scaling, translation and
a smooth random deformation (plus the mass effect of a tumour), then turned into T1-, T2-, FLAIR-
or PD-like scans by giving each tissue a contrast-specific intensity, mixed by the tissue
probabilities (partial volume), with a multiplicative bias field and texture, a Gaussian blur
(the scanner's point-spread) and Rician noise. Scans are skull-stripped: zero outside the brain
mask, as BraTS ships them.

Lesions, placed in the subject's own space with irregular shapes (a noisy level set) and inner
texture, with intensities that fit each contrast:

- ``tumour``: necrotic core, enhancing rim, peritumoural oedema that spreads in white matter, and
  mass effect (the surrounding anatomy pushed outwards). Label values follow BraTS 2023:
  1 core, 2 oedema, 3 rim.
- ``stroke``: a cortical-subcortical infarct (label 1).
- ``wmh``: several small periventricular white-matter lesions (label 1).

The label is the whole abnormal region (every voxel at least a quarter lesion, so that it covers
what changed, partial volume included): any non-zero voxel is lesion. The tissue maps (CSF, GM,
WM, summing to one inside the brain) describe the subject's healthy anatomy, mass effect
included: they are the anatomical prior that comes with each scan.

Grids: by default a case lies on the template's own 2 mm grid (99 x 117 x 95, MNI affine), the
grid the models train on. For another grid (``spacing``, ``shape``, e.g. 1 mm and 160 x 192 x 160
as ``dal synth`` writes) the anatomy is sampled from the 2 mm maps by trilinear interpolation
through the smooth warp, which is a smooth upsampling (anatomy at 1 mm has the 2 mm template's
detail); lesion shapes, noise and blur are drawn on the output grid itself, so 1 mm cases have
1 mm lesion edges and noise. ``dal synth`` writes scans as int16, as scanners do.

Determinism: a case is a pure function of its seed. The anatomy, the lesion and each contrast use
their own random streams (``numpy.random.default_rng([seed, part])``), so the same seed gives the
same subject whatever contrasts or lesion are asked for, and ``return_healthy=True`` gives the
same scans without the lesion (with the same noise): the pseudo-healthy ground truth.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dal._version import __version__
from dal.data.io import save_nifti
from dal.data.outputs import output_folder
from dal.data.templates import TISSUES, brain_centre, load_mni152
from dal.errors import ArgumentError, DataError

GENERATOR_VERSION = 2  # raised whenever a seed's case changes: cached cases of another version are not reused
CONTRASTS = ("t1", "t2", "flair", "pd")
LESIONS = ("none", "tumour", "stroke", "wmh")

# Mean intensity of each tissue per contrast, relative units (each case jitters them by up to 10%).
# Healthy: csf, gm, wm. Lesions: oedema, rim (enhancing tumour; no contrast agent here), core
# (necrosis), stroke (subacute infarct), wmh.
TISSUE_INTENSITY = {
    "t1":    {"csf": 0.25, "gm": 0.60, "wm": 1.00, "oedema": 0.62, "rim": 0.55, "core": 0.30, "stroke": 0.35, "wmh": 0.70},
    "t2":    {"csf": 1.00, "gm": 0.50, "wm": 0.35, "oedema": 0.80, "rim": 0.62, "core": 0.95, "stroke": 0.85, "wmh": 0.72},
    "flair": {"csf": 0.08, "gm": 0.60, "wm": 0.45, "oedema": 1.00, "rim": 0.85, "core": 0.35, "stroke": 0.95, "wmh": 0.95},
    "pd":    {"csf": 0.85, "gm": 0.85, "wm": 0.70, "oedema": 1.00, "rim": 0.95, "core": 0.95, "stroke": 1.00, "wmh": 0.95},
}
TUMOUR_LABELS = {"core": 1, "oedema": 2, "rim": 3}
LABEL_FRACTION = 0.25  # a voxel is labelled lesion when at least a quarter of it is
COARSE_SPACING_MM = 4.0  # the warp, bias and texture are smooth: computed on a 4 mm grid and upsampled


@dataclass
class SyntheticCase:
    """One synthetic subject.

    Attributes:
        images: contrast name -> scan (float32, zero outside the brain), all on one grid.
        mask: brain mask (bool).
        label: lesion label (uint8, 0 = healthy; tumour parts 1 core, 2 oedema, 3 rim).
        tissue: (3, X, Y, Z) float32 tissue probabilities CSF, GM, WM (sum to one in the mask).
        affine: voxel-to-world (RAS mm) affine of the grid.
        lesion: "none", "tumour", "stroke" or "wmh".
        seed: the seed that made the case.
        healthy: with ``return_healthy``, the same scans without the lesion, else None.
    """

    images: dict[str, np.ndarray]
    mask: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray
    lesion: str
    seed: tuple[int, ...]
    healthy: dict[str, np.ndarray] | None = None
    info: dict = field(default_factory=dict)


def output_grid(spacing: float | None = None,
                shape: tuple[int, int, int] | None = None) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of a case's grid: the template's 2 mm grid by default, else an axis-aligned
    RAS grid of ``spacing`` mm and ``shape`` voxels centred on the template brain."""
    template = load_mni152(2)
    if spacing is None and shape is None:
        return tuple(template.mask.shape), template.affine.copy()
    spacing = float(spacing or template.spacing)
    if shape is None:
        extent = np.array(template.mask.shape) * template.spacing
        shape = tuple(int(round(e / spacing)) for e in extent)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ArgumentError(f"shape: expected 3 sizes of at least 8 voxels, got {shape}")
    if not 0.25 <= spacing <= 8:
        raise ArgumentError(f"spacing: expected 0.25 to 8 mm, got {spacing}")
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = brain_centre() - spacing * (np.array(shape) - 1) / 2
    return shape, affine


def _smooth_field(rng: np.random.Generator, lattice: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """A smooth random field of about unit amplitude: normal values on a small lattice, cubic
    upsampling to at most 1/4 of ``shape`` per axis, then trilinear (cheap) to ``shape``."""
    values = rng.standard_normal(lattice)
    middle = tuple(max(n, -(-s // 4)) for n, s in zip(lattice, shape))
    field = ndi.zoom(values, [m / n for m, n in zip(middle, lattice)], order=3, mode="nearest", grid_mode=True)
    if field.shape == tuple(shape):
        return field
    return F.interpolate(torch.from_numpy(field.astype(np.float32))[None, None], size=tuple(shape),
                         mode="trilinear", align_corners=False)[0, 0].numpy()


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _coarse_axes(shape) -> list[np.ndarray]:
    """Coarse sample positions (voxel indices) along each axis, first and last voxel included, so that
    trilinear upsampling with align_corners maps them exactly."""
    return [np.linspace(0, s - 1, max(2, int(np.ceil((s - 1) / step)) + 1)) for s, step in shape]


def _world_points(affine: np.ndarray, axes: list[np.ndarray]) -> np.ndarray:
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return grid @ affine[:3, :3].T + affine[:3, 3]


@dataclass
class _Warp:
    """A subject's random warp, drawn on the coarse grid: subject space -> template space."""

    axes: list                 # coarse sample positions (voxel indices) along each output axis
    subject: np.ndarray        # (n0, n1, n2, 3) world points (mm) of the coarse grid
    linear: np.ndarray         # 3x3 rotation and scaling about the brain centre
    shift: np.ndarray          # translation (mm)
    displacement: np.ndarray   # (n0, n1, n2, 3) smooth displacement (mm)
    ventricle_scale: float = 0.0   # > 0 enlarges the ventricles and deep structures, < 0 shrinks them
    ventricle_radius: float = 25.0  # mm


@dataclass
class _LesionPlan:
    kind: str
    mass_centre: np.ndarray | None = None
    mass_radius: float = 0.0
    mass_strength: float = 0.0
    blobs: list = field(default_factory=list)  # (centre mm, radii mm, rotation, kind) of each lesion


def distance_maps(mask: np.ndarray, csf: np.ndarray, spacing) -> np.ndarray:
    """(2, X, Y, Z) float32: distance (mm) to the brain surface and to the ventricles (CSF more
    than 60% and 18 mm deep, opened), on any grid of ``spacing`` mm per axis."""
    depth = ndi.distance_transform_edt(mask, sampling=spacing)
    ventricles = ndi.binary_opening((csf > 0.6) & (depth > 18))
    if not ventricles.any():  # a small or thin brain: its deepest CSF stands in
        ventricles = (csf > 0.5) & (depth >= np.percentile(depth[mask], 90)) if mask.any() else mask
    to_ventricle = ndi.distance_transform_edt(~ventricles, sampling=spacing) if ventricles.any() else np.full_like(depth, 1e3)
    return np.stack([depth, to_ventricle]).astype(np.float32)


@dataclass
class SamplingSource:
    """Where a subject's anatomy is sampled from: channels CSF, GM, WM, brain mask (and, for a real
    anatomy, its scan) with the distance maps, on the source's own voxel grid."""

    channels: torch.Tensor     # (1, C, X, Y, Z) float32
    distances: torch.Tensor    # (1, 2, X, Y, Z): depth and distance to the ventricles (mm)
    affine: np.ndarray
    ventricle_centre: np.ndarray  # world mm: the centre of the ventricle enlargement


def make_source(tissue: np.ndarray, mask: np.ndarray, affine: np.ndarray, image: np.ndarray | None = None) -> SamplingSource:
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    distances = distance_maps(mask, tissue[0], spacing)
    near = distances[1] < 1e-3
    centre_index = np.argwhere(near).mean(axis=0) if near.any() else np.argwhere(mask).mean(axis=0)
    parts = [tissue, mask[None].astype(np.float32)] + ([image[None].astype(np.float32)] if image is not None else [])
    return SamplingSource(channels=torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))[None],
                   distances=torch.from_numpy(distances)[None], affine=np.asarray(affine, np.float64),
                   ventricle_centre=affine[:3, :3] @ centre_index + affine[:3, 3])


def _template_source() -> SamplingSource:
    if not hasattr(_template_source, "cache"):
        template = load_mni152(2)
        _template_source.cache = make_source(np.asarray(template.tissue), np.asarray(template.mask), template.affine)
    return _template_source.cache


def _draw_warp(rng: np.random.Generator, shape, affine) -> _Warp:
    """A subject's anatomy from the template's: rotation (up to 12 degrees per axis), anisotropic
    scaling (up to 12%), shift (6 mm), a smooth deformation at two scales (2 to 6 mm over about
    35 mm, 0.5 to 2 mm over about 15 mm) and an enlargement or shrinking of the ventricles and
    deep structures (strength -0.25 to 0.4): one brain made many. Drawn in a fixed order so the
    anatomy does not depend on the lesion."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    axes = _coarse_axes([(s, COARSE_SPACING_MM / sp) for s, sp in zip(shape, spacing)])
    subject = _world_points(affine, axes)
    angles = np.deg2rad(rng.uniform(-12, 12, 3))
    scale = rng.uniform(0.88, 1.12, 3)
    shift = rng.uniform(-6, 6, 3)
    coarse, fine = rng.uniform(2, 6), rng.uniform(0.5, 2)
    displacement = np.stack([coarse * _smooth_field(rng, (5, 6, 5), subject.shape[:3])
                             + fine * _smooth_field(rng, (11, 13, 11), subject.shape[:3]) for _ in range(3)], axis=-1)
    return _Warp(axes=axes, subject=subject, linear=_rotation(angles) * scale, shift=shift, displacement=displacement,
                 ventricle_scale=rng.uniform(-0.25, 0.4), ventricle_radius=rng.uniform(18, 30))


def _identity_warp(shape, affine) -> _Warp:
    """A real anatomy's own: no change but what a lesion's mass effect brings."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    axes = _coarse_axes([(s, COARSE_SPACING_MM / sp) for s, sp in zip(shape, spacing)])
    subject = _world_points(affine, axes)
    return _Warp(axes=axes, subject=subject, linear=np.eye(3), shift=np.zeros(3), displacement=np.zeros_like(subject))


def _radial(points: np.ndarray, centre: np.ndarray, strength: float, radius: float) -> np.ndarray:
    """A point at distance r from ``centre`` shows what lies at r (1 - a exp(-r^2 / 2R^2)):
    monotonic in r for a < 1, so the middle is enlarged (a > 0) or shrunk (a < 0), never folded."""
    offset = points - centre
    r2 = (offset ** 2).sum(axis=-1, keepdims=True)
    return centre + offset * (1 - strength * np.exp(-r2 / (2 * radius ** 2)))


def _source_grid(warp: _Warp, plan: _LesionPlan | None, source: SamplingSource) -> torch.Tensor:
    """For each coarse point, where to sample the source, as grid_sample coordinates (n0, n1, n2, 3)."""
    points = warp.subject
    if plan is not None and plan.mass_centre is not None:  # the tumour pushes tissue out
        points = _radial(points, plan.mass_centre, plan.mass_strength, plan.mass_radius)
    centre = brain_centre()
    points = (points - centre) @ warp.linear.T + centre + warp.shift + warp.displacement
    if warp.ventricle_scale:
        points = _radial(points, source.ventricle_centre, warp.ventricle_scale, warp.ventricle_radius)
    voxels = (points - source.affine[:3, 3]) @ np.linalg.inv(source.affine[:3, :3]).T
    grid = 2 * voxels / (np.array(source.channels.shape[2:]) - 1) - 1  # align_corners=True normalisation
    return torch.from_numpy(np.ascontiguousarray(grid[..., ::-1], dtype=np.float32))  # grid_sample wants (z, y, x)


def _coarse_maps(grid: torch.Tensor, source: SamplingSource) -> np.ndarray:
    """(6, n0, n1, n2) at the coarse points: CSF, GM, WM, mask, depth (mm), distance to the ventricles (mm)."""
    maps = torch.cat([source.channels[:, :4], source.distances], 1)
    return F.grid_sample(maps, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)[0].numpy()


def _sample_anatomy(grid: torch.Tensor, shape, source: SamplingSource) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Tissue maps (3, X, Y, Z) summing to one in the mask, the mask, and the source's scan if it
    has one, on the full output grid."""
    full = F.interpolate(grid.permute(3, 0, 1, 2)[None], size=tuple(shape), mode="trilinear",
                         align_corners=True)[0].permute(1, 2, 3, 0)
    sampled = F.grid_sample(source.channels, full[None], mode="bilinear", padding_mode="zeros",
                            align_corners=True)[0].numpy()
    mask = sampled[3] > 0.5
    tissue = sampled[:3]
    total = tissue.sum(axis=0)
    csf_only = np.array([1, 0, 0], np.float32)[:, None, None, None]
    tissue = np.where(total > 1e-3, tissue / np.maximum(total, 1e-3), csf_only)
    image = sampled[4] * mask if sampled.shape[0] > 4 else None
    return (tissue * mask).astype(np.float32), mask, image


def _pick(rng: np.random.Generator, candidates: np.ndarray, world: np.ndarray, what: str) -> np.ndarray:
    index = np.argwhere(candidates)
    if len(index) == 0:
        raise DataError(f"no place for a {what} in this grid: it does not cover enough of the brain")
    return world[tuple(index[rng.integers(len(index))])] + rng.uniform(-1, 1, 3)


def _plan_lesion(rng: np.random.Generator, kind: str, warp: _Warp, coarse: np.ndarray, affine) -> _LesionPlan:
    """Where each lesion goes (in subject space, from the subject's own coarse maps) and its size."""
    plan = _LesionPlan(kind)
    if kind == "none":
        return plan
    world = warp.subject
    _, gm, wm, _, depth, to_ventricle = coarse
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    to_edge = [np.minimum(a - a[0], a[-1] - a) * sp for a, sp in zip(warp.axes, spacing)]
    inside = np.min(np.stack(np.meshgrid(*to_edge, indexing="ij")), axis=0) > 12  # mm from the grid's edges
    rotation = lambda: _rotation(rng.uniform(-np.pi, np.pi, 3))  # noqa: E731
    if kind == "tumour":
        radius = rng.uniform(10, 22)
        centre = _pick(rng, inside & (wm > 0.5) & (depth > radius + 6), world, "tumour")
        plan.mass_centre, plan.mass_radius, plan.mass_strength = centre, radius * 1.3, rng.uniform(0.25, 0.5)
        plan.blobs.append((centre, radius * rng.uniform(0.8, 1.2, 3), rotation(), "tumour"))
    elif kind == "stroke":
        radius = rng.uniform(8, 22)
        centre = _pick(rng, inside & (gm > 0.4) & (depth > 4) & (depth < 14), world, "stroke")
        plan.blobs.append((centre, radius * rng.uniform(0.6, 1.3, 3), rotation(), "stroke"))
    elif kind == "wmh":
        candidates = inside & (wm > 0.7) & (to_ventricle < 12) & (depth > 10)
        for _ in range(int(rng.integers(3, 13))):
            radius = rng.uniform(2.5, 6)
            plan.blobs.append((_pick(rng, candidates, world, "white-matter lesion"), radius * rng.uniform(0.6, 1.4, 3),
                               rotation(), "wmh"))
    return plan


def _paint_lesions(rng: np.random.Generator, plan: _LesionPlan, tissue: np.ndarray, mask: np.ndarray,
                   affine) -> tuple[dict, np.ndarray]:
    """Lesion fractions (partial volume, 0..1) of each lesion tissue, and the label: the voxels at
    least ``LABEL_FRACTION`` lesion, each given its largest part (tumour) or 1."""
    shape = mask.shape
    fractions: dict[str, np.ndarray] = {}
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    inverse = np.linalg.inv(affine)
    for centre, radii, rotation, kind in plan.blobs:
        roughness = 0.35 if kind != "wmh" else 0.25
        # The box must hold every voxel whose perturbed level can fall below the outermost edge
        # (oedema up to 2.2, else 1), or the lesion is cut flat at the box's faces.
        reach = radii.max() * ((2.2 if kind == "tumour" else 1.0) + 2 * roughness + 0.2)
        centre_vox = inverse[:3, :3] @ centre + inverse[:3, 3]
        low = np.maximum(np.floor(centre_vox - reach / spacing).astype(int), 0)
        high = np.minimum(np.ceil(centre_vox + reach / spacing).astype(int) + 1, shape)
        if np.any(high <= low):
            continue
        box = tuple(slice(a, b) for a, b in zip(low, high))
        box_shape = tuple(high - low)
        points = _world_points(affine, [np.arange(a, b) for a, b in zip(low, high)])
        local = (points - centre) @ rotation / radii  # the ellipsoid's frame, unit radius
        level = np.sqrt((local ** 2).sum(axis=-1))
        noise = np.clip(_smooth_field(rng, (5, 5, 5), box_shape), -2, 2)
        level = level + roughness * noise * np.minimum(level, 1.0)
        softness = 0.5 * spacing.mean() / radii.mean()  # about one voxel of partial volume at the edge
        inside = mask[box]
        wm = tissue[2][box]

        def soft(threshold):
            return np.clip((threshold - level) / softness + 0.5, 0, 1) * inside

        if kind == "tumour":
            core_edge, rim_edge = rng.uniform(0.35, 0.6), 1.0
            oedema_edge = rng.uniform(1.5, 2.2)
            lesion = soft(rim_edge)
            core = soft(core_edge)
            # Oedema spreads along white matter, not into cortex or CSF.
            oedema = np.clip(soft(oedema_edge) * np.clip((wm - 0.15) / 0.3, 0, 1) - lesion, 0, 1)
            parts = {"core": core, "rim": lesion - core, "oedema": oedema}
        else:
            parts = {kind: soft(1.0)}
        for name, value in parts.items():
            target = fractions.setdefault(name, np.zeros(shape, np.float32))
            target[box] = np.maximum(target[box], value)
    label = np.zeros(shape, np.uint8)
    if not fractions:
        return fractions, label
    # Where lesions overlap, fractions may add to more than one: scale them back to a whole voxel.
    total = sum(fractions.values())
    over = total > 1
    for value in fractions.values():
        value[over] /= total[over]
    names = list(fractions)
    values = {"tumour": TUMOUR_LABELS}.get(plan.kind, {})
    largest = np.argmax(np.stack([fractions[n] for n in names]), axis=0)
    codes = np.array([values.get(n, 1) for n in names], np.uint8)
    lesion = total >= LABEL_FRACTION
    label[lesion] = codes[largest[lesion]]
    return fractions, label


def _upsample(coarse: np.ndarray, shape) -> np.ndarray:
    return F.interpolate(torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32))[None, None], size=tuple(shape),
                         mode="trilinear", align_corners=True)[0, 0].numpy()


def _draw_acquisition(rng: np.random.Generator, spacing: np.ndarray) -> tuple[int, float]:
    """(axis, slab thickness in mm): half the scans as acquired on the grid, half in thick slabs of
    3 to 6 mm (mostly axial) resampled back to it, as clinical 2D scans are (0 thickness: none)."""
    axis = int(rng.choice(3, p=[0.15, 0.15, 0.7]))
    thickness = rng.uniform(3, 6)
    return (axis, thickness) if rng.random() < 0.5 and thickness > 1.4 * spacing[axis] else (axis, 0.0)


def _acquire_slabs(volume: np.ndarray, axis: int, thickness: float, spacing: np.ndarray) -> np.ndarray:
    """A scan acquired in slabs of ``thickness`` mm along ``axis``, resampled back to its grid:
    the slab profile (a Gaussian of that full width at half maximum) and linear interpolation."""
    if thickness <= 0:
        return volume
    sigma = np.zeros(3)
    sigma[axis] = thickness / 2.355 / spacing[axis]
    blurred = torch.from_numpy(ndi.gaussian_filter(volume, sigma, truncate=3.0).astype(np.float32))[None, None]
    size = list(volume.shape)
    size[axis] = max(2, int(round(volume.shape[axis] * spacing[axis] / thickness)))
    coarse = F.interpolate(blurred, size=size, mode="trilinear", align_corners=True)
    return F.interpolate(coarse, size=volume.shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def _render(rng: np.random.Generator, contrast: str, tissue: np.ndarray, mask: np.ndarray, depth: np.ndarray,
            coarse_shape, fractions: dict, affine, lesion_texture: np.ndarray | None, with_healthy: bool):
    """One contrast over tissue maps: each tissue's intensity varied by region (a smooth field per
    tissue, and deep grey matter drawn towards white matter, as thalamus and basal ganglia are),
    bias field and texture, blur, Rician noise and, for half the scans, thick slabs. Returns
    (scan, healthy scan or None, acquisition); both scans share every random draw."""
    means = {name: value * rng.uniform(0.9, 1.1) for name, value in TISSUE_INTENSITY[contrast].items()}
    gain = rng.uniform(300, 1500)  # arbitrary scanner units: preprocessing must not rely on them
    shape = mask.shape
    bias = rng.uniform(0.05, 0.2) * _smooth_field(rng, (3, 3, 3), coarse_shape)
    texture = 0.03 * _smooth_field(rng, tuple(max(2, s // 3) for s in coarse_shape), coarse_shape)
    multiplier = _upsample(np.exp(bias + texture), shape)
    regional = [_upsample(np.exp(rng.uniform(0.02, 0.1) * _smooth_field(rng, (4, 5, 4), coarse_shape)), shape)
                for _ in TISSUES]
    deep = rng.uniform(0.1, 0.5) * np.clip((depth - 15) / 10, 0, 1)  # mm from the brain's surface
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    blur_mm = rng.uniform(0.3, 0.9)
    noise_level = rng.uniform(0.01, 0.04) * max(means["csf"], means["gm"], means["wm"])
    mask_index = np.flatnonzero(mask)
    noise = rng.standard_normal((2, mask_index.size), dtype=np.float32) * noise_level
    axis, thickness = _draw_acquisition(rng, spacing)

    gm = means["gm"] + deep * (means["wm"] - means["gm"])
    healthy = (tissue[0] * means["csf"] * regional[0] + tissue[1] * gm * regional[1]
               + tissue[2] * means["wm"] * regional[2])

    def finish(clean):
        clean = ndi.gaussian_filter(clean * multiplier, blur_mm / spacing, truncate=3.0)
        values = clean.ravel()[mask_index]
        out = np.zeros(clean.size, np.float32)
        out[mask_index] = np.sqrt((values + noise[0]) ** 2 + noise[1] ** 2)  # Rician magnitude
        return _acquire_slabs(out.reshape(shape), axis, thickness, spacing) * mask * gain

    acquisition = {"slab_axis": axis, "slab_mm": round(float(thickness), 2)} if thickness else {}
    if not fractions:
        scan = finish(healthy)
        return scan, (scan.copy() if with_healthy else None), acquisition
    lesion_total = sum(fractions.values())
    lesion_intensity = sum(value * means[name] for name, value in fractions.items()) * lesion_texture
    scan = finish(healthy * (1 - lesion_total) + lesion_intensity)
    return scan, (finish(healthy) if with_healthy else None), acquisition


def _render_real(rng: np.random.Generator, contrast: str, image: np.ndarray, tissue: np.ndarray, mask: np.ndarray,
                 fractions: dict, lesion_texture: np.ndarray | None, with_healthy: bool):
    """The real scan itself with the lesions painted in: each lesion tissue's intensity is the
    contrast's (``TISSUE_INTENSITY``, jittered by 10%) on the scale of this scan's own tissue
    medians, with noise like the scan's (the spread of its white matter about a 3-voxel median)."""
    if not fractions:
        return image, (image.copy() if with_healthy else None), {}
    reference = TISSUE_INTENSITY[contrast]
    medians, expected, weights = [], [], []
    for k, name in enumerate(TISSUES):
        inside = (tissue[k] > 0.8) & mask
        if inside.sum() > 20:
            medians.append(np.median(image[inside]))
            expected.append(reference[name])
            weights.append(inside.sum())
    medians, expected, weights = (np.array(v, np.float64) for v in (medians, expected, weights))
    scale = float((weights * medians * expected).sum() / max((weights * expected ** 2).sum(), 1e-12))
    wm = (tissue[2] > 0.8) & mask
    residual = (image - ndi.median_filter(image, 3))[wm if wm.sum() > 20 else mask]
    noise_level = 1.4826 * np.median(np.abs(residual)) if residual.size else 0.0
    lesion_total = sum(fractions.values())
    lesion_intensity = sum(value * reference[name] * rng.uniform(0.9, 1.1) for name, value in fractions.items())
    noise = rng.standard_normal(image.shape).astype(np.float32) * noise_level
    lesion_intensity = scale * lesion_intensity * lesion_texture + noise * np.minimum(lesion_total, 1)
    scan = np.maximum(image * (1 - lesion_total) + lesion_intensity, 0) * mask
    return scan.astype(np.float32), (image.copy() if with_healthy else None), {}


def _seed_key(seed) -> tuple[int, ...]:
    key = (seed,) if np.isscalar(seed) else tuple(seed)
    if not key or any(int(k) != k or k < 0 for k in key):
        raise ArgumentError(f"seed: expected a non-negative integer or a tuple of them, got {seed!r}")
    return tuple(int(k) for k in key)


def generate_case(seed: int | tuple[int, ...], contrasts: str | tuple[str, ...] = ("t1",), lesion: str = "none", *,
                  spacing: float | None = None, shape: tuple[int, int, int] | None = None,
                  return_healthy: bool = False, anatomy: "dal.data.anatomy.RealAnatomy | None" = None) -> SyntheticCase:
    """Generate one synthetic subject, or lesions in a real one.

    Args:
        seed: the case's seed: a non-negative int or a tuple of them (``dal synth`` uses
            (its seed, case number)); the case is a pure function of it (and of ``anatomy``).
        contrasts: one or several of "t1", "t2", "flair", "pd".
        lesion: "none", "tumour", "stroke" or "wmh".
        spacing, shape: the output grid (mm, voxels); by default the template's 2 mm grid.
        return_healthy: also return the scans without the lesion (pseudo-healthy truth).
        anatomy: a real subject (:func:`dal.data.anatomy.load_anatomy`) instead of a warped
            template: the case lies on its grid (``spacing`` and ``shape`` must be None), the
            lesions are placed by its own tissue maps, its scan is kept for its own contrast (with
            the lesions painted in, and a tumour's mass effect), other contrasts are rendered
            from its tissue maps.

    Returns:
        The :class:`SyntheticCase`.
    """
    if isinstance(contrasts, str):
        contrasts = (contrasts,)
    for contrast in contrasts:
        if contrast not in CONTRASTS:
            raise ArgumentError(f"contrasts: expected names from {CONTRASTS}, got {contrast!r}")
    if lesion not in LESIONS:
        raise ArgumentError(f"lesion: expected one of {LESIONS}, got {lesion!r}")
    key = _seed_key(seed)
    lesion_rng = np.random.default_rng([*key, 1])
    if anatomy is None:
        grid_shape, affine = output_grid(spacing, shape)
        source = _template_source()
        warp = _draw_warp(np.random.default_rng([*key, 0]), grid_shape, affine)
    else:
        if spacing is not None or shape is not None:
            raise ArgumentError("spacing, shape: a real anatomy keeps its own grid; give neither")
        grid_shape, affine = anatomy.mask.shape, anatomy.affine
        source = anatomy.source
        warp = _identity_warp(grid_shape, affine)
    coarse = _coarse_maps(_source_grid(warp, None, source), source)
    plan = _plan_lesion(lesion_rng, lesion, warp, coarse, affine)
    if anatomy is not None and plan.mass_centre is None:  # nothing moves: the subject as it is
        tissue, mask, real = anatomy.tissue, anatomy.mask, anatomy.image
    else:
        tissue, mask, real = _sample_anatomy(_source_grid(warp, plan, source), grid_shape, source)
    fractions, label = _paint_lesions(lesion_rng, plan, tissue, mask, affine)
    texture = None
    if fractions:
        spacing_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # inner texture at about 8 mm, whatever the grid
        lattice = tuple(max(2, int(round(s * sp / 8))) for s, sp in zip(grid_shape, spacing_mm))
        texture = 1 + 0.12 * _smooth_field(lesion_rng, lattice, grid_shape)
        texture = texture.astype(np.float32)
    depth = _upsample(coarse[4], grid_shape)
    images, healthy, acquisitions = {}, {}, {}
    for contrast in contrasts:
        rng = np.random.default_rng([*key, 2, CONTRASTS.index(contrast)])
        if anatomy is not None and contrast == anatomy.contrast:
            rendered = _render_real(rng, contrast, real, tissue, mask, fractions, texture, return_healthy)
        else:
            rendered = _render(rng, contrast, tissue, mask, depth, tuple(len(a) for a in warp.axes), fractions, affine,
                               texture, return_healthy)
        images[contrast], healthy[contrast], acquisition = rendered
        if acquisition:
            acquisitions[contrast] = acquisition
    info = {"lesion_voxels": int((label > 0).sum()),
            "lesion_volume_ml": float((label > 0).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000)}
    if acquisitions:
        info["acquisition"] = acquisitions
    if anatomy is not None:
        info["anatomy"] = anatomy.name
    return SyntheticCase(images=images, mask=mask, label=label, tissue=tissue, affine=affine,
                         lesion=lesion, seed=key, healthy=healthy if return_healthy else None, info=info)


def generate_healthy(seed: int | tuple[int, ...], contrast: str = "t1") -> SyntheticCase:
    """A healthy subject on the template's 2 mm grid, one contrast, with its tissue maps: the
    training data of ``dal train`` when no data set is given."""
    return generate_case(seed, (contrast,), "none")


SYNTH_SPACING = 1.0
SYNTH_SHAPE = (160, 192, 160)


def quantise_tissue(tissue: np.ndarray, levels: int = 1024) -> np.ndarray:
    """Tissue maps (3, ...) rounded to multiples of 1/levels that still sum exactly to one (or zero):
    CSF and GM are rounded, WM is the rest. Stored so, they compress twice as well."""
    total = tissue.sum(axis=0)
    csf = np.round(tissue[0] * levels) / levels
    gm = np.minimum(np.round(tissue[1] * levels) / levels, np.round(total) - csf)
    wm = np.maximum(np.round(total) - csf - gm, 0)
    return np.stack([csf, gm, wm]).astype(np.float32)


def write_case(case: SyntheticCase, folder: Path, case_id: str) -> dict[str, str]:
    """Write a case into ``folder`` with BraTS-like names; returns role -> file name.

    Scans are stored as int16, as scanners store them (the scanner gain keeps rounding below
    0.3%); ``_seg`` the label, ``_mask`` the brain mask (uint8); ``_tissue`` the tissue maps, 4D
    (CSF, GM, WM on the last axis), float32 rounded to 1/1024 and summing exactly to one in the brain.
    """
    files = {}
    for contrast, image in case.images.items():
        files[contrast] = save_nifti(np.round(image), case.affine, folder / f"{case_id}_{contrast}.nii.gz",
                                     dtype=np.int16).name
    files["seg"] = save_nifti(case.label, case.affine, folder / f"{case_id}_seg.nii.gz", dtype=np.uint8).name
    files["mask"] = save_nifti(case.mask, case.affine, folder / f"{case_id}_mask.nii.gz", dtype=np.uint8).name
    tissue = np.moveaxis(quantise_tissue(case.tissue), 0, -1)
    files["tissue"] = save_nifti(tissue, case.affine, folder / f"{case_id}_tissue.nii.gz", dtype=np.float32).name
    return files


def write_dataset(out: str | os.PathLike, count: int, contrasts: Sequence[str] = ("t1", "t2", "flair"),
                  lesions: Sequence[str] = ("none", "tumour", "stroke", "wmh"), seed: int = 0, *,
                  spacing: float | None = SYNTH_SPACING, shape: tuple[int, int, int] | None = SYNTH_SHAPE,
                  overwrite: bool = False, progress: bool = False,
                  anatomy: "dal.data.anatomy.RealAnatomy | None" = None) -> Path:
    """Write ``count`` synthetic cases in a BraTS-like layout with a ``manifest.json``.

    Case ``i`` (``synth-0000``, ...) has seed ``(seed, i)`` and lesion ``lesions[i % len(lesions)]``,
    and holds one scan per contrast, so the folder is the same for a seed whatever else runs. Each
    case is written into a hidden temporary folder and renamed into place; the manifest last
    (:mod:`dal.data.outputs`). With ``overwrite``, what dal wrote in ``out`` before is replaced,
    the manifest and the cases this run does not write removed first: the folder then holds
    exactly the manifest's cases. Files dal did not write are never replaced.
    With ``anatomy`` every case is that real subject with the case's lesion (see
    :func:`generate_case`), on its grid (``spacing`` and ``shape`` are ignored).

    Returns:
        The manifest's path.
    """
    out = Path(out)
    contrasts, lesions = tuple(contrasts), tuple(lesions)
    for contrast in contrasts:
        if contrast not in CONTRASTS:
            raise ArgumentError(f"contrasts: expected names from {CONTRASTS}, got {contrast!r}")
    for lesion in lesions:
        if lesion not in LESIONS:
            raise ArgumentError(f"lesions: expected names from {LESIONS}, got {lesion!r}")
    if not contrasts or not lesions:
        raise ArgumentError("contrasts and lesions: expected at least one name each")
    if count < 1:
        raise ArgumentError(f"count: expected at least 1, got {count}")
    ids = [f"synth-{i:04d}" for i in range(count)]
    if anatomy is not None:
        spacing = shape = None
        grid_shape, affine = anatomy.mask.shape, anatomy.affine
    else:
        grid_shape, affine = output_grid(spacing, shape)
    with output_folder(out) as folder:
        folder.check(["manifest.json", *ids, *folder.owned()], overwrite=overwrite)
        folder.remove(keep=ids)  # the manifest, and cases of an earlier run that this one does not write
        cases = []
        for i in tqdm(range(count), desc="dal synth", unit="case", disable=None if progress else True):  # no bar in logs
            lesion = lesions[i % len(lesions)]
            case = generate_case((seed, i), contrasts, lesion, spacing=spacing, shape=shape, anatomy=anatomy)
            files = {}
            folder.write(ids[i], {f"{ids[i]}/": lambda staging: files.update(write_case(case, staging, ids[i]))},
                         overwrite=overwrite)
            cases.append({"id": ids[i], "lesion": lesion, "seed": [seed, i],
                          "files": {role: f"{ids[i]}/{name}" for role, name in files.items()}, **case.info})
        manifest = {"generator": "dal synth", "version": __version__, "generator_version": GENERATOR_VERSION,
                    "seed": seed, "count": count,
                    "contrasts": list(contrasts), "lesions": list(lesions), "shape": list(grid_shape),
                    "affine": affine.tolist(), "tissues": list(TISSUES),
                    "labels": {"any non-zero": "lesion", "tumour": TUMOUR_LABELS}, "cases": cases}
        if anatomy is not None:
            manifest["anatomy"] = {"name": anatomy.name, "contrast": anatomy.contrast}
        text = json.dumps(manifest, indent=1, allow_nan=False)
        return folder.write("manifest", {"manifest.json": lambda tmp: tmp.write_text(text)})["manifest.json"]
