"""Voxel- and lesion-level metrics of anomaly maps, exact and fast, in torch on any device.

The voxel metrics sort the lesion and the healthy scores once and read every threshold off counts:
average precision (AP) and AUROC equal scikit-learn's ``average_precision_score`` and
``roc_auc_score`` (ties handled as they do: all voxels of one score value enter together), and
the best Dice is the exact best over every distinct threshold, not a coarse sweep.

Conventions (the field's, see docs/design.md, "Evaluation"):

- Labels: any non-zero voxel is lesion (BraTS labels 1, 2, 4 together are the whole tumour).
- ``mask``: the voxels evaluated (the brain); voxels outside it are ignored, labels included.
- A voxel is predicted lesion when its score is ``>= threshold``.
- Undefined single-volume values are ``nan``: AP and best Dice of a volume without lesion voxel,
  AUROC of a volume without lesion or without healthy voxel. AP of a volume without healthy voxel
  is 1. Dice at a threshold with neither lesion nor prediction is 1 (nothing to find, nothing
  found).
- Means over volumes (:func:`evaluate`) leave undefined values out and say how many volumes
  entered; a mean over no volume is ``None``. Volumes without lesion have no AP: they are left
  out of the lesion means and serve false-positive counts and thresholds instead
  (:func:`threshold_at_fpr`).
- Connected components (lesion-level detection, :func:`remove_small_components`) use full
  connectivity by default (26 neighbours in 3D, 8 in 2D), as the BraTS lesion-wise metrics do;
  they are labelled by ``scipy.ndimage.label`` on the CPU (the result returns to the input's device).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.ndimage
import torch

__all__ = [
    "Evaluation",
    "LesionDetection",
    "RankedCounts",
    "VoxelMetrics",
    "auroc",
    "average_precision",
    "best_dice",
    "connected_components",
    "dice_at_threshold",
    "evaluate",
    "lesion_detection",
    "ranked_counts",
    "remove_small_components",
    "threshold_at_fpr",
    "voxel_metrics",
]

Volumes = torch.Tensor | Sequence[torch.Tensor]


# --------------------------------------------------------------------------- argument handling


def _masked_pair(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None):
    """Flat scores (float32 or float64) and bool labels of the masked voxels."""
    if not isinstance(scores, torch.Tensor) or not (scores.is_floating_point()):
        got = scores.dtype if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise TypeError(f"scores must be a floating-point tensor, got {got}")
    if not isinstance(labels, torch.Tensor) or labels.shape != scores.shape:
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor of the shape of scores {tuple(scores.shape)}, got {got}")
    labels = labels.to(scores.device) != 0
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != scores.shape:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a tensor of the shape of scores {tuple(scores.shape)}, got {got}")
        inside = mask.to(scores.device) != 0
        scores, labels = scores[inside], labels[inside]
    scores = scores.reshape(-1)
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.float()  # float16 / bfloat16 values are exact in float32
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores must not contain NaN")
    return scores, labels.reshape(-1)


def _as_volume_list(name: str, volumes: Volumes | None, count: int | None = None) -> list | None:
    if volumes is None:
        return None if count is None else [None] * count
    items = list(volumes.unbind(0)) if isinstance(volumes, torch.Tensor) else list(volumes)
    if count is not None and len(items) != count:
        raise ValueError(f"{name} must hold one volume per score volume ({count}), got {len(items)}")
    return items


# --------------------------------------------------------------------------- ranked counts


@dataclass(frozen=True)
class RankedCounts:
    """Counts at every distinct score value that some lesion voxel holds, by increasing score.

    ``tp[i]`` / ``fp[i]``: lesion / healthy voxels with score ``>= thresholds[i]``;
    ``lesion_at[i]`` / ``healthy_at[i]``: those with score equal to it (all int64).
    Thresholds no lesion voxel holds need no entry: between two of these, lowering the threshold
    adds only healthy voxels, which changes neither AP nor the best Dice, and AUROC needs only
    the healthy voxels below and level with each lesion voxel.
    """

    thresholds: torch.Tensor
    tp: torch.Tensor
    fp: torch.Tensor
    lesion_at: torch.Tensor
    healthy_at: torch.Tensor
    positives: int
    negatives: int


def _sorted(values: torch.Tensor) -> torch.Tensor:
    """The values in increasing order. On the CPU numpy's sort (SIMD, AVX-512 / AVX2 where
    present) is an order of magnitude faster than torch.sort, which also builds indices."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.detach().numpy()))
    return torch.sort(values).values


