"""NIfTI in and out, validated.

Every problem with an input file raises :class:`DataError`, whose message names the file and the
problem, instead of a nibabel or numpy traceback. Files are written to a temporary name in the
target folder and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def default_mode(directory: bool = False) -> int:
    """The mode a plain open/mkdir would give (0o666/0o777 less the umask): mkstemp and mkdtemp
    make private files, which the renamed outputs should not stay."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


class DataError(ValueError):
    """A scan, mask or data folder that dal cannot use; the message names the file and the problem."""


@dataclass
class Scan:
    """A validated 3D scan: voxels as float32, its voxel-to-world affine (RAS mm) and header."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path | None = None

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def to_image(self) -> nib.Nifti1Image:
        return nib.Nifti1Image(self.data, self.affine, self.header)


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """The file name without its NIfTI suffix (``a/b_t1.nii.gz`` -> ``b_t1``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_affine(affine: np.ndarray, where: str) -> None:
    """Raise DataError unless ``affine`` is a finite, invertible 4x4 voxel-to-world matrix with sane voxel sizes."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(f"{where}: the affine is not a finite 4x4 matrix")
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        raise DataError(f"{where}: the affine's last row is {affine[3].tolist()}, not [0, 0, 0, 1]")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(spacing < 1e-3) or np.any(spacing > 50) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"{where}: the affine is singular or its voxel sizes {np.round(spacing, 4).tolist()} mm "
                        "are not those of an MRI scan (expected 0.001 to 50 mm)")


def load_scan(path: str | os.PathLike, *, kind: str = "scan", allow_zero: bool = False) -> Scan:
    """Load and validate a 3D NIfTI scan.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        kind: what the file is for ("scan", "mask", "label"), used in error messages.
        allow_zero: accept an all-zero volume (a label of a healthy case may be empty).

    Returns:
        The :class:`Scan`, voxels as float32 (a 4th dimension of size 1 is squeezed).

    Raises:
        DataError: the file is missing, not NIfTI, unreadable, not 3D, holds NaN or infinite
            values, is all zero (unless ``allow_zero``), or has an unusable affine.
    """
    path = Path(path)
    where = f"{kind} {path}"
    if not path.exists():
        raise DataError(f"{where}: no such file")
    if not path.is_file():
        raise DataError(f"{where}: not a file")
    if not is_nifti(path):
        raise DataError(f"{where}: not a NIfTI file (expected a name ending in .nii or .nii.gz)")
    try:
        image = nib.load(str(path))
        shape = tuple(image.shape)
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:  # checked before reading the voxels: a 4D series may be large
            raise DataError(f"{where}: expected a 3D volume, got shape {tuple(image.shape)}")
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except DataError:
        raise
    except Exception as error:  # nibabel raises many types for a corrupt file; ours names the file
        raise DataError(f"{where}: cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    return _validated(data, image, where, path, allow_zero)


def scan_from_image(image: nib.spatialimages.SpatialImage, *, name: str = "<in-memory image>", kind: str = "scan",
                    allow_zero: bool = False) -> Scan:
    """Validate an image already in memory (a nibabel image, e.g. from a notebook) as
    :func:`load_scan` validates a file; ``name`` stands for the file in error messages."""
    where = f"{kind} {name}"
    if not isinstance(image, nib.spatialimages.SpatialImage):
        raise DataError(f"{where}: expected a nibabel image, got {type(image).__name__}")
    if image.affine is None:
        raise DataError(f"{where}: the image has no affine")
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # see load_scan
        raise DataError(f"{where}: cannot be read ({type(error).__name__}: {error})") from None
    path = Path(image.get_filename()) if image.get_filename() else None
    scan = _validated(data, image, where, path, allow_zero)
    if not isinstance(scan.header, nib.Nifti1Header):
        scan.header = nib.Nifti1Header.from_header(scan.header)
    return scan


def _validated(data: np.ndarray, image, where: str, path: Path | None, allow_zero: bool) -> Scan:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{where}: expected a 3D volume, got shape {tuple(data.shape)}")
    if min(data.shape) < 2:
        raise DataError(f"{where}: shape {tuple(data.shape)} is not a volume (every axis needs 2 voxels or more)")
    finite = np.isfinite(data)
    if not finite.all():
        raise DataError(f"{where}: {int((~finite).sum())} voxels are NaN or infinite")
    if not allow_zero and not data.any():
        raise DataError(f"{where}: every voxel is zero")
    check_affine(image.affine, where)
    header = image.header.copy()
    return Scan(data=np.ascontiguousarray(data), affine=np.asarray(image.affine, dtype=np.float64), header=header,
                path=path)


def load_mask(path: str | os.PathLike, reference: Scan | None = None, *, kind: str = "mask",
              allow_zero: bool = False) -> np.ndarray:
    """Load a brain mask or lesion label as a boolean array (any non-zero voxel is inside).

    With ``reference`` the mask must lie on the same voxel grid (shape and affine) as that scan.
    """
    mask = load_scan(path, kind=kind, allow_zero=allow_zero)
    if reference is not None:
        if mask.data.shape != reference.data.shape:
            raise DataError(f"{kind} {path}: shape {mask.data.shape} differs from the scan's {reference.data.shape}")
        if not np.allclose(mask.affine, reference.affine, atol=1e-3):
            raise DataError(f"{kind} {path}: its affine differs from the scan's ({reference.path}); "
                            "a mask must lie on the scan's voxel grid")
    return mask.data != 0


def image_like(data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None,
               dtype=None) -> nib.Nifti1Image:
    """A NIfTI image of ``data`` on ``affine``; with ``header`` (the input scan's) it keeps that
    header's fields (units, descriptions, qform/sform codes), as dal's outputs must."""
    dtype = np.dtype(dtype or data.dtype)
    data = np.asarray(data, dtype=dtype)
    if header is None:
        image = nib.Nifti1Image(data, affine)
        image.header.set_xyzt_units("mm", "sec")
        return image
    header = header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    # Keep the input's qform/sform codes (set before the image is made, which keeps the affine exact).
    header.set_qform(affine, int(header["qform_code"]) or 1)
    header.set_sform(affine, int(header["sform_code"]) or 1)
    return nib.Nifti1Image(data, affine, header)


def load_tissue(path: str | os.PathLike, reference: Scan | None = None) -> np.ndarray:
    """Tissue probability maps stored 4D (X, Y, Z, K), as ``dal synth`` writes them: returned as
    (K, X, Y, Z) float32, checked to be finite, in [0, 1], and on the reference scan's grid."""
    path = Path(path)
    where = f"tissue maps {path}"
    if not path.is_file() or not is_nifti(path):
        raise DataError(f"{where}: no such NIfTI file")
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # see load_scan
        raise DataError(f"{where}: cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    if data.ndim != 4 or not 2 <= data.shape[3] <= 8:
        raise DataError(f"{where}: expected a 4D volume with 2 to 8 tissue maps on the last axis, got {data.shape}")
    if not np.all(np.isfinite(data)) or data.min() < -1e-3 or data.max() > 1 + 1e-3:
        raise DataError(f"{where}: values must be probabilities in [0, 1]")
    if reference is not None and (data.shape[:3] != reference.data.shape
                                  or not np.allclose(image.affine, reference.affine, atol=1e-3)):
        raise DataError(f"{where}: not on the grid of the scan {reference.path}")
    return np.ascontiguousarray(np.moveaxis(data, -1, 0))


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(handle)
    return Path(tmp)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               header: nib.Nifti1Header | None = None, dtype=None) -> Path:
    """Write ``data`` as NIfTI atomically (temporary name in the same folder, then rename).

    With ``header`` (the input scan's), the output keeps its fields (units, descriptions, qform/sform
    codes), as the maps dal writes must sit on the input's grid with the input's header.
    """
    path = Path(path)
    image = image_like(data, affine, header, dtype)
    tmp = _atomic_target(path)
    try:
        nib.save(image, str(tmp))
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write a small text file (a manifest) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
