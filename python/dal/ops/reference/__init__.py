"""Pure-torch references of dal's ops: the oracle of the tests and the fallback path.

Each function has the signature and semantics of its compiled twin in dal.ops, computed with
plain torch operations (slow, memory-hungry, obviously right). Reduced-precision inputs
(float16, bfloat16) are computed in float32 and cast back, as the kernels do.
One module per op family; this package re-exports them all.
"""
from dal.ops.reference.onehot import check_onehot_args, onehot_st, onehot_st_backward
from dal.ops.reference.edges import canny, check_canny_args, check_edge_input, sobel, sobel_backward

__all__ = ["check_onehot_args", "onehot_st", "onehot_st_backward"]
__all__ += ["canny", "check_canny_args", "check_edge_input", "sobel", "sobel_backward"]
