"""Data: NIfTI I/O, preprocessing with an exact way back, data set layouts, slice data sets, and
the synthetic population.

The pieces the rest of dal uses:

- :func:`load_scan`, :func:`save_nifti`, :class:`DataError` (``dal.data.io``);
- :class:`Preprocessor`, :class:`PreprocessConfig` (``dal.data.preprocess``);
- :func:`register_to_mni` (``dal.data.registration``);
- :func:`find_cases` (``dal.data.layouts``);
- :class:`SliceDataset`, :func:`synthetic_volumes`, :func:`load_volumes`, :class:`Augmentation`;
- :func:`generate_case`, :func:`generate_healthy`, :func:`write_dataset` (``dal.data.synthetic``).
"""
from dal.data.augment import Augmentation
from dal.data.dataset import ModelVolume, SliceDataset, load_volumes, synthetic_volumes
from dal.data.io import DataError, Scan, load_mask, load_scan, load_tissue, save_nifti
from dal.data.layouts import Case, find_cases
from dal.data.preprocess import GridState, Preprocessed, PreprocessConfig, Preprocessor
from dal.data.registration import AffineRegistration, register_to_mni
from dal.data.synthetic import CONTRASTS, LESIONS, SyntheticCase, generate_case, generate_healthy, write_dataset

__all__ = [
    "AffineRegistration", "Augmentation", "CONTRASTS", "Case", "DataError", "GridState", "LESIONS", "ModelVolume",
    "PreprocessConfig", "Preprocessed", "Preprocessor", "Scan", "SliceDataset", "SyntheticCase", "find_cases",
    "generate_case", "generate_healthy", "load_mask", "load_scan", "load_tissue", "load_volumes", "register_to_mni",
    "save_nifti", "synthetic_volumes", "write_dataset",
]
