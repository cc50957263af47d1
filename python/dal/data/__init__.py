"""Data: NIfTI I/O, preprocessing with an exact way back, data set layouts, slice data sets, and
the synthetic population.

The pieces the rest of dal uses:

- :func:`load_scan`, :func:`save_nifti`, :class:`DataError` (``dal.data.io``);
- :class:`Preprocessor`, :class:`PreprocessConfig` (``dal.data.preprocess``);
- :func:`register_to_mni` (``dal.data.registration``);
- :func:`find_cases` (``dal.data.layouts``);
- :class:`ModelVolume`, :class:`SliceDataset`, :func:`synthetic_volume`, :func:`load_volumes`, :class:`Augmentation`;
- :func:`generate_case`, :func:`generate_healthy`, :func:`write_dataset` (``dal.data.synthetic``).
"""
import importlib

# Lazy: importing one module of dal.data (dal.data.io, for dal infer) must not import them all
# (SimpleITK, scikit-image and the synthetic generator cost seconds that dal infer never uses).
_HOMES = {
    "Augmentation": "augment", "ModelVolume": "dataset", "SliceDataset": "dataset", "load_volumes": "dataset",
    "synthetic_volume": "dataset", "DataError": "io", "Scan": "io", "load_label": "io", "load_mask": "io",
    "load_scan": "io",
    "load_tissue": "io", "save_nifti": "io", "Case": "layouts", "find_cases": "layouts", "GridState": "preprocess",
    "Preprocessed": "preprocess", "PreprocessConfig": "preprocess", "Preprocessor": "preprocess",
    "AffineRegistration": "registration", "register_to_mni": "registration", "CONTRASTS": "synthetic",
    "LESIONS": "synthetic", "SyntheticCase": "synthetic", "generate_case": "synthetic",
    "generate_healthy": "synthetic", "write_dataset": "synthetic",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"dal.data.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'dal.data' has no attribute {name!r}")


__all__ = [
    "AffineRegistration", "Augmentation", "CONTRASTS", "Case", "DataError", "GridState", "LESIONS", "ModelVolume",
    "PreprocessConfig", "Preprocessed", "Preprocessor", "Scan", "SliceDataset", "SyntheticCase", "find_cases",
    "generate_case", "generate_healthy", "load_label", "load_mask", "load_scan", "load_tissue", "load_volumes", "register_to_mni",
    "save_nifti", "synthetic_volume", "write_dataset",
]
