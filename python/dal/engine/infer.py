"""Inference: a scan in, anomaly map, pseudo-healthy image and lesion mask out, on the scan's own
voxel grid. :class:`Detector` is the Python API behind ``dal infer``::

    import dal
    detector = dal.Detector.load("best.safetensors")     # no path: the shipped checkpoint
    result = detector.predict(nib.load("scan.nii.gz"))
    result.anomaly, result.lesions, result.anomaly_image  # arrays and NIfTI images
    result.save("out/")                                   # NAME_anomaly.nii.gz ... NAME.json

Steps: read and validate the scan; optionally register it to MNI152 (affine); bring it to model
space with the checkpoint's own preprocessing (:class:`~dal.data.Preprocessor`); score it with
:func:`~dal.engine.scoring.score_volume` (slices through the model in batches, then the residual
score); map score and pseudo-healthy image back onto the scan's grid (:meth:`Preprocessor.inverse`).

Choices written down here:

- The lesion mask is the score map on the scan's grid (linear interpolation) at or above the
  threshold, inside the brain mask, without connected components (26-connectivity) smaller than
  the checkpoint's ``scoring.min_component_voxels`` model voxels, converted to a volume: the
  same post-processing as the honest Dice of the evaluation protocol.
- The threshold is the checkpoint's, calibrated on healthy validation volumes at 1% (default) or
  5% false-positive voxels, unless one is given: those of the scan's contrast where the
  checkpoint has them, else all of them (``threshold_source`` names the key). It is the one
  threshold of every output: the mask, the overlay's outline and the start of its colour scale.
- The lesion count: components of the mask closer than the scoring's median window
  (``scoring.median_mm``, 5 mm, or the contrast's own in ``scoring.contrast_median_mm``) count
  as one lesion (:func:`count_lesions`); the JSON gives the plain component count too
  (``lesion_components``).
- Out-of-distribution warnings (the map is still written, with the warning in ``NAME.json``): more
  than half of the brain above the threshold (a calibrated threshold flags about 1-5% of a
  healthy brain), or more than 2% of brain voxels with an intensity outside ``[-0.25, 4] x`` the
  healthy-tissue level the preprocessing normalises to (healthy tissue of every contrast the
  synthetic population covers, and its lesions, lie within 0 to 2.5 times that level; negative
  values mean a scan that was z-scored or is not a magnitude image), a brain whose intensities
  spread by less than 2% of their level (a nearly constant volume), or a contrast stated with
  ``contrast`` that the checkpoint was not trained on.
- Refused: a constant volume (every voxel the same), and a model that gives NaN or infinite
  values for a scan (nothing is written; ``NAME.json`` is strict JSON).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.ndimage
import torch

from dal._version import __version__
from dal.data.io import (
    DataError,
    Scan,
    image_like,
    load_mask,
    load_scan,
    nifti_stem,
    scan_from_image,
)
from dal.data.layouts import contrast_of_file
from dal.data.outputs import OutputError, output_folder  # noqa: F401 (OutputError: also dal.engine.infer.OutputError)
from dal.data.preprocess import PreprocessConfig, Preprocessor
from dal.engine.checkpoint import (
    DEFAULT_FPR,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    threshold_for,
)
from dal.engine.config import ScoringConfig, checkpoint_scoring, median_mm_for
from dal.engine.devices import resolve_device
from dal.engine.population import white_matter_prior
from dal.engine.scoring import (
    POPULATION_KEY,
    lesion_sign,
    population_statistic,
    score_volume,
)
from dal.errors import ArgumentError

DEFAULT_SCORING = ScoringConfig()  # what a checkpoint without a setting gets
OOD_FLAGGED_FRACTION = 0.5
OOD_INTENSITY_RANGE = (-0.25, 4.0)  # times the preprocessing's norm_target
OOD_INTENSITY_FRACTION = 0.02
OOD_RESIDUAL_RATIO = 2.0  # the scan's median score in the brain over that of the healthy validation scans
OUTPUT_SUFFIXES = {"anomaly": "_anomaly.nii.gz", "phi": "_phi.nii.gz", "lesions": "_lesions.nii.gz",
                   "overlay": "_overlay.png", "report": "_report.html", "json": ".json"}
NEAR_CONSTANT_SPREAD = 0.02  # the spread of brain intensities, relative to their median, below which a scan is not one
# Above any brain mask (adults' about 1100 to 2000 ml; the generator's up to 2400, MNI152's 1883 scaled):
# a mask computed this large holds a skull. ITK's T1 with its skull: 2992 ml.
LARGEST_BRAIN_ML = 2600


def output_names(name: str, overlay: bool = True, report: bool = False) -> dict[str, str]:
    """Role ("anomaly", "phi", "lesions", "overlay", "report", "json") -> the file name of each
    output of the scan ``name``: the overlay unless ``overlay`` is False, the HTML report (the 3D
    viewer) with ``report``."""
    wanted = {"overlay": overlay, "report": report}
    return {role: f"{name}{suffix}" for role, suffix in OUTPUT_SUFFIXES.items() if wanted.get(role, True)}


@dataclass
class DetectionResult:
    """The maps of one scan, on its own voxel grid (arrays (X, Y, Z) and NIfTI images with the
    scan's affine and header), what they amount to, and how they were made.

    Attributes:
        name: the scan's name (file name without its NIfTI suffix), used for output files.
        anomaly: float32 anomaly scores.
        phi: float32 pseudo-healthy image, in the scan's intensity units.
        lesions: bool lesion mask at ``threshold``.
        brain: bool brain mask used.
        threshold: the score threshold; ``threshold_source`` says where it came from.
        lesion_volume_ml, lesion_count, peak_score: what the lesion mask and the map hold
            (peak: the highest score; ``peak_voxel`` / ``peak_mm`` where it is).
        warnings: out-of-distribution and other warnings (also in the JSON).
        timings: seconds per stage.
        model_space: the model-space arrays ("image", "mask", "score", "phi") and "affine".
    """

    name: str
    anomaly: np.ndarray
    phi: np.ndarray
    lesions: np.ndarray
    brain: np.ndarray
    scan: Scan
    threshold: float
    threshold_source: str
    lesion_volume_ml: float
    lesion_count: int
    peak_score: float
    peak_voxel: tuple[int, int, int]
    peak_mm: tuple[float, float, float]
    brain_fraction_flagged: float
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model_space: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        warned = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (f"DetectionResult({self.name!r}: {self.lesion_count} lesion(s), {self.lesion_volume_ml:.2f} ml, "
                f"peak score {self.peak_score:.3g}, threshold {self.threshold:.3g} ({self.threshold_source}), "
                f"shape {self.anomaly.shape}{warned})")

    def _image(self, data: np.ndarray, dtype) -> nib.Nifti1Image:
        return image_like(data, self.scan.affine, self.scan.header, dtype)

    @property
    def anomaly_image(self) -> nib.Nifti1Image:
        return self._image(self.anomaly, np.float32)

    @property
    def phi_image(self) -> nib.Nifti1Image:
        """The pseudo-healthy image in the scan's own data type where that is an integer one
        (scaled to its range by nibabel): no more precise than the scan it rebuilds, and a
        fraction of the size and writing time of float32; float32 for a float scan."""
        image = self._image(self.phi, np.float32)
        stored = np.dtype(self.scan.header.get_data_dtype())
        if stored.kind in "iu":
            image.set_data_dtype(stored)
            image.header.set_slope_inter(np.nan, np.nan)  # nibabel picks the scaling that fits the values
        return image

    @property
    def lesions_image(self) -> nib.Nifti1Image:
        return self._image(self.lesions, np.uint8)

    @property
    def scan_image(self) -> nib.Nifti1Image:
        return self._image(self.scan.data, np.float32)

    def summary(self) -> dict:
        """Plain data, as written to ``NAME.json``."""
        return {
            "name": self.name,
            "scan": None if self.scan.path is None else str(self.scan.path),
            "lesion_volume_ml": round(self.lesion_volume_ml, 4),
            "lesion_count": self.lesion_count,
            "peak_score": self.peak_score,
            "peak_voxel": list(self.peak_voxel),
            "peak_mm": [round(v, 2) for v in self.peak_mm],
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "brain_fraction_above_threshold": round(self.brain_fraction_flagged, 5),
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            **self.info,
        }

    def save(self, out: str | os.PathLike, *, overlay: bool = True, report: bool = False, protected=(),
             overwrite: bool = False, names: dict[str, str] | None = None,
             sidecars: dict[str, dict] | None = None, metadata: dict | None = None) -> dict[str, Path]:
        """Write ``NAME_anomaly.nii.gz``, ``NAME_phi.nii.gz``, ``NAME_lesions.nii.gz``,
        ``NAME_overlay.png`` (unless ``overlay`` is False), ``NAME_report.html`` (the 3D viewer,
        with ``report``) and ``NAME.json`` into ``out``, all or none (:mod:`dal.data.outputs`). No
        output may replace a file of ``protected`` (the input scans and masks), the scan itself,
        or any file dal did not write in ``out``; outputs of an earlier run are replaced only with
        ``overwrite``. The maps are compressed in threads (zlib lets go of the GIL) while the
        overlay is drawn.

        Args:
            names: role -> file name, instead of :func:`output_names` (the BIDS derivative names).
            sidecars: more files of the group: file name -> the JSON it holds.
            metadata: fields added to the JSON summary (a BIDS sidecar's).

        Returns:
            Role (or sidecar name) -> the path written.

        Raises:
            OutputError: ``out`` is not a usable folder, or an output may not be written there.
        """
        from concurrent.futures import ThreadPoolExecutor

        from dal.data.io import nifti_gz_bytes

        names = dict(names or output_names(self.name, overlay, report))
        inputs = [*protected, *([self.scan.path] if self.scan.path is not None else [])]
        started = time.perf_counter()
        maps = {"anomaly": lambda: self.anomaly_image, "phi": lambda: self.phi_image,
                "lesions": lambda: self.lesions_image}
        with ThreadPoolExecutor(max_workers=len(maps)) as pool:
            encoded = {role: pool.submit(lambda image=image: nifti_gz_bytes(image()))
                       for role, image in maps.items() if role in names}
            writers = {names[role]: (lambda tmp, done=done: tmp.write_bytes(done.result()))
                       for role, done in encoded.items()}
            if "overlay" in names:
                from dal.engine.report import save_overlay

                writers[names["overlay"]] = lambda tmp: save_overlay(self, tmp)
            if "report" in names:
                from dal.engine.viewer import viewer_page

                writers[names["report"]] = lambda tmp: tmp.write_text(viewer_page(self))
            for sidecar, content in (sidecars or {}).items():
                writers[sidecar] = lambda tmp, content=content: tmp.write_text(json.dumps(content, indent=1,
                                                                                          allow_nan=False))

            def write_json(tmp: Path) -> None:  # last: its timings include the writing of the others
                self.timings["write"] = time.perf_counter() - started
                summary = {**(metadata or {}), **self.summary(),
                           "outputs": {role: v for role, v in names.items() if role != "json"}}
                tmp.write_text(json.dumps(summary, indent=1, allow_nan=False))

            writers[names["json"]] = write_json
            with output_folder(out) as folder:
                written = folder.write(self.name, writers, overwrite=overwrite, inputs=inputs)
        paths = {role: written[name] for role, name in names.items()}
        return {**paths, **{sidecar: written[sidecar] for sidecar in sidecars or {}}}


class Detector:
    """A trained model with its preprocessing, scoring settings and calibrated thresholds.

    Args:
        checkpoint: a loaded :class:`~dal.engine.checkpoint.Checkpoint`.
        device: "cpu", "cuda", "cuda:N" or "auto" (default: CPU).
        batch_size: slices per forward pass (default: the checkpoint's scoring batch size).
        register: work in MNI152 space through an affine registration (default: as the
            checkpoint was trained; True forces it).
    """

    def __init__(self, checkpoint: Checkpoint, *, device: str | torch.device | None = "cpu",
                 batch_size: int | None = None, register: bool | None = None):
        where = f"checkpoint {checkpoint.path}"
        if not hasattr(checkpoint.model, "pseudo_healthy") and not hasattr(checkpoint.model, "expected_volume"):
            raise CheckpointError(f"{where}: its model ({checkpoint.model_kind}) has no pseudo_healthy method")
        try:
            preprocessing = PreprocessConfig.from_dict(dict(checkpoint.preprocessing))
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{where}: incompatible preprocessing settings ({error})") from None
        if register and not preprocessing.register:
            preprocessing = PreprocessConfig.from_dict({**preprocessing.to_dict(), "register": True})
        scoring = checkpoint_scoring(checkpoint.config)
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.model = checkpoint.model.to(self.device, memory_format=torch.channels_last).eval()  # as in training
        self.preprocessor = Preprocessor(preprocessing)
        self.median_mm = float(scoring.get("median_mm", DEFAULT_SCORING.median_mm))
        self.contrast_median_mm = {k: float(v) for k, v in (scoring["contrast_median_mm"] or {}).items()}
        self.population_median_mm = {k: float(v) for k, v in (scoring["population_median_mm"] or {}).items()}
        self.erode_mm = float(scoring.get("erode_mm", DEFAULT_SCORING.erode_mm))
        self.min_component_voxels = int(scoring.get("min_component_voxels", DEFAULT_SCORING.min_component_voxels))
        self.disagreement = float(scoring.get("disagreement", DEFAULT_SCORING.disagreement))
        self.polarity = scoring["polarity"]
        self.normalise = bool(scoring["normalise"])
        self.flip_average = bool(scoring["flip_average"])
        self.population = checkpoint.population if scoring.get("population") else None
        self.population_weight = float(scoring.get("population_weight", DEFAULT_SCORING.population_weight))
        self.tissue_prior = float(scoring["tissue_prior"])
        self.white_matter = white_matter_prior(preprocessing) if self.tissue_prior > 0 else None
        if scoring.get("population") and self.population is None:
            raise CheckpointError(f"{where}: scoring.population is on, but the checkpoint holds no population maps")
        self.batch_size = int(batch_size or scoring.get("batch_size", DEFAULT_SCORING.batch_size))
        if self.batch_size < 1:
            raise ArgumentError(f"batch_size: expected at least 1, got {self.batch_size}")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, device: str | torch.device | None = "cpu",
             threads: int | None = None, **kwargs) -> "Detector":
        """Load a checkpoint (safetensors: no code from the file is ever run).

        Args:
            path: a ``.safetensors`` checkpoint; None: the shipped pretrained one
                (:func:`dal.pretrained.default_checkpoint`).
            device: where the model runs.
            threads: CPU threads for torch and SimpleITK (default: their own choice).
            kwargs: passed to :class:`Detector` (``batch_size``, ``register``).

        Raises:
            CheckpointError: missing, corrupt, pickled, newer or incompatible checkpoint, or none shipped.
        """
        if threads is not None:
            if threads < 1:
                raise ArgumentError(f"threads: expected at least 1, got {threads}")
            torch.set_num_threads(threads)
            import SimpleITK as sitk

            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        if path is None:
            from dal.pretrained import default_checkpoint

            path = default_checkpoint()
        device = resolve_device(device)
        return cls(load_checkpoint(path, map_location=device), device=device, **kwargs)

    def __repr__(self) -> str:
        return (f"Detector({self.checkpoint.model_kind} from {self.checkpoint.path}, device {self.device}, "
                f"thresholds {self.checkpoint.thresholds})")

    @property
    def contrasts(self) -> tuple[str, ...] | None:
        """The contrasts the model was trained on (None: unknown, a data folder of any contrast)."""
        data = self.checkpoint.config.get("data") or {}
        if data.get("data") is None:
            return tuple(data.get("synthetic_contrasts") or ())
        return (data["contrast"],) if data.get("contrast") else None

    def threshold(self, fpr: float = DEFAULT_FPR, contrast: str | None = None) -> tuple[float, str]:
        """(value, key) of the checkpoint's threshold at ``fpr`` false positives (0.01 or 0.05) for
        a scan of ``contrast``: calibrated on that contrast's healthy scans where the checkpoint
        has them ("fpr_0.01/t1"), else on all of them ("fpr_0.01")."""
        found = threshold_for(self.checkpoint.thresholds, fpr, contrast)
        if found is None:
            held = ", ".join(sorted(self.checkpoint.thresholds)) or "none"
            raise CheckpointError(f"checkpoint {self.checkpoint.path}: no threshold calibrated at {fpr:.0%} false "
                                  f"positives (it holds: {held}); give a threshold (--threshold)")
        return found

    def predict(self, image: nib.spatialimages.SpatialImage | Scan | str | os.PathLike,
                mask: np.ndarray | nib.spatialimages.SpatialImage | str | os.PathLike | None = None, *,
                fpr: float = DEFAULT_FPR, threshold: float | None = None, contrast: str | None = None,
                name: str | None = None) -> DetectionResult:
        """Detect lesions in one scan.

        Args:
            image: a NIfTI path, a nibabel image or a :class:`~dal.data.Scan` (3D; a 4th axis of
                size 1 is fine); any orientation and voxel size.
            mask: brain mask on the scan's grid (path, image or array); default: computed.
            fpr: the calibrated threshold to use: 0.01 or 0.05 false-positive voxels.
            threshold: a threshold of your own (overrides ``fpr``).
            contrast: the scan's contrast (t1, t2, flair, pd), checked against the checkpoint's; it
                sets the side of the residual that counts (``scoring.polarity``). Default: the one
                the file name declares (``sub-01_T2w.nii.gz``, ``case_flair.nii.gz``), if any.
            name: the name of the outputs (default: the file name without its suffix).

        Raises:
            DataError: an unusable scan or mask (the message names the file).
        """
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        if threshold is not None:
            threshold_value, source = float(threshold), "given"
            if not np.isfinite(threshold_value):
                raise ArgumentError(f"threshold: expected a finite number, got {threshold}")
        scan = _as_scan(image)
        if float(scan.data.min()) == float(scan.data.max()):
            raise DataError(f"scan {scan.path or name or 'in memory'}: every voxel is {float(scan.data.min()):g}: "
                            "a constant volume, not a scan")
        brain_given = _as_mask(mask, scan)
        if contrast is None and scan.path is not None:
            contrast = contrast_of_file(scan.path)
        contrast = contrast.lower() if contrast else None  # every per-contrast setting is keyed in lower case
        if threshold is None:
            threshold_value, source = self.threshold(fpr, contrast)
        name = name or (nifti_stem(scan.path) if scan.path is not None else "scan")
        timings["read"] = time.perf_counter() - clock

        config = self.preprocessor.config
        registration = None
        if config.register or config.mask == "template":
            from dal.data.registration import (
                register_to_mni,  # SimpleITK: only when registering
            )

            clock = time.perf_counter()
            registration = register_to_mni(scan, brain_given)
            timings["register"] = time.perf_counter() - clock
        clock = time.perf_counter()
        done = self.preprocessor.forward(scan, brain_given, registration=registration)
        timings["preprocess"] = time.perf_counter() - clock

        median_mm = median_mm_for(self.median_mm, self.contrast_median_mm, contrast)
        population_median_mm = median_mm_for(median_mm, self.population_median_mm, contrast)
        population = self.population.for_contrast(contrast) if self.population else None
        scored = score_volume(self.model, done.image, done.mask, config.spacing, median_mm=median_mm,
                              erode_mm=self.erode_mm, batch_size=self.batch_size, device=self.device,
                              disagreement=self.disagreement,
                              sign=self._sign(contrast), normalise=self.normalise,
                              flip_average=self.flip_average, population=population,
                              population_weight=self.population_weight, population_median_mm=population_median_mm,
                              tissue_prior=self.tissue_prior, white_matter=self.white_matter,
                              contrast=contrast, timings=timings)
        score, phi = scored["score"].numpy(), scored["phi"].numpy()

        clock = time.perf_counter()
        if not (np.isfinite(score).all() and np.isfinite(phi).all()):
            raise DataError(f"scan {scan.path or name or 'in memory'}: the model ({self.checkpoint.path}) gave NaN or "
                            "infinite values for it; nothing written")
        anomaly = self.preprocessor.inverse(score, done.state)
        phi_scan = self.preprocessor.inverse(phi, done.state, restore_intensity=True)
        if brain_given is not None:
            brain = brain_given
        else:
            brain = self.preprocessor.inverse(done.mask.astype(np.float32), done.state) >= 0.5
        voxel_ml = float(abs(np.linalg.det(scan.affine[:3, :3]))) / 1000
        model_voxel_ml = config.spacing ** 3 / 1000
        min_voxels = max(1, int(round(self.min_component_voxels * model_voxel_ml / voxel_ml)))
        lesions, components, largest = _lesion_mask(anomaly >= threshold_value, brain, min_voxels)
        count = count_lesions(lesions, scan.spacing, median_mm)
        peak = np.unravel_index(int(np.argmax(anomaly)), anomaly.shape)
        peak_mm = tuple(float(v) for v in (scan.affine @ np.array([*peak, 1.0]))[:3])
        timings["postprocess"] = time.perf_counter() - clock

        in_brain = done.mask
        flagged = float((score[in_brain] >= threshold_value).mean()) if in_brain.any() else 0.0
        distance = self.population_distance(score[in_brain] * scored["residual_scale"])
        warnings = self._warnings(done.image[in_brain], flagged, contrast, distance)
        brain_ml = float(brain.sum()) * voxel_ml
        if brain_given is None and brain_ml > LARGEST_BRAIN_ML:
            warnings.append(f"brain mask: the one computed from the scan holds {brain_ml:.0f} ml, more than any brain "
                            f"(at most about {LARGEST_BRAIN_ML} ml): the scan seems to keep its skull, and the skull and "
                            "scalp are scored as brain; skull-strip it first (SynthStrip, HD-BET, FSL BET) or give its "
                            "brain mask (--mask)")
        if self.population is not None and population is None:
            warnings.append(f"contrast {contrast or 'unknown'}: the checkpoint's healthy population has no maps of it "
                            f"(it has {', '.join(sorted(self.population.maps))}): scored on the plain residual, which the "
                            "thresholds were not calibrated on: give the contrast (--contrast)")
        info = {"dal_version": __version__, "checkpoint": None if self.checkpoint.path is None else str(self.checkpoint.path),
                "model_kind": self.checkpoint.model_kind, "device": str(self.device), "contrast": contrast,
                "registered_to_mni": bool(config.register), "population": population is not None,
                "tissue_prior": scored["tissue_prior"],
                "brain_mask": "given" if brain_given is not None else config.mask,
                "brain_volume_ml": round(brain_ml, 3), "min_lesion_voxels": min_voxels,
                "voxel_size_mm": [round(float(s), 4) for s in scan.spacing], "shape": list(scan.data.shape),
                "population_distance": None if distance is None else round(distance, 3),
                "residual_scale": round(float(scored["residual_scale"]), 5),
                "largest_lesion_ml": round(largest * voxel_ml, 4), "lesion_components": components,
                "lesion_count_rule": f"connected components (26-connectivity) of the lesion mask, those closer than "
                                     f"{median_mm:g} mm (the scoring's median window) counted as one lesion",
                "threshold_rule": "the lesion mask, its outline in the overlay and the start of the overlay's colour "
                                  "scale are all this one threshold"}
        return DetectionResult(
            name=name, anomaly=anomaly.astype(np.float32), phi=phi_scan.astype(np.float32), lesions=lesions,
            brain=brain, scan=scan, threshold=threshold_value, threshold_source=source,
            lesion_volume_ml=float(lesions.sum()) * voxel_ml, lesion_count=count,
            peak_score=float(anomaly.max()), peak_voxel=tuple(int(i) for i in peak), peak_mm=peak_mm,
            brain_fraction_flagged=flagged, warnings=warnings, timings=timings,
            model_space={"image": done.image, "mask": done.mask, "score": score, "phi": phi,
                         "affine": done.state.model_affine, "state": done.state},
            info=info)

    def run(self, scans, out=None, **options):
        """Find lesions in ``scans`` (NIfTI files, or data folders: every scan of their cases, with
        the cases' brain masks) and write each one's outputs into ``out``, as ``dal infer`` does.
        Arguments are checked now; then it yields a :class:`~dal.engine.batch.ScanOutcome` a scan
        as each is done (a scan that fails carries its error and the others go on). ``options``:
        ``masks``, ``contrast``, ``fpr``, ``threshold``, ``overlay``, ``report``,
        ``bids_derivatives``, ``overwrite``, ``progress`` (see :func:`~dal.engine.batch.run_batch`)."""
        from dal.engine.batch import run_batch

        return run_batch(self, scans, out, **options)

    def population_distance(self, brain_scores: np.ndarray) -> float | None:
        """How far a scan is from the training population: the 90th percentile of the scores over
        its brain (in the residual's own units: not divided by the scan's residual scale), over
        that of the checkpoint's healthy validation scans
        (:data:`~dal.engine.scoring.POPULATION_KEY`; the median, ``healthy_median_score``, in
        checkpoints before it). About 1 for a scan the model explains as well as healthy training
        data; a lesion moves it little (it is a small part of the brain), anatomy the model cannot
        rebuild moves all of it. None for checkpoints calibrated before either was recorded."""
        metrics = self.checkpoint.metrics or {}
        if not brain_scores.size:
            return None
        if metrics.get(POPULATION_KEY):
            return population_statistic(brain_scores) / float(metrics[POPULATION_KEY])
        if metrics.get("healthy_median_score"):
            return float(np.median(brain_scores)) / float(metrics["healthy_median_score"])
        return None

    def _sign(self, contrast: str | None) -> int | None:
        return lesion_sign(self.polarity, contrast.lower() if contrast else None, self.checkpoint.model_kind)

    def _warnings(self, brain_intensities: np.ndarray, flagged: float, contrast: str | None,
                  distance: float | None = None) -> list[str]:
        warnings = []
        if distance is not None and distance > OOD_RESIDUAL_RATIO:
            warnings.append(f"out of distribution: the model rebuilds this scan {distance:.1f} times worse than the healthy "
                            "scans it was calibrated on (median score over the brain): its anatomy or acquisition is "
                            "unlike the training data, and healthy tissue may read as abnormal")
        if flagged > OOD_FLAGGED_FRACTION:
            warnings.append(f"out of distribution: {flagged:.0%} of the brain is above the threshold (a healthy scan of "
                            "the training kind has a few percent); this scan looks unlike the training data "
                            "(another contrast, a skull, a different preprocessing?): the map is unreliable")
        if brain_intensities.size and (float(np.std(brain_intensities))
                                       < NEAR_CONSTANT_SPREAD * abs(float(np.median(brain_intensities)))):
            warnings.append("out of distribution: the brain is nearly constant (its intensities spread by less than "
                            f"{NEAR_CONSTANT_SPREAD:.0%} of their level): not a scan of the training kind; the map "
                            "is unreliable")
        low, high = (f * self.preprocessor.config.norm_target for f in OOD_INTENSITY_RANGE)
        outside = float(((brain_intensities < low) | (brain_intensities > high)).mean()) if brain_intensities.size else 0.0
        if outside > OOD_INTENSITY_FRACTION:
            warnings.append(f"out of distribution: {outside:.1%} of brain voxels have intensities far from anything seen "
                            f"in training (outside {OOD_INTENSITY_RANGE[0]:g} to {OOD_INTENSITY_RANGE[1]:g} times the "
                            "healthy-tissue level): the map is unreliable")
        if contrast is None and self._sign("t1") is not None:  # a one-sided score, had the contrast been known
            warnings.append("contrast unknown: the residual counted both ways, while the checkpoint's thresholds were "
                            "calibrated on one side of it (the side lesions take on each contrast); more of the brain "
                            "is flagged than the false-positive rate says: give the contrast (--contrast)")
        expected = self.contrasts
        if contrast is not None and expected and contrast.lower() not in expected:
            warnings.append(f"contrast {contrast}: the checkpoint was trained on {', '.join(expected)} scans only; "
                            "the map may be unreliable")
        return warnings


def _as_scan(image) -> Scan:
    if isinstance(image, Scan):
        return image
    if isinstance(image, (str, os.PathLike)):
        return load_scan(image)
    return scan_from_image(image)


def _as_mask(mask, scan: Scan) -> np.ndarray | None:
    """A brain mask on the scan's grid (bool), checked for shape and affine."""
    if mask is None:
        return None
    if isinstance(mask, (str, os.PathLike)):
        brain = load_mask(mask, scan)
    elif isinstance(mask, nib.spatialimages.SpatialImage):
        given = scan_from_image(mask, kind="mask")
        if given.data.shape != scan.data.shape or not np.allclose(given.affine, scan.affine, atol=1e-3):
            raise DataError(f"mask for scan {scan.path}: not on the scan's voxel grid (shape {given.data.shape}, "
                            f"scan {scan.data.shape}, or another affine)")
        brain = given.data != 0
    else:
        brain = np.asarray(mask) != 0
        if brain.shape != scan.data.shape:
            raise DataError(f"mask for scan {scan.path}: shape {brain.shape} differs from the scan's {scan.data.shape}")
    if not brain.any():
        raise DataError(f"mask for scan {scan.path}: empty (no voxel inside)")
    return brain


def _lesion_mask(above: np.ndarray, brain: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int, int]:
    """``above & brain`` without components smaller than ``min_voxels`` (26-connectivity); their
    count, and the voxels of the largest."""
    labels, count = scipy.ndimage.label(above & brain, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros(above.shape, bool), 0, 0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels], int(keep.sum()), int(sizes[keep].max(initial=0))


def count_lesions(lesions: np.ndarray, spacing_mm, merge_mm: float) -> int:
    """The lesions of a mask: its components (26-connectivity), those closer than ``merge_mm``
    to one another counted as one (the mask dilated by ``merge_mm / 2``, then labelled). A
    tumour whose rim and core are cut apart by a thin band under the threshold is one lesion,
    not three.

    Args:
        lesions: (X, Y, Z) bool mask.
        spacing_mm: voxel size along each axis.
        merge_mm: the gap below which components are one lesion (0: plain components).
    """
    if not lesions.any():
        return 0
    radius = np.floor(merge_mm / 2 / np.asarray(spacing_mm, float) + 1e-9).astype(int)
    inside = np.argwhere(lesions)
    low = np.maximum(inside.min(0) - radius - 1, 0)
    high = inside.max(0) + radius + 2
    crop = lesions[tuple(slice(a, b) for a, b in zip(low, high))]  # dilating the box around the mask only
    if radius.any():
        grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
        ball = sum((g / max(r, 1)) ** 2 for g, r in zip(grid, radius)) <= 1
        crop = scipy.ndimage.binary_dilation(crop, structure=ball)
    return int(scipy.ndimage.label(crop, structure=np.ones((3, 3, 3), bool))[1])
