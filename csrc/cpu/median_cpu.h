// What the CPU median kernel lends to residual_score's.
#pragma once

#include <ATen/ATen.h>

#include "dal/common.h"

namespace dal {

// The median of `values` over a cube of side kernel_size (a square in 2D), replicate border,
// into `out`; both contiguous, of geometry g; values of out's dtype or of its compute dtype.
void median_cpu(const at::Tensor& values, at::Tensor& out, const Geometry& g, int32_t kernel_size);

}  // namespace dal
