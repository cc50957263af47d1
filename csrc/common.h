// The argument checks of every op and the views of its tensors, shared by its CPU and CUDA
// kernels, so that a wrong call fails alike on every device. Each check names the argument and
// what was expected, and raises the Python type that the op's pure-torch reference raises
// (python/dal/ops/reference): TypeError for a wrong dtype (TORCH_CHECK_TYPE), IndexError for a
// dimension out of range (TORCH_CHECK_INDEX), ValueError for any other wrong value or shape
// (TORCH_CHECK_VALUE).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <vector>

#include "dal/common.h"
#include "dal/median.h"

namespace dal {

// Which CPU kernel the float32 Sobel magnitude runs, "avx512" or "portable" (sobel_cpu.cpp).
const char* sobel_cpu_kernel();

// --- shared by every op ---

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   " must be a floating-point tensor (float32, float64, bfloat16 or float16), got ",
                   t.scalar_type());
}

inline void check_same_shape(const at::Tensor& t, const at::Tensor& like, const char* name,
                             const char* like_name) {
  TORCH_CHECK_VALUE(t.sizes() == like.sizes(), name, " must have the shape of ", like_name, " ",
                    like.sizes(), ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == like.scalar_type(), name, " must have the dtype of ", like_name,
                    " (", like.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == like.device(), name, " must be on the device of ", like_name, " (",
                    like.device(), "), got ", t.device());
}

// An (N, C, H, W) or (N, C, D, H, W) tensor, seen contiguous as dal/common.h's Geometry.
inline void check_spatial(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 4 || t.dim() == 5, name, " must be (N, C, H, W) or (N, C, D, H, W), got ",
                    t.dim(), " dimensions ", t.sizes());
}

inline Geometry geometry_of(const at::Tensor& t) {
  const bool is_3d = t.dim() == 5;
  return {is_3d ? 3 : 2, t.size(0) * t.size(1), is_3d ? t.size(2) : 1, t.size(-2), t.size(-1)};
}

// --- onehot_st ---

// Checks the one-hot arguments and returns the class dimension, wrapped to [0, ndim).
inline int64_t check_onehot_args(const at::Tensor& logits, double tau,
                                 const std::optional<at::Tensor>& noise, int64_t dim) {
  check_floating(logits, "logits");
  TORCH_CHECK_VALUE(logits.dim() >= 1, "logits must have at least one dimension (the classes)");
  TORCH_CHECK_INDEX(dim >= -logits.dim() && dim < logits.dim(), "dim must be in [", -logits.dim(), ", ",
                    logits.dim() - 1, "] for logits of ", logits.dim(), " dimensions, got ", dim);
  const int64_t class_dim = dim < 0 ? dim + logits.dim() : dim;
  TORCH_CHECK_VALUE(logits.size(class_dim) >= 1, "logits must have at least one class along dim ",
                    class_dim, " (K >= 1), got K = 0");
  TORCH_CHECK_VALUE(tau > 0 && std::isfinite(tau), "tau must be a positive finite number, got ", tau);
  if (noise.has_value()) check_same_shape(*noise, logits, "noise", "logits");
  return class_dim;
}

// A contiguous tensor seen as (outer, classes, inner) around its class dimension.
struct ClassLayout {
  int64_t outer, classes, inner;
};

inline ClassLayout class_layout(const at::Tensor& t, int64_t class_dim) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < class_dim; ++d) outer *= t.size(d);
  for (int64_t d = class_dim + 1; d < t.dim(); ++d) inner *= t.size(d);
  return {outer, t.size(class_dim), inner};
}

// --- sobel, canny ---

inline void check_edge_input(const at::Tensor& x, const char* name) {
  check_floating(x, name);
  check_spatial(x, name);
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
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(out_shape), "grad must have the shape of sobel's output ",
                    at::IntArrayRef(out_shape), ", got ", grad.sizes());
  TORCH_CHECK_VALUE(grad.scalar_type() == x.scalar_type(), "grad must have the dtype of x (", x.scalar_type(),
                    "), got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == x.device(), "grad must be on the device of x (", x.device(), "), got ",
                    grad.device());
}

inline void check_canny_args(const at::Tensor& x, double low, double high, double sigma, bool use_quantiles) {
  check_edge_input(x, "x");
  TORCH_CHECK_VALUE(std::isfinite(sigma) && sigma >= 0, "sigma must be a finite number >= 0, got ", sigma);
  TORCH_CHECK_VALUE(!std::isnan(low) && !std::isnan(high), "low and high must not be NaN");
  TORCH_CHECK_VALUE(low <= high, "low must be <= high, got low = ", low, " and high = ", high);
  if (use_quantiles) {
    TORCH_CHECK_VALUE(low >= 0 && high <= 1,
                      "low and high must be quantiles in [0, 1] with use_quantiles=True, got low = ", low,
                      " and high = ", high);
  }
}

// --- median_filter, residual_score, binary_erode, binary_dilate ---

inline void check_median_args(const at::Tensor& x, int64_t kernel_size) {
  check_floating(x, "x");
  check_spatial(x, "x");
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size <= median::kMaxKernel && kernel_size % 2 == 1,
                    "kernel_size must be an odd integer in [1, ", median::kMaxKernel, "], got ", kernel_size);
}

inline void check_radius(int64_t radius, const char* name) {
  TORCH_CHECK_VALUE(radius >= 0, name, " must be >= 0 (voxels), got ", radius);
}

// The mask of the residual: the shape of x, or of x with one channel (shared by all channels).
inline void check_mask(const at::Tensor& mask, const at::Tensor& x) {
  TORCH_CHECK_VALUE(mask.dim() == x.dim() && mask.size(0) == x.size(0) &&
                        (mask.size(1) == x.size(1) || mask.size(1) == 1) &&
                        mask.sizes().slice(2) == x.sizes().slice(2),
                    "mask must have the shape of x ", x.sizes(), " (or one channel), got ", mask.sizes());
  TORCH_CHECK_VALUE(mask.device() == x.device(), "mask must be on the device of x (", x.device(), "), got ",
                    mask.device());
}

inline void check_residual_args(const at::Tensor& x, const at::Tensor& phi, const std::optional<at::Tensor>& mask,
                                int64_t kernel_size, int64_t erode) {
  check_median_args(x, kernel_size);
  check_same_shape(phi, x, "phi", "x");
  if (mask.has_value()) check_mask(*mask, x);
  check_radius(erode, "erode");
}

inline void check_morphology_args(const at::Tensor& mask, int64_t radius) {
  check_spatial(mask, "mask");
  check_radius(radius, "radius");
}

// The non-zero voxels of a mask as 0/1 bytes, contiguous (a view of a contiguous bool mask:
// the morphology kernels only read it).
inline at::Tensor mask_bytes(const at::Tensor& mask) {
  if (mask.scalar_type() == at::kBool && mask.is_contiguous()) return mask.view(at::kByte);
  return (mask != 0).to(at::kByte).contiguous();
}

// residual_score's mask: 0/1 bytes of x's shape, eroded by `radius` voxels with the device's
// erosion (erode_cpu or erode_cuda); an undefined tensor without a mask.
template <typename Erode>
at::Tensor eroded_mask_bytes(const std::optional<at::Tensor>& mask, int64_t radius, at::IntArrayRef sizes,
                             Erode erode_on_device) {
  if (!mask.has_value()) return at::Tensor();
  at::Tensor inside = mask_bytes(*mask);
  erode_on_device(inside, geometry_of(inside), radius);
  return inside.expand(sizes).contiguous();
}

}  // namespace dal
