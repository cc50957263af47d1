"""NIfTI in and out, validated.

Every problem with an input file raises :class:`DataError`, whose message names the file and the
problem, instead of a nibabel or numpy traceback. Files are written to a temporary name in the
target folder and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from dal.data.outputs import default_mode, write_atomic  # noqa: F401 (default_mode: used from here too)
from dal.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MAX_VOXELS = 512 ** 3  # 0.5 GB as float32: a whole head at 0.2 mm; more is a corrupt or hostile header
GZIP_MAX_RATIO = 1032  # deflate's limit: no .gz file expands to more than this many times its size
NIFTI_GZIP_LEVEL = 1  # nibabel's default too: 3 to 5 times faster than zlib's 6, for 5-10% larger maps


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
        check_declared_size(image, path, where)
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except DataError:
        raise
    except Exception as error:  # nibabel raises many types for a corrupt file; ours names the file
        raise DataError(f"{where}: cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    return _validated(data, image, where, path, allow_zero)


def check_declared_size(image, path: Path | None, where: str) -> None:
    """Raise DataError before the voxels are read unless they are real numbers (not complex, not
    RGB), at most MAX_VOXELS of them, and the file is large enough to hold what its header declares
    (a few hundred bytes of header must not make dal allocate gigabytes)."""
    dtype = np.dtype(image.get_data_dtype())
    if dtype.kind == "c":
        raise DataError(f"{where}: holds complex values ({dtype}); dal reads magnitude images: give the "
                        "magnitude (absolute value) of the scan")
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise DataError(f"{where}: voxels of type {dtype} are not intensities (expected integers or floats)")
    voxels = int(np.prod([int(n) for n in image.shape], dtype=object))
    if voxels > MAX_VOXELS:
        raise DataError(f"{where}: its header declares {voxels:,} voxels ({tuple(image.shape)}); dal reads at most "
                        f"{MAX_VOXELS:,} (a corrupt header?)")
    if path is None:
        return
    need, size = voxels * dtype.itemsize, path.stat().st_size
    if str(path).endswith(".gz"):
        if need > size * GZIP_MAX_RATIO:
            raise DataError(f"{where}: its header declares {need:,} bytes of voxels, more than a gzip file of "
                            f"{size:,} bytes can hold: corrupt, or not what it claims")
    elif size < int(image.header.get("vox_offset", 0)) + need:
        raise DataError(f"{where}: truncated: its header declares {need:,} bytes of voxels, the file has {size:,}")


def scan_from_image(image: nib.spatialimages.SpatialImage, *, name: str = "<in-memory image>", kind: str = "scan",
                    allow_zero: bool = False) -> Scan:
    """Validate an image already in memory (a nibabel image, e.g. from a notebook) as
    :func:`load_scan` validates a file; ``name`` stands for the file in error messages."""
    where = f"{kind} {name}"
    if not isinstance(image, nib.spatialimages.SpatialImage):
        raise DataError(f"{where}: expected a nibabel image, got {type(image).__name__}")
    if image.affine is None:
        raise DataError(f"{where}: the image has no affine")
    check_declared_size(image, None, where)
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


def load_label(path: str | os.PathLike, reference: Scan) -> np.ndarray:
    """Load a lesion label on ``reference``'s voxel grid as a boolean array (any non-zero voxel
    is lesion); the one way dal reads a label. A healthy case's label may be empty."""
    return load_mask(path, reference, kind="label", allow_zero=True)


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
        check_declared_size(image, path, where)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except DataError:
        raise
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


def nifti_gz_bytes(image: nib.Nifti1Image) -> bytes:
    """``image`` as the bytes of a ``.nii.gz`` file: gzip level NIFTI_GZIP_LEVEL, no time stamp in
    the gzip header (the same map makes the same file)."""
    import gzip

    return gzip.compress(image.to_bytes(), compresslevel=NIFTI_GZIP_LEVEL, mtime=0)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               header: nib.Nifti1Header | None = None, dtype=None) -> Path:
    """Write ``data`` as NIfTI atomically (temporary name in the same folder, then rename).

    With ``header`` (the input scan's), the output keeps its fields (units, descriptions, qform/sform
    codes), as the maps dal writes must sit on the input's grid with the input's header.
    """
    image = image_like(data, affine, header, dtype)
    return write_atomic(path, lambda tmp: nib.save(image, str(tmp)))


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write a small text file (a manifest) atomically."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))
