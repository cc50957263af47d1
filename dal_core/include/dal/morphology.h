// Per-voxel math of binary erosion and dilation (binary_erode, binary_dilate), and of the eroded
// mask of the residual score: the minimum (erode) or maximum (dilate) of a 0/1 byte volume over
// a cube of side 2 * radius + 1, replicate border (the volume's edge does not erode). The cube is
// separable: kernels run one pass per spatial axis, each voxel the extreme of the 2 * radius + 1
// values around it along that axis.
#pragma once

#include "dal/common.h"

namespace dal {
namespace morphology {

template <bool kMinimum>
DAL_HOST_DEVICE inline uint8_t extreme(uint8_t a, uint8_t b) {
  return kMinimum ? (b < a ? b : a) : (a < b ? b : a);
}

// The extreme around index i of a line of `size` values `stride` apart; `at` points at index i.
template <bool kMinimum>
DAL_HOST_DEVICE inline uint8_t extreme_along(const uint8_t* at, int64_t i, int64_t size, int64_t stride,
                                             int64_t radius) {
  uint8_t value = at[0];
  for (int64_t o = -radius; o <= radius; ++o) value = extreme<kMinimum>(value, at[(clamp_index(i + o, size) - i) * stride]);
  return value;
}

}  // namespace morphology
}  // namespace dal
