"""Pure-torch references of dal's ops: the oracle of the tests and the fallback path.

Each function has the signature and semantics of its compiled twin in dal.ops, computed with
plain torch operations (slow, memory-hungry, obviously right), and validates its arguments as the
kernels do. Reduced-precision inputs (float16, bfloat16) are computed in float32 and cast back,
as the kernels do. One module per op, named as the op's stem in every layer; this package
re-exports them all.
"""
from dal.ops.reference._common import check_image
from dal.ops.reference.canny import canny, check_canny_args
from dal.ops.reference.median import check_median_args, median_filter
from dal.ops.reference.morphology import binary_dilate, binary_erode, check_morphology_args
from dal.ops.reference.onehot import check_onehot_args, onehot_st, onehot_st_backward
from dal.ops.reference.residual import check_residual_args, residual_score
from dal.ops.reference.sobel import sobel, sobel_backward

check_edge_input = check_image  # sobel's check, by the name it had before check_image served every op

__all__ = [
    "binary_dilate",
    "binary_erode",
    "canny",
    "check_canny_args",
    "check_edge_input",
    "check_image",
    "check_median_args",
    "check_morphology_args",
    "check_onehot_args",
    "check_residual_args",
    "median_filter",
    "onehot_st",
    "onehot_st_backward",
    "residual_score",
    "sobel",
    "sobel_backward",
]
