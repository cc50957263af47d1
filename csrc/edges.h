// Shared by the CPU and CUDA kernels of the edge ops (sobel, canny): argument checks and the
// (images, depth, rows, columns) view of an (N, C, H, W) or (N, C, D, H, W) tensor.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "common.h"
#include "dal/common.h"

namespace dal {

inline void check_edge_input(const at::Tensor& x, const char* name) {
  check_floating(x, name);
  TORCH_CHECK(x.dim() == 4 || x.dim() == 5, name,
              " must be (N, C, H, W) or (N, C, D, H, W), got ", x.dim(), " dimensions ", x.sizes());
}

inline void check_canny_args(const at::Tensor& x, double low, double high, double sigma,
                             bool use_quantiles) {
  check_edge_input(x, "x");
  TORCH_CHECK(std::isfinite(sigma) && sigma >= 0, "sigma must be a finite number >= 0, got ", sigma);
  TORCH_CHECK(!std::isnan(low) && !std::isnan(high), "low and high must not be NaN");
  TORCH_CHECK(low <= high, "low must be <= high, got low = ", low, " and high = ", high);
  if (use_quantiles) {
    TORCH_CHECK(low >= 0 && high <= 1, "low and high must be quantiles in [0, 1] with use_quantiles=True, got low = ",
                low, " and high = ", high);
  }
}

// A contiguous (N, C, [D,] H, W) tensor as `images` = N * C volumes of depth x rows x cols
// (depth = 1 in 2D).
struct EdgeGeometry {
  int spatial_dims;
  int64_t images, depth, rows, cols;
  DAL_HOST_DEVICE int64_t voxels() const { return depth * rows * cols; }
  DAL_HOST_DEVICE int64_t total() const { return images * voxels(); }
};

inline EdgeGeometry edge_geometry(const at::Tensor& x) {
  const bool is_3d = x.dim() == 5;
  return {is_3d ? 3 : 2, x.size(0) * x.size(1), is_3d ? x.size(2) : 1, x.size(-2), x.size(-1)};
}

// The shape of sobel's output: (N, C, ...) for the magnitude, (N, C, dims, ...) for components.
inline std::vector<int64_t> sobel_output_shape(const at::Tensor& x, bool magnitude) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  if (!magnitude) shape.insert(shape.begin() + 2, x.dim() - 2);
  return shape;
}

// sobel_backward's grad: the shape of sobel's output, and the dtype and device of x.
inline void check_sobel_backward_args(const at::Tensor& grad, const at::Tensor& x, bool magnitude) {
  check_edge_input(x, "x");
  check_floating(grad, "grad");
  const std::vector<int64_t> out_shape = sobel_output_shape(x, magnitude);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(out_shape), "grad must have the shape of sobel's output ",
              at::IntArrayRef(out_shape), ", got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "grad must have the dtype of x (", x.scalar_type(), "), got ",
              grad.scalar_type());
  TORCH_CHECK(grad.device() == x.device(), "grad must be on the device of x (", x.device(), "), got ", grad.device());
}

}  // namespace dal
