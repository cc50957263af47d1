"""BIDS derivatives: the names and metadata of what ``dal infer BIDS_ROOT --bids-derivatives``
writes into ``BIDS_ROOT/derivatives/dal/`` (BIDS 1.9, "Derivatives").

A file name is ``sub-<label>[_ses-<label>][_<key>-<label>...]_<suffix><extension>``: entities in
the specification's order, labels alphanumeric, then the suffix. Every source entity is kept, so
the outputs of two scans of a subject never share a name. For a source
``sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz``:

- ``sub-01_ses-1_desc-pseudohealthy_T2w.nii.gz``: the pseudo-healthy image, a T2w image still
  (a ``desc`` of the source's own suffix, as for a preprocessed scan);
- ``sub-01_ses-1_space-T2w_desc-lesion_mask.nii.gz``: the lesion mask (suffix ``mask``,
  sidecar ``Type: Lesion``);
- ``sub-01_ses-1_space-T2w_desc-anomaly_map.nii.gz``: the anomaly scores (suffix ``map``, which
  the specification does not list: it names no score map; its sidecar says what it holds);

each with a JSON sidecar (the threshold and where it came from, the sources). ``space-T2w`` (the
space of the subject's T2w scan, on whose grid the outputs lie) keeps the mask and the map of a
subject's T1w and T2w scans apart, where the suffix no longer does. The issue that asked for this
spelt the names ``sub-01_ses-1_T2w_desc-anomaly_map``: a ``T2w`` between the entities is not valid
BIDS, so the source's suffix moved into ``space-``.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath

from dal.data.io import DataError, nifti_stem

BIDS_VERSION = "1.9.0"
# The entities of the specification, in the order a file name holds them.
ENTITY_ORDER = ("sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain", "rec",
                "dir", "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space", "split",
                "recording", "chunk", "seg", "res", "den", "label", "desc")
LABEL = re.compile(r"[a-zA-Z0-9]+")
DERIVATIVE_FOLDER = PurePosixPath("derivatives") / "dal"


def parse_name(name: str) -> tuple[dict[str, str], str, str]:
    """``sub-01_ses-1_T2w.nii.gz`` -> ({"sub": "01", "ses": "1"}, "T2w", ".nii.gz").

    Raises:
        DataError: not a BIDS file name (entities key-value with alphanumeric labels, in the
            specification's order, then an alphanumeric suffix).
    """
    extension = ".nii.gz" if name.endswith(".nii.gz") else ("." + name.rsplit(".", 1)[1] if "." in name else "")
    parts = name[: len(name) - len(extension)].split("_")
    entities: dict[str, str] = {}
    for part in parts[:-1]:
        key, _, label = part.partition("-")
        if key not in ENTITY_ORDER or not LABEL.fullmatch(label) or key in entities:
            raise DataError(f"file {name}: {part!r} is not a BIDS entity (key-label, the label alphanumeric)")
        entities[key] = label
    order = [ENTITY_ORDER.index(k) for k in entities]
    if not entities or "sub" not in entities or order != sorted(order) or not LABEL.fullmatch(parts[-1]):
        raise DataError(f"file {name}: not a BIDS name (sub-<label>[_<key>-<label>...]_<suffix>, entities in "
                        "the specification's order)")
    return entities, parts[-1], extension


def bids_name(entities: dict[str, str], suffix: str, extension: str) -> str:
    """The file name of ``entities`` (in the specification's order), ``suffix`` and ``extension``."""
    for key, label in entities.items():
        if key not in ENTITY_ORDER or not LABEL.fullmatch(str(label)):
            raise DataError(f"BIDS entity {key}-{label}: unknown key, or a label that is not alphanumeric")
    ordered = sorted(entities.items(), key=lambda item: ENTITY_ORDER.index(item[0]))
    return "_".join([*(f"{k}-{v}" for k, v in ordered), suffix]) + extension


def derivative_names(scan: str | os.PathLike, root: str | os.PathLike) -> tuple[PurePosixPath, dict[str, str]]:
    """Where the outputs of the BIDS scan ``scan`` (under the dataset ``root``) go in the
    derivative dataset: (its folder relative to the derivative root, role -> file name) with the
    roles of :meth:`DetectionResult.save` ("anomaly", "phi", "lesions", "json": the map's sidecar).

    Raises:
        DataError: ``scan`` is not a BIDS file under ``root``.
    """
    scan, root = Path(scan), Path(root)
    try:
        folder = PurePosixPath(scan.parent.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        raise DataError(f"scan {scan}: not inside the BIDS dataset {root}") from None
    entities, suffix, _ = parse_name(scan.name)
    if not suffix.isalnum():
        raise DataError(f"scan {scan}: its suffix {suffix!r} is not alphanumeric")
    maps = {**entities, "space": suffix}
    names = {
        "anomaly": bids_name({**maps, "desc": "anomaly"}, "map", ".nii.gz"),
        "phi": bids_name({**entities, "desc": "pseudohealthy"}, suffix, ".nii.gz"),
        "lesions": bids_name({**maps, "desc": "lesion"}, "mask", ".nii.gz"),
    }
    names["json"] = nifti_stem(names["anomaly"]) + ".json"
    return folder, names


def sidecar_name(nifti: str) -> str:
    return nifti_stem(nifti) + ".json"


def sidecar_names(names: dict[str, str]) -> list[str]:
    """The sidecars written beside the maps of ``names`` (the anomaly map's is ``names["json"]``)."""
    return [sidecar_name(names["phi"]), sidecar_name(names["lesions"])]


def source_uri(scan: str | os.PathLike, root: str | os.PathLike) -> str:
    """The BIDS URI of a raw file: ``bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz``."""
    return "bids:raw:" + Path(scan).resolve().relative_to(Path(root).resolve()).as_posix()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_description(version: str, checkpoint: str | os.PathLike | None, model_kind: str) -> dict:
    """``dataset_description.json`` of dal's derivative dataset: GeneratedBy dal at ``version``
    with the checkpoint (path and SHA-256) that made the maps."""
    generated = {"Name": "dal", "Version": version,
                 "Description": f"anomaly maps, pseudo-healthy images and lesion masks from a {model_kind} checkpoint"}
    if checkpoint is not None:
        generated["Checkpoint"] = {"Path": str(checkpoint), "SHA256": file_sha256(checkpoint)}
    return {"Name": "dal: unsupervised lesion detection", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
            "GeneratedBy": [generated], "SourceDatasets": [{"URL": "bids:raw"}],
            "DatasetLinks": {"raw": "../.."}}


def sidecars(result, folder: PurePosixPath, names: dict[str, str], source: str) -> tuple[dict, dict[str, dict]]:
    """The BIDS metadata of one scan's outputs: (the fields added to the anomaly map's sidecar,
    which also holds dal's summary; file name -> content of the other sidecars)."""
    threshold = {"Threshold": result.threshold, "ThresholdSource": result.threshold_source,
                 "ThresholdRule": result.info.get("threshold_rule")}
    anomaly = {"Description": "voxel-wise anomaly score: the median-filtered residual between the scan and its "
                              "pseudo-healthy image; higher is more abnormal", "Sources": [source], **threshold}
    phi_sidecar, lesions_sidecar = sidecar_names(names)
    others = {
        phi_sidecar: {"Description": "pseudo-healthy image: the scan as the model rebuilds it without "
                                                    "lesions, in the scan's intensity units", "Sources": [source]},
        lesions_sidecar: {"Type": "Lesion", "Description": "lesion mask: anomaly score at or above the "
                                         "threshold, inside the brain, small components removed",
                                         "Sources": [source, f"bids::{folder / names['anomaly']}"], **threshold},
    }
    return anomaly, others
