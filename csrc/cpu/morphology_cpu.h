// What the CPU morphology kernels lend to residual_score's.
#pragma once

#include <ATen/ATen.h>

#include "dal/common.h"

namespace dal {

// Erodes the contiguous 0/1 bytes of a mask (common.h mask_bytes) by a cube of side
// 2 * radius + 1, replicate border: replaces `bytes` by the result, never writing into the tensor
// it was given (it may be a view of the caller's mask).
void erode_cpu(at::Tensor& bytes, const Geometry& g, int64_t radius);

}  // namespace dal
