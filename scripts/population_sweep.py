"""The ad-hoc sweep that chose scoring.population's score (README, Accuracy): variants of the
residual against a healthy population, on cached model-space volumes of the shipped checkpoint.

    # 1. cache each scan's model-space image, mask, PHI and label (registered to MNI152 with --register)
    python scripts/population_sweep.py cache tune cache/tune --register
    python scripts/population_sweep.py cache healthy cache/healthy --register   # dal synth ... --lesions none --seed 4242
    # 2. mean AP per folder of each variant (the population fitted on the healthy cache)
    python scripts/population_sweep.py score cache/healthy cache/tune cache/eval-synth cache/eval-real \\
        --variants plain,divsd:1,fds:0.6 [--pool 2] [--smooth 1] [--cells] [--z-median flair=2] [--registration-mm 6] \
        [--tissue-prior 0.5]

Variants of the one-sided residual r (normalised per scan, before the median): ``plain``;
``sub:a`` r - a mean_r(v); ``z`` (r - mean_r(v)) / s(v); ``divsd:a`` r / (a m + s(v)), s the
residual's std at the place and m its median over the brain; ``fz:w`` r + w z_x, z_x the scan's
one-sided intensity z-score against the population of its contrast; ``fds:w`` r / (m + s(v)) + w z_x
(what ``scoring.population`` builds); ``fz:0`` z_x alone. ``--pool 2`` stores the maps as the
checkpoint does (4 mm, float16); ``--smooth`` is the maps' Gaussian sigma in voxels. The score
then takes the 10 mm (T1, T2) or 5 mm (FLAIR) median, as ``dal evaluate`` does; ``--z-median
flair=2`` gives fds's z-score a window of its own on FLAIR (``scoring.population_median_mm``);
``--tissue-prior w`` adds ``scoring.tissue_prior``'s term after the medians, of the anatomy that
the checkpoint (``--model``, default the shipped one) gives each cached image.
"""
import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from dal.data.io import load_label
from dal.data.layouts import find_cases
from dal.engine.infer import Detector
from dal.engine.population import tissue_prior_term, white_matter_prior
from dal.engine.scoring import LESION_SIGN, erosion_voxels, median_kernel_voxels, score_volume
from dal.metrics import average_precision
from dal.ops import residual_score
from dal.pretrained import default_checkpoint

MEDIAN_MM = {"t1": 10, "t2": 10, "flair": 5}