def ranked_counts(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> RankedCounts:
    """Sorts the lesion and the healthy scores of the masked voxels and counts, at each score
    value held by a lesion voxel, the lesion and healthy voxels at or above it. Every voxel
    metric here is read off the result."""
    scores, labels = _masked_pair(scores, labels, mask)
    lesion = _sorted(scores[labels])
    healthy = _sorted(scores[~labels])
    thresholds, lesion_at = torch.unique_consecutive(lesion, return_counts=True)
    tp = lesion.numel() - (torch.cumsum(lesion_at, 0) - lesion_at)
    healthy_below = torch.searchsorted(healthy, thresholds, side="left")
    healthy_at = torch.searchsorted(healthy, thresholds, side="right") - healthy_below
    return RankedCounts(
        thresholds, tp, healthy.numel() - healthy_below, lesion_at, healthy_at, lesion.numel(), healthy.numel()
    )


def _average_precision(c: RankedCounts) -> float:
    if c.positives == 0:
        return math.nan
    precision = c.tp / (c.tp + c.fp).double()
    return float(torch.dot(c.lesion_at.double(), precision) / c.positives)


def _auroc(c: RankedCounts) -> float:
    if c.positives == 0 or c.negatives == 0:
        return math.nan
    # Mann-Whitney in integers: each lesion voxel counts the healthy voxels below it, and half of
    # those level with it (the trapezoids of scikit-learn's ROC curve), times 2.
    healthy_below = c.negatives - c.fp
    twice_wins = (c.lesion_at * (2 * healthy_below + c.healthy_at)).sum()  # int64: exact, any device
    return float(twice_wins.double() / (2.0 * c.positives * c.negatives))


def _best_dice(c: RankedCounts) -> tuple[float, float]:
    if c.positives == 0:
        return math.nan, math.nan
    dice = 2.0 * c.tp.double() / (c.tp + c.fp + c.positives).double()
    best = int(torch.argmax(dice))
    return float(dice[best]), float(c.thresholds[best])


# --------------------------------------------------------------------------- voxel metrics


@dataclass(frozen=True)
class VoxelMetrics:
    """Voxel-level metrics of one score map (or of pooled voxels). ``nan`` where undefined."""

    average_precision: float
    auroc: float
    best_dice: float
    best_threshold: float  # scores >= best_threshold give best_dice
    lesion_voxels: int
    healthy_voxels: int


def voxel_metrics(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> VoxelMetrics:
    """AP, AUROC and best Dice of a score map, from one sort of its lesion and its healthy scores.

    Args:
        scores: (*) floating anomaly scores (no NaN), any device.
        labels: (*) ground truth; non-zero is lesion.
        mask: optional (*) region evaluated (non-zero inside), e.g. the brain mask.
    """
    c = ranked_counts(scores, labels, mask)
    dice, threshold = _best_dice(c)
    return VoxelMetrics(_average_precision(c), _auroc(c), dice, threshold, c.positives, c.negatives)


def average_precision(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Area under the precision-recall curve as scikit-learn's ``average_precision_score``
    (sum over thresholds of recall increase times precision); ``nan`` without lesion voxel."""
    return _average_precision(ranked_counts(scores, labels, mask))


def auroc(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Area under the ROC curve as scikit-learn's ``roc_auc_score``; ``nan`` unless both lesion
    and healthy voxels are present."""
    return _auroc(ranked_counts(scores, labels, mask))


def best_dice(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, float]:
    """The best Dice over every distinct threshold and that threshold: ``(dice, threshold)``,
    predicting ``scores >= threshold``. ``(nan, nan)`` without lesion voxel."""
    return _best_dice(ranked_counts(scores, labels, mask))


# --------------------------------------------------------------------------- thresholds, components


def threshold_at_fpr(healthy_scores: Volumes, fpr: float, masks: Volumes | None = None) -> float:
    """The threshold that flags at most a fraction ``fpr`` of healthy voxels.

    The smallest score value ``t`` such that the fraction of healthy voxels (pooled over the given
    healthy volumes, inside their masks) with ``score >= t`` is ``<= fpr``. When even the highest
    score is too frequent, ``t`` is the next representable value above it (nothing is flagged).

    Args:
        healthy_scores: score maps of volumes without lesion: a (V, *) tensor or a list of tensors.
        fpr: the false-positive rate allowed, in [0, 1].
        masks: optional masks of the same volumes (non-zero inside).
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    volumes = _as_volume_list("healthy_scores", healthy_scores)
    masks = _as_volume_list("masks", masks, len(volumes))
    pooled = [_masked_pair(s, torch.zeros_like(s), m)[0] for s, m in zip(volumes, masks)]
    if pooled and len({p.dtype for p in pooled}) > 1:
        pooled = [p.double() for p in pooled]
    scores = torch.cat(pooled) if pooled else torch.empty(0)
    n = scores.numel()
    if n == 0:
        raise ValueError("healthy_scores must hold at least one voxel inside the masks")
    allowed = math.floor(fpr * n + 1e-9)  # the guard keeps e.g. 0.29 * 100 at 29
    above_all = torch.nextafter(scores.max(), scores.new_tensor(math.inf))
    if allowed == 0:
        return float(above_all)
    kth_largest = torch.kthvalue(scores, n - allowed + 1).values
    if int((scores >= kth_largest).sum()) <= allowed:
        return float(kth_largest)
    higher = scores[scores > kth_largest]  # ties at kth_largest flag too many: step above them
    return float(higher.min()) if higher.numel() else float(above_all)


def _structure(ndim: int, connectivity: int | None) -> np.ndarray:
    connectivity = ndim if connectivity is None else connectivity
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be in [1, {ndim}] for a {ndim}D volume, got {connectivity}")
    return scipy.ndimage.generate_binary_structure(ndim, connectivity)


def connected_components(binary: torch.Tensor, connectivity: int | None = None) -> tuple[torch.Tensor, int]:
    """Labels the connected components of one volume's non-zero voxels.

    Args:
        binary: (*) one volume (1 to 3 dims), non-zero is foreground.
        connectivity: neighbours sharing a face (1) up to a corner (ndim, the default).

    Returns:
        (int64 labels of the shape of ``binary`` on its device, 0 = background, 1..count), count.
    """
    if not isinstance(binary, torch.Tensor) or not 1 <= binary.dim() <= 3:
        got = binary.dim() if isinstance(binary, torch.Tensor) else type(binary).__name__
        raise ValueError(f"binary must be one volume of 1 to 3 dimensions, got {got}")
    labels, count = scipy.ndimage.label(
        (binary != 0).cpu().numpy(), structure=_structure(binary.dim(), connectivity)
    )
    return torch.from_numpy(labels.astype(np.int64)).to(binary.device), int(count)


def remove_small_components(binary: torch.Tensor, min_size: int, connectivity: int | None = None) -> torch.Tensor:
    """Drops the connected components of fewer than ``min_size`` voxels from one volume.

    Returns a bool tensor of the shape of ``binary`` on its device.
    """
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if min_size <= 1:
        return binary != 0
    labels, count = connected_components(binary, connectivity)
    sizes = torch.bincount(labels.reshape(-1), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def dice_at_threshold(
    scores: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
    mask: torch.Tensor | None = None,
    min_size: int = 0,
    connectivity: int | None = None,
) -> float:
    """Dice of ``scores >= threshold`` (inside ``mask``, components smaller than ``min_size``
    voxels removed) against ``labels != 0``. 1 when neither has a voxel."""
    predicted = _prediction(scores, threshold, mask, min_size, connectivity)
    truth = _truth(labels, mask, scores)
    return _dice(predicted, truth)


def _prediction(scores, threshold, mask, min_size, connectivity) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
        raise TypeError("scores must be a floating-point tensor")
    predicted = scores >= threshold
    if mask is not None:
        if mask.shape != scores.shape:
            raise ValueError(f"mask must have the shape of scores {tuple(scores.shape)}, got {tuple(mask.shape)}")
        predicted &= mask.to(scores.device) != 0
    return remove_small_components(predicted, min_size, connectivity) if min_size > 1 else predicted


def _truth(labels, mask, like) -> torch.Tensor:
    if labels.shape != like.shape:
        raise ValueError(f"labels must have the shape of scores {tuple(like.shape)}, got {tuple(labels.shape)}")
    truth = labels.to(like.device) != 0
    return truth & (mask.to(like.device) != 0) if mask is not None else truth


def _dice(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    both = int((predicted & truth).sum())
    total = int(predicted.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * both / total


@dataclass(frozen=True)
class LesionDetection:
    """Lesion-level detection in one volume: a lesion (connected component of the labels) is
    detected when a predicted voxel touches it; a predicted component touching no lesion voxel is
    a false positive. ``recall`` is ``nan`` without lesion."""

    lesions: int
    detected: int
    false_positives: int
    predicted_components: int

    @property
    def recall(self) -> float:
        return self.detected / self.lesions if self.lesions else math.nan


def lesion_detection(
    predicted: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, connectivity: int | None = None
) -> LesionDetection:
    """Lesion-wise detection of a binary prediction of one volume (see :class:`LesionDetection`).

    Args:
        predicted: (*) binary prediction (non-zero is lesion), e.g. after remove_small_components.
        labels: (*) ground truth; non-zero is lesion.
        mask: optional region evaluated; lesion and prediction outside it are ignored.
    """
    if labels.shape != predicted.shape:
        raise ValueError(f"labels must have the shape of predicted {tuple(predicted.shape)}, got {tuple(labels.shape)}")
    predicted = predicted != 0
    if mask is not None:
        predicted = predicted & (mask.to(predicted.device) != 0)
    truth = _truth(labels, mask, predicted)
    lesion_ids, lesions = connected_components(truth, connectivity)
    detected = int(torch.unique(lesion_ids[predicted & truth]).numel())
    predicted_ids, components = connected_components(predicted, connectivity)
    true_positive_components = int(torch.unique(predicted_ids[predicted & truth]).numel())
    return LesionDetection(lesions, detected, components - true_positive_components, components)


# --------------------------------------------------------------------------- evaluation of a set


def _mean(values: Sequence[float]) -> float | None:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else None


@dataclass(frozen=True)
class Evaluation:
    """Metrics of a set of volumes: per volume, their means, and pooled over all voxels.

    Means leave undefined values out: ``mean_average_precision`` and ``mean_best_dice`` average
    the ``lesion_volumes`` only; ``mean_auroc`` the volumes with both lesion and healthy voxels.
    A mean over no volume is ``None``. Volumes without lesion serve false positives instead.
    """

    per_volume: list[VoxelMetrics]
    pooled: VoxelMetrics
    lesion_volumes: int
    healthy_volumes: int
    mean_average_precision: float | None
    mean_auroc: float | None
    mean_best_dice: float | None
    threshold: float | None = None
    min_size: int = 0
    dice_at_threshold: list[float] = field(default_factory=list)
    detection: list[LesionDetection] = field(default_factory=list)

    @property
    def mean_dice_at_threshold(self) -> float | None:
        return _mean([d for d, m in zip(self.dice_at_threshold, self.per_volume) if m.lesion_voxels > 0])

    @property
    def lesion_recall(self) -> float | None:
        """Lesions detected over all lesions of all volumes."""
        lesions = sum(d.lesions for d in self.detection)
        return sum(d.detected for d in self.detection) / lesions if lesions else None

    @property
    def false_positives_per_volume(self) -> float | None:
        return sum(d.false_positives for d in self.detection) / len(self.detection) if self.detection else None

    def summary(self) -> dict:
        """The headline numbers, with what entered each mean."""
        out = {
            "volumes": len(self.per_volume),
            "lesion_volumes": self.lesion_volumes,
            "volumes_without_lesion": self.healthy_volumes,
            "note": "volumes without lesion are left out of the lesion means (AP, AUROC, Dice)",
            "mean_average_precision": self.mean_average_precision,
            "mean_auroc": self.mean_auroc,
            "mean_best_dice": self.mean_best_dice,
            "pooled_average_precision": self.pooled.average_precision,
            "pooled_auroc": self.pooled.auroc,
            "pooled_best_dice": self.pooled.best_dice,
        }
        if self.threshold is not None:
            out.update(
                threshold=self.threshold,
                min_size=self.min_size,
                mean_dice_at_threshold=self.mean_dice_at_threshold,
                lesion_recall=self.lesion_recall,
                false_positives_per_volume=self.false_positives_per_volume,
            )
        return out


def evaluate(
    scores: Volumes,
    labels: Volumes,
    masks: Volumes | None = None,
    threshold: float | Sequence[float] | None = None,
    min_size: int = 0,
    connectivity: int | None = None,
) -> Evaluation:
    """Evaluates score maps of several volumes, per volume and pooled.

    Args:
        scores: (V, *) tensor or list of V score maps (volumes may differ in shape).
        labels: the V ground truths (non-zero is lesion).
        masks: optional V masks of the voxels evaluated (the brain).
        threshold: optional fixed threshold (e.g. from :func:`threshold_at_fpr` on healthy
            validation volumes), or one per volume (each scan's contrast has its own): adds
            per-volume Dice and lesion-level detection at it, after removing components smaller
            than ``min_size`` voxels.
    """
    score_list = _as_volume_list("scores", scores)
    label_list = _as_volume_list("labels", labels, len(score_list))
    mask_list = _as_volume_list("masks", masks, len(score_list))
    if not score_list:
        raise ValueError("scores must hold at least one volume")
    per_volume = [voxel_metrics(s, y, m) for s, y, m in zip(score_list, label_list, mask_list)]
    flat = [_masked_pair(s, y, m) for s, y, m in zip(score_list, label_list, mask_list)]
    if len({f[0].dtype for f in flat}) > 1:
        flat = [(s.double(), y) for s, y in flat]
    pooled = voxel_metrics(torch.cat([f[0] for f in flat]), torch.cat([f[1] for f in flat]))
    dice, detection = [], []
    if threshold is not None:
        per_volume_thresholds = ([threshold] * len(score_list) if isinstance(threshold, (int, float))
                                 else list(threshold))
        if len(per_volume_thresholds) != len(score_list):
            raise ValueError(f"threshold: expected one number or one per volume ({len(score_list)}), "
                             f"got {len(per_volume_thresholds)}")
        for s, y, m, t in zip(score_list, label_list, mask_list, per_volume_thresholds):
            predicted = _prediction(s, t, m, min_size, connectivity)
            dice.append(_dice(predicted, _truth(y, m, s)))
            detection.append(lesion_detection(predicted, y, m, connectivity))
    lesion_volumes = sum(1 for v in per_volume if v.lesion_voxels > 0)
    return Evaluation(
        per_volume=per_volume,
        pooled=pooled,
        lesion_volumes=lesion_volumes,
        healthy_volumes=len(per_volume) - lesion_volumes,
        mean_average_precision=_mean([v.average_precision for v in per_volume]),
        mean_auroc=_mean([v.auroc for v in per_volume]),
        mean_best_dice=_mean([v.best_dice for v in per_volume]),
        threshold=threshold,
        min_size=min_size,
        dice_at_threshold=dice,
        detection=detection,
    )
