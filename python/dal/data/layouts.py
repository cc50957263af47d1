"""Finding scans in the folder layouts people have.

:func:`find_cases` recognises, in this order:

- ``dal synth`` output: a ``manifest.json`` written by ``dal synth``;
- BIDS: ``sub-*/[ses-*/]anat/*_T1w|_T2w|_FLAIR|_PDw.nii[.gz]`` (``ce-*`` T1w is ``t1ce``), with
  lesion labels and brain masks under ``derivatives/*/sub-*/[ses-*/]anat/``;
- a flat folder (IXI-like): NIfTI files directly in the folder, one case per name, the contrast
  read from the name's last token (``IXI002-Guys-0828-T1.nii.gz`` is case ``IXI002-Guys-0828``, t1);
- BraTS-like case folders: subfolders (up to three levels down) of files ``<case>_<role>.nii.gz``
  or ``<case>-<role>.nii.gz``, the roles ``t1``, ``t1ce``, ``t2``, ``flair``, ``seg``, ``mask``
  and the BraTS 2023 names ``t1n``, ``t1c``, ``t2w``, ``t2f``.

Contrasts get canonical names (t1, t1ce, t2, flair, pd); ``--contrast`` picks one per case.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dal.data.io import DataError, is_nifti, nifti_stem
from dal.errors import clip, short_repr

# Name tokens (lower case) -> canonical contrast.
CONTRAST_TOKENS = {
    "t1": "t1", "t1w": "t1", "t1n": "t1", "mprage": "t1",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2f": "flair", "t2flair": "flair",
    "pd": "pd", "pdw": "pd",
}
LABEL_TOKENS = {"seg", "label", "labels", "lesion", "lesions", "roi"}
MASK_TOKENS = {"mask", "brainmask"}
TISSUE_TOKENS = {"tissue"}
CONTRASTS = ("t1", "t1ce", "t2", "flair", "pd")
LOOKED_FOR = ("a dal synth manifest.json; BIDS sub-*/[ses-*/]anat/*_T1w|_T2w|_FLAIR|_PDw.nii[.gz]; "
              "NIfTI files in the folder itself (IXI-like, e.g. IXI002-Guys-0828-T1.nii.gz); BraTS-like case "
              "folders of *_t1|_t1ce|_t2|_flair|_seg|_mask or *-t1n|-t1c|-t2w|-t2f|-seg .nii[.gz]")


@dataclass
class Case:
    """One subject (or session): its scans by canonical contrast, and what else it has."""

    id: str
    images: dict[str, Path] = field(default_factory=dict)
    label: Path | None = None
    mask: Path | None = None
    tissue: Path | None = None
    layout: str = ""

    def image(self, contrast: str | None = None) -> Path:
        """The scan of ``contrast``, or the only scan when ``contrast`` is None."""
        if contrast is None:
            if len(self.images) == 1:
                return next(iter(self.images.values()))
            raise DataError(f"case {self.id}: has {len(self.images)} scans ({', '.join(sorted(self.images))}); "
                            "pick one with --contrast")
        key = canonical_contrast(contrast)
        if key not in self.images:
            raise DataError(f"case {self.id}: no {contrast} scan; it has {', '.join(sorted(self.images)) or 'none'}")
        return self.images[key]


def canonical_contrast(name: str) -> str:
    """The canonical contrast of a name or alias (``T2w`` -> ``t2``, ``t2f`` -> ``flair``)."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if key in CONTRAST_TOKENS:
        return CONTRAST_TOKENS[key]
    if key == "scan":
        return key
    raise DataError(f"contrast {name!r}: unknown; expected one of {', '.join(CONTRASTS)} "
                    f"(or an alias: {', '.join(sorted(CONTRAST_TOKENS))})")


def _role_of(token: str) -> str | None:
    key = token.lower()
    if key in CONTRAST_TOKENS:
        return CONTRAST_TOKENS[key]
    for role, tokens in (("seg", LABEL_TOKENS), ("mask", MASK_TOKENS), ("tissue", TISSUE_TOKENS)):
        if key in tokens:
            return role
    return None


def _split_role(stem: str) -> tuple[str, str | None]:
    """``BraTS-GLI-00000-000-t1n`` -> (``BraTS-GLI-00000-000``, ``t1``), ``x_T2_FLAIR`` -> (``x``, ``flair``),
    ``x_brain_mask`` -> (``x``, ``mask``): the last one or two name tokens, if they name a role."""
    cuts = [m.start() for m in re.finditer(r"[_\-.]", stem)]
    for cut in cuts[-2:]:  # two tokens first, then one
        role = _role_of(re.sub(r"[_\-.]", "", stem[cut + 1:]))
        if role is not None and cut > 0:
            return stem[:cut], role
    return stem, None


