// CUDA kernels of dal::onehot_st: one thread per pixel, looping over its K classes, which lie
// `inner` elements apart, so that neighbouring threads read neighbouring addresses.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common.h"
#include "cuda_helpers.cuh"
#include "dal/onehot.h"

namespace dal {
namespace {

using namespace cuda;

template <typename scalar_t>
__global__ void onehot_forward_kernel(const scalar_t* __restrict__ logits,
                                      const scalar_t* __restrict__ noise,
                                      scalar_t* __restrict__ out, int64_t pixels, int64_t classes,
                                      int64_t inner, double tau_value) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t tau = static_cast<acc_t>(tau_value);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pixels;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (p / inner) * classes * inner + p % inner;
    acc_t best = acc_t(0);
    int32_t best_k = 0;
    for (int32_t k = 0; k < classes; ++k) {
      const int64_t i = base + k * inner;
      const acc_t n = noise ? static_cast<acc_t>(noise[i]) : acc_t(0);
      const acc_t z = onehot::scaled_logit(static_cast<acc_t>(logits[i]), n, tau);
      if (k == 0) best = z; else onehot::argmax_step(best, best_k, z, k);
    }
    for (int32_t k = 0; k < classes; ++k) {
      out[base + k * inner] = static_cast<scalar_t>(onehot::onehot_value<acc_t>(best_k, k));
    }
  }
}

template <typename scalar_t>
__global__ void onehot_backward_kernel(const scalar_t* __restrict__ grad,
                                       const scalar_t* __restrict__ logits,
                                       const scalar_t* __restrict__ noise,
                                       scalar_t* __restrict__ grad_logits, int64_t pixels,
                                       int64_t classes, int64_t inner, double tau_value) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t tau = static_cast<acc_t>(tau_value);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pixels;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (p / inner) * classes * inner + p % inner;
    auto z_of = [&](int32_t k) {
      const int64_t i = base + k * inner;
      const acc_t n = noise ? static_cast<acc_t>(noise[i]) : acc_t(0);
      return onehot::scaled_logit(static_cast<acc_t>(logits[i]), n, tau);
    };
    acc_t z_max = onehot::max_start<acc_t>();
    for (int32_t k = 0; k < classes; ++k) z_max = onehot::max_step(z_max, z_of(k));
    acc_t sum_w = 0, dot_gw = 0;
    for (int32_t k = 0; k < classes; ++k) {
      const acc_t w = onehot::softmax_weight(z_of(k), z_max);
      sum_w += w;
      dot_gw += static_cast<acc_t>(grad[base + k * inner]) * w;
    }
    for (int32_t k = 0; k < classes; ++k) {
      const acc_t w = onehot::softmax_weight(z_of(k), z_max);
      grad_logits[base + k * inner] = static_cast<scalar_t>(onehot::softmax_vjp(
          w, static_cast<acc_t>(grad[base + k * inner]), sum_w, dot_gw, tau));
    }
  }
}

at::Tensor onehot_st_cuda(const at::Tensor& logits_in, double tau,
                          const std::optional<at::Tensor>& noise_in, int64_t dim) {
  const int64_t class_dim = check_onehot_args(logits_in, tau, noise_in, dim);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  at::Tensor out = at::empty_like(logits);
  if (logits.numel() == 0) return out;
  const ClassLayout l = class_layout(logits, class_dim);
  const int64_t pixels = l.outer * l.inner;
  const at::Tensor noise = noise_in.has_value() ? noise_in->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "onehot_st_cuda", [&] {
    onehot_forward_kernel<scalar_t><<<blocks_for(pixels), kThreads, 0,
                                      at::cuda::getCurrentCUDAStream()>>>(
        logits.const_data_ptr<scalar_t>(),
        noise.defined() ? noise.const_data_ptr<scalar_t>() : nullptr,
        out.mutable_data_ptr<scalar_t>(), pixels, l.classes, l.inner, tau);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor onehot_st_backward_cuda(const at::Tensor& grad_in, const at::Tensor& logits_in,
                                   double tau, const std::optional<at::Tensor>& noise_in,
                                   int64_t dim) {
  const int64_t class_dim = check_onehot_args(logits_in, tau, noise_in, dim);
  check_same_shape(grad_in, logits_in, "grad", "logits");
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor grad_logits = at::empty_like(logits);
  if (logits.numel() == 0) return grad_logits;
  const ClassLayout l = class_layout(logits, class_dim);
  const int64_t pixels = l.outer * l.inner;
  const at::Tensor noise = noise_in.has_value() ? noise_in->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "onehot_st_backward_cuda", [&] {
    onehot_backward_kernel<scalar_t><<<blocks_for(pixels), kThreads, 0,
                                       at::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
        noise.defined() ? noise.const_data_ptr<scalar_t>() : nullptr,
        grad_logits.mutable_data_ptr<scalar_t>(), pixels, l.classes, l.inner, tau);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CUDA, m) {
  m.impl("onehot_st", &onehot_st_cuda);
  m.impl("onehot_st_backward", &onehot_st_backward_cuda);
}

}  // namespace dal
