// Per-voxel math of the residual score (kernel 4): the value that the median of dal/median.h
// then filters, inside the brain mask eroded by dal/morphology.h.
#pragma once

#include "dal/common.h"

namespace dal {
namespace residual {

// |x - phi| inside the (eroded) mask, 0 outside. A select, not a product, so that an infinite or
// NaN residual outside the mask does not leak in.
template <typename T>
DAL_HOST_DEVICE inline T masked_residual(T x, T phi, bool inside) {
  const T d = x - phi;
  return inside ? (d < T(0) ? -d : d) : T(0);
}

}  // namespace residual
}  // namespace dal