def contrast_of_file(path: str | os.PathLike) -> str | None:
    """The contrast a scan's file name declares, as the layouts read it (``sub-01_T2w.nii.gz`` ->
    ``t2``, ``case_flair.nii.gz`` -> ``flair``), or None."""
    role = _split_role(nifti_stem(Path(path)))[1]
    return role if role in CONTRASTS else None


def _add(case: Case, role: str, path: Path) -> None:
    if role == "seg":
        case.label = case.label or path
    elif role == "mask":
        case.mask = case.mask or path
    elif role == "tissue":
        case.tissue = case.tissue or path
    else:
        case.images.setdefault(role, path)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))


def _synth(root: Path) -> list[Case] | None:
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise DataError(f"manifest {manifest}: cannot be read ({type(error).__name__}: {clip(error, 200)})") from None
    if not isinstance(data, dict) or data.get("generator") != "dal synth":
        return None
    cases = []
    entries = data.get("cases", [])
    for entry in entries if isinstance(entries, list) else [entries]:
        try:
            case = Case(str(entry["id"]), layout="dal synth")
            for role, name in entry["files"].items():
                _add(case, str(role), root / str(name))
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"manifest {manifest}: a case entry is malformed (expected an id and a mapping of "
                            f"files): {short_repr(entry)}") from None
        cases.append(case)
    return cases


def _bids_entities(stem: str) -> tuple[dict[str, str], str]:
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1]


def _bids(root: Path) -> list[Case] | None:
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        return None
    cases: dict[str, Case] = {}
    for anat in sorted(root.glob("sub-*/anat")) + sorted(root.glob("sub-*/ses-*/anat")):
        for path in _nifti_files(anat):
            entities, suffix = _bids_entities(nifti_stem(path))
            key = suffix.lower()
            if key not in ("t1w", "t2w", "flair", "pdw"):
                continue
            contrast = "t1ce" if key == "t1w" and "ce" in entities else CONTRAST_TOKENS[key]
            case_id = "_".join(f"{k}-{entities[k]}" for k in ("sub", "ses") if k in entities)
            _add(cases.setdefault(case_id, Case(case_id, layout="BIDS")), contrast, path)
    for path in sorted(root.glob("derivatives/**/sub-*/**/*.nii*")):
        if not is_nifti(path):
            continue
        entities, suffix = _bids_entities(nifti_stem(path))
        case_id = "_".join(f"{k}-{entities[k]}" for k in ("sub", "ses") if k in entities)
        if case_id not in cases:
            continue
        name = nifti_stem(path).lower()
        if "lesion" in name or suffix.lower() in ("dseg", "roi"):
            _add(cases[case_id], "seg", path)
        elif suffix.lower() == "mask" and "brain" in name:
            _add(cases[case_id], "mask", path)
    return [cases[k] for k in sorted(cases)]


def _flat(root: Path) -> list[Case] | None:
    files = _nifti_files(root)
    if not files:
        return None
    cases: dict[str, Case] = {}
    for path in files:
        case_id, role = _split_role(nifti_stem(path))
        _add(cases.setdefault(case_id, Case(case_id, layout="flat")), role or "scan", path)
    return [cases[k] for k in sorted(cases) if cases[k].images]


def _brats(root: Path) -> list[Case] | None:
    cases = []
    for folder in sorted({p.parent for depth in ("*/", "*/*/", "*/*/*/") for p in root.glob(depth + "*.nii*")}):
        if folder == root or folder.name.startswith(".") or "derivatives" in folder.relative_to(root).parts:
            continue
        case = Case(folder.name, layout="BraTS-like")
        for path in _nifti_files(folder):
            _, role = _split_role(nifti_stem(path))
            if role is not None:
                _add(case, role, path)
        if case.images:
            cases.append(case)
    return cases or None


def find_cases(root: str | os.PathLike, contrast: str | None = None) -> list[Case]:
    """The cases under ``root`` (see the module docstring for the layouts).

    Args:
        root: the data folder.
        contrast: keep only the cases that have a scan of this contrast.

    Raises:
        DataError: ``root`` is missing, holds no usable scan (the message lists what was looked
            for), or no case has ``contrast`` (the message lists the contrasts found).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root}: no such folder")
    cases = None
    for finder in (_synth, _bids, _flat, _brats):
        cases = finder(root)
        if cases:
            break
    if not cases:
        raise DataError(f"data folder {root}: no usable scan found; looked for {LOOKED_FOR}")
    if contrast is not None:
        key = canonical_contrast(contrast)
        found = sorted({c for case in cases for c in case.images})
        cases = [case for case in cases if key in case.images]
        if not cases:
            raise DataError(f"data folder {root}: no {contrast} scan; the scans found are {', '.join(found)}")
    return cases