def cache(folder: Path, out: Path, register: bool, checkpoint: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    detector = Detector.load(checkpoint or default_checkpoint(), register=register)
    manifest = folder / "manifest.json"
    lesions = {c["id"]: c["lesion"] for c in json.loads(manifest.read_text())["cases"]} if manifest.exists() else {}
    for case in find_cases(folder, None):
        for contrast in sorted(case.images):
            path = out / f"{case.id}_{contrast}.npz"
            if path.exists():
                continue
            result = detector.predict(case.image(contrast), case.mask, contrast=contrast, threshold=1.0)
            space = result.model_space
            label = (detector.preprocessor.to_model(load_label(case.label, result.scan).astype(np.uint8), space["state"],
                                                    "nearest") > 0) if case.label is not None else np.zeros_like(space["mask"])
            np.savez_compressed(path, x=space["image"], mask=space["mask"], phi=space["phi"], label=label,
                                contrast=contrast, lesion=lesions.get(case.id, "none"))
            print(path, flush=True)


def load(folder: Path) -> list[dict]:
    return [dict(np.load(path)) for path in sorted(folder.glob("*.npz"))]


def residual(v: dict) -> np.ndarray:
    x, phi, mask = v["x"], v["phi"], v["mask"]
    scale = np.median(np.abs(x - phi)[mask]) or 1.0
    return np.clip(LESION_SIGN[str(v["contrast"])] * (x - phi), 0, None) / scale


def _smooth(a: np.ndarray, inside: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return a
    num, den = ndimage.gaussian_filter(a * inside, sigma), ndimage.gaussian_filter(inside.astype(float), sigma)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0)


def _stored(a: np.ndarray, inside: np.ndarray, pool: int) -> np.ndarray:
    """The map as a checkpoint keeps it: block means over the brain, float16, trilinear back."""
    t = torch.from_numpy(np.where(inside, a, 0).astype(np.float32))[None, None]
    weight = F.avg_pool3d(torch.from_numpy(inside.astype(np.float32))[None, None], pool)
    blocks = (F.avg_pool3d(t, pool) / weight.clamp_min(1e-6)).half().float()
    return F.interpolate(blocks, size=a.shape, mode="trilinear", align_corners=False)[0, 0].numpy()


def fit(healthy: list[dict], sigma: float, pool: int, registration_mm: float = 0.0) -> dict:
    population = {}
    for contrast in MEDIAN_MM:
        volumes = [v for v in healthy if str(v["contrast"]) == contrast]
        masks = np.stack([v["mask"] for v in volumes]).astype(float)
        count = masks.sum(0)
        inside = count >= len(volumes) / 2

        def stats(values: np.ndarray, registration_mm: float = 0.0):
            mean = (values * masks).sum(0) / np.maximum(count, 1)
            std = np.sqrt((((values - mean) ** 2) * masks).sum(0) / np.maximum(count - 1, 1))
            mean, std = _smooth(mean, inside, sigma), _smooth(std, inside, sigma)
            std = np.maximum(std, np.quantile(std[inside], 0.1))
            if registration_mm > 0:  # scoring.population_registration_mm
                std = np.sqrt(std ** 2 + (registration_mm * np.linalg.norm(np.gradient(mean, 2.0), axis=0)) ** 2)
            if pool > 1:
                mean, std = _stored(mean, inside, pool), _stored(std, inside, pool)
            return np.where(inside, mean, np.nan), np.where(inside, std, np.nan)

        population[contrast] = {"r": stats(np.stack([residual(v) for v in volumes])),
                                "x": stats(np.stack([v["x"] for v in volumes]), registration_mm), "inside": inside}
    return population


def variant(name: str, v: dict, population: dict | None) -> np.ndarray:
    r, contrast = residual(v), str(v["contrast"])
    if name == "plain":
        return r
    p = population[contrast]
    mean, std = (np.nan_to_num(m, nan=np.nanmedian(m)) for m in p["r"])
    kind, _, value = name.partition(":")
    a = float(value) if value else 0.0
    typical = np.median(std[v["mask"]])
    if kind == "z":
        return np.clip((r - mean) / std, 0, None)
    if kind == "sub":
        return np.clip(r - a * mean, 0, None)
    if kind == "divsd":
        return r / (a * typical + std)
    if kind in ("fz", "fds"):
        mean_x, std_x = p["x"]
        z = np.clip(LESION_SIGN[contrast] * (v["x"] - np.nan_to_num(mean_x, nan=0)) / np.nan_to_num(std_x, nan=np.nanmedian(std_x)), 0, None)
        z = np.where(p["inside"], z, 0)
        if a == 0:
            return z
        return (r if kind == "fz" else r / (typical + std)) + a * z
    raise SystemExit(f"--variants: unknown variant {name!r}")


def _median(score: np.ndarray, v: dict, mm: float) -> torch.Tensor:
    score = torch.from_numpy(np.ascontiguousarray(score, dtype=np.float32))[None, None]
    return residual_score(score, torch.zeros_like(score), torch.from_numpy(v["mask"]).float()[None, None],
                          median_kernel_voxels(mm, 2.0), erosion_voxels(2.0, 2.0))[0, 0]


def with_anatomy(volumes: list[dict], checkpoint: str | None) -> list[dict]:
    """The volumes with "anatomy", the restored anatomy the checkpoint's model gives each image,
    and "white_matter", MNI152's on the checkpoint's model space."""
    detector = Detector.load(checkpoint or default_checkpoint())
    white_matter = white_matter_prior(detector.preprocessor.config)
    return [{**v, "white_matter": white_matter,
             "anatomy": score_volume(detector.model, v["x"], v["mask"], 2.0, flip_average=False,
                                     anatomy_maps=True)["restored_anatomy"]} for v in volumes]


def mean_ap(volumes: list[dict], name: str, population: dict | None, z_median: dict | None = None,
            tissue_prior: float = 0.0) -> tuple[float, dict]:
    """Mean AP over the lesion volumes, and per contrast x lesion cell. With ``z_median`` (mm per
    contrast), an ``fds:w`` variant's z-score is median-filtered on its own window there and added
    after the residual's median (``scoring.population_median_mm``); ``tissue_prior`` w adds w times
    the anatomy's tissue-prior term (``scoring.tissue_prior``) after the medians."""
    cells = collections.defaultdict(list)
    for v in volumes:
        if not v["label"].any():
            continue
        contrast = str(v["contrast"])
        if z_median and contrast in z_median and name.startswith("fds:"):
            weight = float(name.partition(":")[2])
            score = (_median(variant("divsd:1", v, population), v, MEDIAN_MM[contrast])
                     + weight * _median(variant("fz:0", v, population), v, z_median[contrast]))
        else:
            score = _median(variant(name, v, population), v, MEDIAN_MM[contrast])
        if tissue_prior > 0:
            score = score + tissue_prior * _median(tissue_prior_term(v["anatomy"], v["white_matter"]).numpy(), v, 2.0)
        cells[(contrast, str(v["lesion"]))].append(average_precision(score, torch.from_numpy(v["label"]),
                                                                     torch.from_numpy(v["mask"])))
    return float(np.mean([a for aps in cells.values() for a in aps])), {k: float(np.mean(a)) for k, a in sorted(cells.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    caching = commands.add_parser("cache")
    caching.add_argument("folder", type=Path)
    caching.add_argument("out", type=Path)
    caching.add_argument("--register", action="store_true")
    caching.add_argument("--model", default=None, help="checkpoint (default: the shipped one)")
    scoring = commands.add_parser("score")
    scoring.add_argument("healthy", type=Path)
    scoring.add_argument("caches", type=Path, nargs="+")
    scoring.add_argument("--variants", default="plain")
    scoring.add_argument("--smooth", type=float, default=1.0)
    scoring.add_argument("--pool", type=int, default=1)
    scoring.add_argument("--cells", action="store_true")
    scoring.add_argument("--registration-mm", type=float, default=0.0,
                         help="the intensities' std allows for this misregistration (fds:w, fz:w)")
    scoring.add_argument("--z-median", default="", help="CONTRAST=MM,...: the z-score's own median window (fds:w)")
    scoring.add_argument("--tissue-prior", type=float, default=0.0, help="the weight of scoring.tissue_prior's term")
    scoring.add_argument("--model", default=None, help="the checkpoint whose anatomy --tissue-prior takes (default: the shipped one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "cache":
        cache(args.folder, args.out, args.register, args.model)
        return
    names = args.variants.split(",")
    population = fit(load(args.healthy), args.smooth, args.pool, args.registration_mm) if any(n != "plain" for n in names) else None
    data = {folder: load(folder) for folder in args.caches}
    if args.tissue_prior > 0:
        data = {folder: with_anatomy(volumes, args.model) for folder, volumes in data.items()}
    z_median = {c: float(mm) for c, _, mm in (pair.partition("=") for pair in args.z_median.split(",") if pair)}
    for name in names:
        results = {folder: mean_ap(volumes, name, population, z_median, args.tissue_prior) for folder, volumes in data.items()}
        print(name.ljust(12), " ".join(f"{mean:.3f}" for mean, _ in results.values()), flush=True)
        for folder, (_, cells) in results.items() if args.cells else ():
            print("   ", folder.name, " ".join(f"{c}/{l} {ap:.3f}" for (c, l), ap in cells.items()))


if __name__ == "__main__":
    main()
