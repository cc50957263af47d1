// Argument checks and layout of the scoring ops (median_filter, residual_score, binary_erode,
// binary_dilate), shared by their CPU and CUDA kernels so that a wrong call fails alike on both.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common.h"
#include "dal/median.h"

namespace dal {

// A (N, C, H, W) or (N, C, D, H, W) tensor seen as `batch` volumes of depth x height x width
// (depth 1 for images); `dims` is 2 or 3.
struct VolumeLayout {
  int64_t batch, depth, height, width, dims;
  DAL_HOST_DEVICE int64_t voxels() const { return depth * height * width; }
};

inline VolumeLayout volume_layout(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4 || t.dim() == 5, name,
              " must be (N, C, H, W) or (N, C, D, H, W), got a tensor of ", t.dim(), " dimensions");
  const bool volume = t.dim() == 5;
  return {t.size(0) * t.size(1), volume ? t.size(2) : 1, t.size(-2), t.size(-1), t.dim() - 2};
}

inline void check_kernel_size(int64_t kernel_size) {
  TORCH_CHECK(kernel_size >= 1 && kernel_size <= median::kMaxKernel && kernel_size % 2 == 1,
              "kernel_size must be an odd integer in [1, ", median::kMaxKernel, "], got ", kernel_size);
}

inline VolumeLayout check_median_args(const at::Tensor& x, int64_t kernel_size) {
  check_floating(x, "x");
  check_kernel_size(kernel_size);
  return volume_layout(x, "x");
}

inline void check_radius(int64_t radius, const char* name) {
  TORCH_CHECK(radius >= 0, name, " must be >= 0 (voxels), got ", radius);
}

// The mask of the residual: the shape of x, or of x with one channel (shared by all channels).
inline void check_mask(const at::Tensor& mask, const at::Tensor& x) {
  TORCH_CHECK(mask.dim() == x.dim() && mask.size(0) == x.size(0) &&
                  (mask.size(1) == x.size(1) || mask.size(1) == 1) &&
                  mask.sizes().slice(2) == x.sizes().slice(2),
              "mask must have the shape of x ", x.sizes(), " (or one channel), got ", mask.sizes());
  TORCH_CHECK(mask.device() == x.device(), "mask must be on the device of x (", x.device(), "), got ",
              mask.device());
}

inline VolumeLayout check_residual_args(const at::Tensor& x, const at::Tensor& phi,
                                        const std::optional<at::Tensor>& mask, int64_t kernel_size,
                                        int64_t erode) {
  const VolumeLayout l = check_median_args(x, kernel_size);
  check_same_shape(phi, x, "phi", "x");
  if (mask.has_value()) check_mask(*mask, x);
  check_radius(erode, "erode");
  return l;
}

// The non-zero voxels of a mask as 0/1 bytes, contiguous (a view of a contiguous bool mask:
// the morphology kernels only read it).
inline at::Tensor mask_bytes(const at::Tensor& mask) {
  if (mask.scalar_type() == at::kBool && mask.is_contiguous()) return mask.view(at::kByte);
  return (mask != 0).to(at::kByte).contiguous();
}

}  // namespace dal
