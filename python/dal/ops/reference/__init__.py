"""Pure-torch references of dal's ops: the oracle of the tests and the fallback path.

Each function has the signature and semantics of its compiled twin in dal.ops, computed with
plain torch operations (slow, memory-hungry, obviously right). Reduced-precision inputs
(float16, bfloat16) are computed in float32 and cast back, as the kernels do.
One module per op family; this package re-exports them all.
"""
from dal.ops.reference.edges import canny, check_canny_args, check_edge_input, sobel, sobel_backward
from dal.ops.reference.onehot import check_onehot_args, onehot_st, onehot_st_backward
from dal.ops.reference.scoring import (
    binary_dilate,
    binary_erode,
    check_median_args,
    check_morphology_args,
    check_residual_args,
    median_filter,
    residual_score,
)

__all__ = [
    "binary_dilate",
    "binary_erode",
    "canny",
    "check_canny_args",
    "check_edge_input",
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
