// Helpers shared by the CPU and CUDA kernels: argument checks (each names the argument and what
// was expected, so that a wrong call fails the same way on every device) and tensor layouts.
#pragma once

#include <ATen/ATen.h>
#include <optional>

namespace dal {

// Which CPU kernel the float32 Sobel magnitude runs, "avx512" or "portable" (sobel_cpu.cpp).
const char* sobel_cpu_kernel();

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name,
              " must be a floating-point tensor (float32, float64, bfloat16 or float16), got ",
              t.scalar_type());
}

inline void check_same_shape(const at::Tensor& t, const at::Tensor& like, const char* name,
                             const char* like_name) {
  TORCH_CHECK(t.sizes() == like.sizes(), name, " must have the shape of ", like_name, " ",
              like.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have the dtype of ", like_name,
              " (", like.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), name, " must be on the device of ", like_name, " (",
              like.device(), "), got ", t.device());
}

// Checks the one-hot arguments and returns the class dimension, wrapped to [0, ndim).
inline int64_t check_onehot_args(const at::Tensor& logits, double tau,
                                 const std::optional<at::Tensor>& noise, int64_t dim) {
  check_floating(logits, "logits");
  TORCH_CHECK(logits.dim() >= 1, "logits must have at least one dimension (the classes)");
  TORCH_CHECK(dim >= -logits.dim() && dim < logits.dim(), "dim must be in [", -logits.dim(), ", ",
              logits.dim() - 1, "] for logits of ", logits.dim(), " dimensions, got ", dim);
  const int64_t class_dim = dim < 0 ? dim + logits.dim() : dim;
  TORCH_CHECK(logits.size(class_dim) >= 1, "logits must have at least one class along dim ",
              class_dim, " (K >= 1), got K = 0");
  TORCH_CHECK(tau > 0 && std::isfinite(tau), "tau must be a positive finite number, got ", tau);
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

}  // namespace dal
