// CPU kernels of dal::binary_erode and dal::binary_dilate, and the erosion of residual_score's
// mask (morphology_cpu.h): one pass per axis of dal/morphology.h's extreme, each a contiguous
// loop along W.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../common.h"
#include "dal/morphology.h"
#include "morphology_cpu.h"

namespace dal {
namespace {

// One row of a box extreme along W. Plain arguments, not captures: a byte store may alias any
// memory, so bounds read through a closure would be reloaded after each store, unvectorised.
template <bool Minimum>
void extreme_along_row(const uint8_t* src, uint8_t* __restrict dst, int64_t width, int64_t radius) {
  for (int64_t w = radius; w + radius < width; ++w) {
    uint8_t v = src[w - radius];
    for (int64_t o = 1 - radius; o <= radius; ++o) v = morphology::extreme<Minimum>(v, src[w + o]);
    dst[w] = v;
  }
  auto clamped = [&](int64_t w) { dst[w] = morphology::extreme_along<Minimum>(src + w, w, width, 1, radius); };
  for (int64_t w = 0; w < std::min(radius, width); ++w) clamped(w);
  for (int64_t w = std::max(radius, width - radius); w < width; ++w) clamped(w);
}

template <bool Minimum>
void extreme_of_rows(uint8_t* __restrict dst, const uint8_t* other, int64_t width) {
  for (int64_t w = 0; w < width; ++w) dst[w] = morphology::extreme<Minimum>(dst[w], other[w]);
}

// Box minimum (erode) or maximum (dilate) of a 0/1 byte volume, radius voxels each way along
// every spatial axis, replicate border: one pass per axis, each a contiguous loop along W.
// Replaces `volume` by the result; never writes into the tensor it was given (it may be a view
// of the caller's mask).
template <bool Minimum>
void box_extreme(at::Tensor& volume, const Geometry& g, int64_t radius) {
  if (radius == 0 || volume.numel() == 0) return;
  const int64_t W = g.cols, H = g.rows, D = g.depth;
  at::Tensor spare;  // a buffer of ours that the next pass may overwrite
  for (int64_t axis = 0; axis < g.spatial_dims; ++axis) {
    at::Tensor result = spare.defined() ? spare : at::empty_like(volume);
    const uint8_t* in = volume.const_data_ptr<uint8_t>();
    uint8_t* out = result.mutable_data_ptr<uint8_t>();
    at::parallel_for(0, g.images * D * H, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const uint8_t* src = in + row * W;
        uint8_t* dst = out + row * W;
        if (axis == 0) {
          extreme_along_row<Minimum>(src, dst, W, radius);
        } else {  // along H or D: whole neighbouring rows at once
          const int64_t stride = axis == 1 ? W : W * H, size = axis == 1 ? H : D;
          const int64_t pos = axis == 1 ? row % H : (row / H) % D;
          std::copy_n(src, W, dst);
          for (int64_t o = -radius; o <= radius; ++o) {
            extreme_of_rows<Minimum>(dst, src + (clamp_index(pos + o, size) - pos) * stride, W);
          }
        }
      }
    });
    spare = axis == 0 ? at::Tensor() : volume;
    volume = result;
  }
}

at::Tensor binary_morphology(const at::Tensor& mask, int64_t radius, bool erode) {
  check_morphology_args(mask, radius);
  at::Tensor bytes = mask_bytes(mask);
  if (erode) {
    box_extreme<true>(bytes, geometry_of(bytes), radius);
  } else {
    box_extreme<false>(bytes, geometry_of(bytes), radius);
  }
  return bytes.to(at::kBool);
}

at::Tensor binary_erode_cpu(const at::Tensor& mask, int64_t radius) { return binary_morphology(mask, radius, true); }
at::Tensor binary_dilate_cpu(const at::Tensor& mask, int64_t radius) { return binary_morphology(mask, radius, false); }

}  // namespace

void erode_cpu(at::Tensor& bytes, const Geometry& g, int64_t radius) { box_extreme<true>(bytes, g, radius); }

TORCH_LIBRARY_IMPL(dal, CPU, m) {
  m.impl("binary_erode", &binary_erode_cpu);
  m.impl("binary_dilate", &binary_dilate_cpu);
}

}  // namespace dal
