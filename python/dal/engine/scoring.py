"""Scoring a volume: slices through a model's pseudo-healthy image, stacked back to 3D, and the
residual score. The one place both validation and inference score volumes.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn

from dal.engine.config import ScoringConfig
from dal.engine.population import population_residual, population_z, tissue_prior_term
from dal.errors import ArgumentError
from dal.ops import residual_score
from dal.ops.median import MAX_KERNEL_SIZE as MAX_MEDIAN_VOXELS  # the largest window median_filter takes

# The direction in which lesions depart from healthy tissue: hyperintense on T2, FLAIR and PD
# (oedema, gliosis, infarct, white-matter hyperintensities), hypointense on T1 without contrast
# agent. Scoring only that side halves what the PHI's healthy errors contribute: on the README's
# test sets the shipped model's mean AP rose from 0.364 to 0.416 (synthetic) and 0.320 to 0.372
# (real anatomy).
LESION_SIGN = {"t1": -1, "t2": 1, "flair": 1, "pd": 1}


# dal infer's population distance: this statistic of a scan's scores over its brain, over that of
# the healthy validation scans (stored in the checkpoint's metrics under this key). The 90th
# percentile: a one-sided residual is 0 over about half of a healthy brain, so its median says
# nothing, and a lesion of a few percent of the brain moves the 90th percentile little.
POPULATION_KEY = "healthy_p90_score"


def population_statistic(brain_scores) -> float:
    """The 90th percentile of the scores (any shape; the brain's voxels), in the residual's own
    units (``score * residual_scale`` of :func:`score_volume`)."""
    return float(np.quantile(np.asarray(brain_scores, dtype=np.float64), 0.9)) if np.size(brain_scores) else 0.0


def lesion_sign(polarity: str, contrast: str | None, model_kind: str) -> int | None:
    """+1 (brighter than the PHI counts), -1 (darker) or None (both: ``|x - PHI|``) for a scan of
    ``contrast`` under ``scoring.polarity``. The intensity baseline has no PHI (its score is the
    intensity itself), and an unknown contrast has no known direction: both score both ways."""
    if polarity == "absolute" or model_kind == "intensity" or contrast is None:
        return None
    return LESION_SIGN.get(contrast)


def median_kernel_voxels(median_mm: float, spacing_mm: float) -> int:
    """The median window in voxels: the odd count closest to ``n = median_mm / spacing_mm``
    (ties go up), ``2 * floor(n / 2) + 1``, clamped to 1..7. 5 mm is 3 voxels at 2 mm and 5 at
    1 mm; a 5-voxel window at 2 mm (10 mm) would erase small white-matter lesions."""
    if not median_mm >= 0 or not spacing_mm > 0:
        raise ArgumentError(f"median_mm must be >= 0 and spacing_mm > 0, got {median_mm} and {spacing_mm}")
    voxels = 2 * math.floor(median_mm / spacing_mm / 2 + 1e-9) + 1
    return int(min(max(voxels, 1), MAX_MEDIAN_VOXELS))


def erosion_voxels(erode_mm: float, spacing_mm: float) -> int:
    """Erosion radius in voxels: ``erode_mm / spacing_mm`` rounded to the nearest voxel."""
    if not erode_mm >= 0 or not spacing_mm > 0:
        raise ArgumentError(f"erode_mm must be >= 0 and spacing_mm > 0, got {erode_mm} and {spacing_mm}")
    return int(round(erode_mm / spacing_mm))


def residual_scale(x: torch.Tensor, phi: torch.Tensor, brain: torch.Tensor) -> float:
    """The median ``|x - PHI|`` over the brain (any matching shapes): how far the PHI misses a
    typical voxel of this scan, robust to a lesion, which is a small part of the brain. On the
    shipped model's test sets, 0.02 to 0.07 (model-space intensities), the larger on the real
    brain. 1 where it is 0 (an empty mask, a PHI equal to the scan)."""
    typical = float((x - phi)[brain].abs().median()) if bool(brain.any()) else 0.0
    return typical if typical > 0 else 1.0


def _as_tensor(name: str, array, dtype) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.dim() != 3:
        raise ArgumentError(f"{name}: expected a 3D volume (X, Y, Z), got shape {tuple(tensor.shape)}")
    return tensor.to(dtype)


@torch.no_grad()
def score_volume(model: nn.Module, volume, mask, spacing_mm: float, *, median_mm: float = ScoringConfig.median_mm,
                 erode_mm: float = ScoringConfig.erode_mm, batch_size: int = ScoringConfig.batch_size, device: str | torch.device | None = None,
                 disagreement: float = ScoringConfig.disagreement, sign: int | None = None,
                 normalise: bool = ScoringConfig.normalise, flip_average: bool = ScoringConfig.flip_average,
                 population: dict[str, torch.Tensor] | None = None,
                 population_weight: float = ScoringConfig.population_weight,
                 population_median_mm: float | None = None, residual_map: bool = False,
                 tissue_prior: float = 0.0, white_matter: torch.Tensor | None = None,
                 contrast: str | None = None, timings: dict | None = None, anatomy_maps: bool = False) -> dict:
    """Anomaly score of a model-space volume.

    Each axial slice (last axis) with brain in it goes through ``model.pseudo_healthy`` in
    batches; the pseudo-healthy slices are stacked back to 3D (zero where the slice has no
    brain; with ``flip_average`` each the mean of the slice's PHI and its mirror's), and the
    score is ``dal.ops.residual_score``: the residual ``|x - PHI|`` inside the brain mask eroded
    by ``erode_mm``, median-filtered over a cube of ``median_mm`` (converted to
    odd voxel counts by :func:`median_kernel_voxels`, :func:`erosion_voxels`). A model of the
    whole volume (``expected_volume``: the z-score) gives the PHI (the mean of the population of
    the scan's ``contrast``) and a scale per voxel (its std), and the residual is divided by the scale. With ``sign`` +1 or -1
    only the residual on that side counts, ``max(sign (x - PHI), 0)`` (:func:`lesion_sign`). With
    ``normalise`` the residual is divided by the scan's median ``|x - PHI|`` over the brain (its
    "residual_scale", 1 without), so that thresholds carry across scans. With ``population`` (the
    maps of :class:`~dal.engine.population.HealthyPopulation` for the scan's contrast, model space
    being MNI152 space) the residual is weighed against the healthy population
    (:func:`~dal.engine.population.population_residual`). With ``disagreement``
    w > 0 (DAL only), ``w * [A != A_hat]`` is added to the residual before the median: where the
    restored anatomy differs from the encoder's, the restoration saw something to remove.

    Args:
        model: a model with ``pseudo_healthy``; put in eval mode here.
        volume: (X, Y, Z) scan in model space (numpy or torch).
        mask: (X, Y, Z) brain mask (non-zero inside).
        spacing_mm: voxel size of model space.
        median_mm, erode_mm: post-processing sizes in millimetres.
        batch_size: slices per forward pass.
        device: where the model runs (default: where its parameters are).
        disagreement: weight of the anatomy disagreement term (0: off).
        sign: +1 or -1 to score one side of the residual only; None: ``|x - PHI|``.
        normalise: divide the residual by the scan's median ``|x - PHI|`` over the brain.
        flip_average: average each slice's PHI with that of its left-right mirror, mirrored
            back (model space is RAS: the first axis runs right to left).
        population: the healthy population's (X, Y, Z) maps for this scan's contrast, or None.
        population_weight: the weight of the population's intensity z-score.
        population_median_mm: the median cube's side of that z-score, when it differs from
            ``median_mm``: then the z-score is median-filtered on its own and added to the
            residual's score (None: both filtered as one sum, the same window).
        residual_map: also return "residual", the residual before the population and the
            median (what :func:`~dal.engine.population.fit_population` fits on).
        tissue_prior, white_matter: the weight of
            :func:`~dal.engine.population.tissue_prior_term` and MNI152's (X, Y, Z)
            white-matter probability on this model space (MNI152 space); the term is added after
            the medians, inside the eroded brain, for a model whose PHI has an anatomy (DAL);
            "tissue_prior" in the result says whether it was.
        contrast: the scan's contrast (None: unknown), for a model of the whole volume.
        timings: optional dict that receives the seconds spent in the model ("model") and in
            the residual scoring ("scoring"), for ``dal infer --verbose``.
        anatomy_maps: also return DAL's anatomy maps (always with ``disagreement``).

    Returns:
        dict of float32 CPU tensors (X, Y, Z): "score", "phi"; with DAL and ``anatomy_maps``
        also "anatomy" and "restored_anatomy" as int64 tissue indices (arg-max of the one-hot maps);
        and "residual_scale", the float the residual was divided by (``score * residual_scale``
        is the score in the residual's own units; with ``population`` the units are the
        population's); with ``residual_map`` also "residual"; "tissue_prior", whether that term
        was added.
    """
    x = _as_tensor("volume", volume, torch.float32)
    brain = _as_tensor("mask", mask, torch.bool)
    if brain.shape != x.shape:
        raise ArgumentError(f"mask: expected the shape of volume {tuple(x.shape)}, got {tuple(brain.shape)}")
    if batch_size < 1:
        raise ArgumentError(f"batch_size: expected at least 1, got {batch_size}")
    parameter = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (parameter.device if parameter is not None else torch.device("cpu"))
    model.eval()
    start_time = time.perf_counter()
    scale = None
    if hasattr(model, "expected_volume"):  # a model of the whole volume: the population's mean and std
        mean, std = model.expected_volume(x.to(device), contrast)
        outputs: dict[str, torch.Tensor] = {"phi": mean.float().cpu()}
        scale = std.float().cpu()
    else:
        with_prior = tissue_prior > 0 and white_matter is not None
        outputs = _slice_outputs(model, x, brain, batch_size, device, anatomy_maps or disagreement > 0 or with_prior,
                                 flip_average)
    model_done = time.perf_counter()
    kernel = median_kernel_voxels(median_mm, spacing_mm)
    erode = erosion_voxels(erode_mm, spacing_mm)
    image = x  # model-space intensities, for the population's z-score
    x, phi = (x, outputs["phi"]) if scale is None else (x / scale, outputs["phi"] / scale)
    outputs["residual_scale"] = residual_scale(x, phi, brain) if normalise else 1.0
    if normalise:
        x, phi = x / outputs["residual_scale"], phi / outputs["residual_scale"]
    residual = (x - phi).abs() if sign is None else (sign * (x - phi)).clamp_min(0)
    if residual_map:
        outputs["residual"] = residual
    z_kernel = kernel if population_median_mm is None else median_kernel_voxels(population_median_mm, spacing_mm)
    z = None  # the population's z-score when it takes a window of its own: FLAIR's WMH of a few mm keep it
    if population is not None:
        apart = z_kernel != kernel and population_weight > 0
        residual = population_residual(residual, image, brain, population, 0.0 if apart else population_weight, sign)
        z = population_weight * population_z(image, population, sign) if apart else None
    if disagreement > 0 and "restored_anatomy" in outputs:
        # Where the restored anatomy differs from the encoder's, the restoration saw something to remove.
        residual = residual + disagreement * (outputs["anatomy"] != outputs["restored_anatomy"]).float()
    # The residual as x against a zero PHI: the op's median of |x - 0| is the residual's.
    outputs["score"] = residual_score(residual[None, None], torch.zeros_like(residual)[None, None],
                                      brain[None, None].float(), kernel, erode)[0, 0]
    # Terms with windows of their own (the z-score's; the tissue prior's one voxel: no median),
    # added after the residual's median.
    own_window = []
    if z is not None:
        own_window.append((z, z_kernel))
    outputs["tissue_prior"] = tissue_prior > 0 and white_matter is not None and "restored_anatomy" in outputs
    if outputs["tissue_prior"]:
        own_window.append((tissue_prior * tissue_prior_term(outputs["restored_anatomy"], white_matter), 1))
    for term, term_kernel in own_window:
        outputs["score"] += residual_score(term[None, None], torch.zeros_like(term)[None, None],
                                           brain[None, None].float(), term_kernel, erode)[0, 0]
    if timings is not None:
        timings["model"] = model_done - start_time
        timings["scoring"] = time.perf_counter() - model_done
    return outputs


def _slice_outputs(model: nn.Module, x: torch.Tensor, brain: torch.Tensor, batch_size: int,
                   device: torch.device, anatomy_maps: bool, flip_average: bool = False) -> dict[str, torch.Tensor]:
    """The model's pseudo-healthy image of each axial slice with brain, stacked back to (X, Y, Z)
    (zero elsewhere; with ``flip_average`` the mean of it and the mirrored slice's, mirrored back),
    and with ``anatomy_maps`` DAL's anatomy maps (of the slice as it is) as tissue indices (only
    where asked: their arg-max over channels-last maps is not free)."""
    slices = torch.nonzero(brain.any(0).any(0)).flatten().tolist()
    outputs: dict[str, torch.Tensor] = {"phi": torch.zeros_like(x)}
    for start in range(0, len(slices), batch_size):
        index = slices[start:start + batch_size]
        batch = x[:, :, index].permute(2, 0, 1)[:, None].contiguous().to(device)
        result = model.pseudo_healthy(batch)
        phi = result["phi"].float()
        if flip_average:  # batch is (slices, 1, X, Y): X is dim 2, right to left
            phi = (phi + model.pseudo_healthy(batch.flip(2))["phi"].float().flip(2)) / 2
        outputs["phi"][:, :, index] = phi[:, 0].permute(1, 2, 0).cpu()
        for key in ("anatomy", "restored_anatomy") if anatomy_maps else ():
            if key in result:
                outputs.setdefault(key, torch.zeros(x.shape, dtype=torch.int64))
                outputs[key][:, :, index] = result[key].argmax(1).permute(1, 2, 0).cpu()
    return outputs
