// CPU kernels of dal::onehot_st: the input is seen as (outer, K, inner) and each task takes a
// chunk of contiguous pixels of one outer index, looping over classes outside and pixels inside,
// so that every inner loop is a contiguous, vectorisable stream and the chunk stays in L1.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common.h"
#include "dal/onehot.h"

namespace dal {
namespace {

constexpr int64_t kChunk = 256;

// Calls body(base, count) for every chunk of `count` contiguous pixels starting at element `base`
// (the offset of class 0), spread over all threads.
template <typename Body>
void for_each_pixel_chunk(const ClassLayout& l, const Body& body) {
  const int64_t chunks = (l.inner + kChunk - 1) / kChunk;
  at::parallel_for(0, l.outer * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / chunks, j0 = (task % chunks) * kChunk;
      body(o * l.classes * l.inner + j0, std::min(kChunk, l.inner - j0));
    }
  });
}

template <typename scalar_t, bool kHasNoise>
void onehot_forward(const scalar_t* logits, const scalar_t* noise, scalar_t* out,
                    const ClassLayout& l, double tau_value) {
  using acc_t = at::opmath_type<scalar_t>;
  for_each_pixel_chunk(l, [&](int64_t base, int64_t count) {
    const acc_t tau = static_cast<acc_t>(tau_value);  // a local, not a capture: stays in a register
    acc_t best[kChunk];
    int32_t best_k[kChunk];
    for (int32_t k = 0; k < l.classes; ++k) {
      const int64_t row = base + k * l.inner;
      for (int64_t j = 0; j < count; ++j) {
        const acc_t n = kHasNoise ? static_cast<acc_t>(noise[row + j]) : acc_t(0);
        const acc_t z = onehot::scaled_logit(static_cast<acc_t>(logits[row + j]), n, tau);
        if (k == 0) {
          best[j] = z;
          best_k[j] = 0;
        } else {
          onehot::argmax_step(best[j], best_k[j], z, k);
        }
      }
    }
    for (int32_t k = 0; k < l.classes; ++k) {
      scalar_t* out_row = out + base + k * l.inner;
      for (int64_t j = 0; j < count; ++j) {
        out_row[j] = static_cast<scalar_t>(onehot::onehot_value<acc_t>(best_k[j], k));
      }
    }
  });
}

template <typename scalar_t, bool kHasNoise>
void onehot_backward(const scalar_t* grad, const scalar_t* logits, const scalar_t* noise,
                     scalar_t* grad_logits, const ClassLayout& l, double tau_value) {
  using acc_t = at::opmath_type<scalar_t>;
  // Per thread: the chunk's scaled logits, then softmax weights, of every class. Recomputed
  // here rather than saved by the forward, so the forward writes nothing but its output.
  std::vector<acc_t> scratch(static_cast<size_t>(at::get_num_threads() * l.classes * kChunk));
  for_each_pixel_chunk(l, [&](int64_t base, int64_t count) {
    const acc_t tau = static_cast<acc_t>(tau_value);  // a local, not a capture: stays in a register
    acc_t* __restrict const weights = scratch.data() + at::get_thread_num() * l.classes * kChunk;
    acc_t z_max[kChunk], sum_w[kChunk], dot_gw[kChunk];
    std::fill(z_max, z_max + count, onehot::max_start<acc_t>());
    for (int32_t k = 0; k < l.classes; ++k) {
      const int64_t row = base + k * l.inner;
      acc_t* __restrict const z = weights + k * kChunk;
      for (int64_t j = 0; j < count; ++j) {
        const acc_t n = kHasNoise ? static_cast<acc_t>(noise[row + j]) : acc_t(0);
        z[j] = onehot::scaled_logit(static_cast<acc_t>(logits[row + j]), n, tau);
        z_max[j] = onehot::max_step(z_max[j], z[j]);
      }
    }
    std::fill(sum_w, sum_w + count, acc_t(0));
    std::fill(dot_gw, dot_gw + count, acc_t(0));
    for (int32_t k = 0; k < l.classes; ++k) {
      const scalar_t* __restrict g = grad + base + k * l.inner;
      acc_t* __restrict const w = weights + k * kChunk;
      for (int64_t j = 0; j < count; ++j) {
        w[j] = onehot::softmax_weight(w[j], z_max[j]);
        sum_w[j] += w[j];
        dot_gw[j] += static_cast<acc_t>(g[j]) * w[j];
      }
    }
    for (int32_t k = 0; k < l.classes; ++k) {
      const scalar_t* __restrict g = grad + base + k * l.inner;
      const acc_t* __restrict const w = weights + k * kChunk;
      scalar_t* __restrict out = grad_logits + base + k * l.inner;
      for (int64_t j = 0; j < count; ++j) {
        out[j] = static_cast<scalar_t>(
            onehot::softmax_vjp(w[j], static_cast<acc_t>(g[j]), sum_w[j], dot_gw[j], tau));
      }
    }
  });
}

at::Tensor onehot_st_cpu(const at::Tensor& logits_in, double tau,
                         const std::optional<at::Tensor>& noise_in, int64_t dim) {
  const int64_t class_dim = check_onehot_args(logits_in, tau, noise_in, dim);
  const at::Tensor logits = logits_in.contiguous();
  at::Tensor out = at::empty_like(logits);
  if (logits.numel() == 0) return out;
  const ClassLayout l = class_layout(logits, class_dim);
  const at::Tensor noise = noise_in.has_value() ? noise_in->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "onehot_st_cpu", [&] {
    if (noise.defined()) {
      onehot_forward<scalar_t, true>(logits.const_data_ptr<scalar_t>(),
                                     noise.const_data_ptr<scalar_t>(),
                                     out.mutable_data_ptr<scalar_t>(), l, tau);
    } else {
      onehot_forward<scalar_t, false>(logits.const_data_ptr<scalar_t>(), nullptr,
                                      out.mutable_data_ptr<scalar_t>(), l, tau);
    }
  });
  return out;
}

at::Tensor onehot_st_backward_cpu(const at::Tensor& grad_in, const at::Tensor& logits_in,
                                  double tau, const std::optional<at::Tensor>& noise_in,
                                  int64_t dim) {
  const int64_t class_dim = check_onehot_args(logits_in, tau, noise_in, dim);
  check_same_shape(grad_in, logits_in, "grad", "logits");
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor grad_logits = at::empty_like(logits);
  if (logits.numel() == 0) return grad_logits;
  const ClassLayout l = class_layout(logits, class_dim);
  const at::Tensor noise = noise_in.has_value() ? noise_in->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "onehot_st_backward_cpu", [&] {
    if (noise.defined()) {
      onehot_backward<scalar_t, true>(grad.const_data_ptr<scalar_t>(),
                                      logits.const_data_ptr<scalar_t>(),
                                      noise.const_data_ptr<scalar_t>(),
                                      grad_logits.mutable_data_ptr<scalar_t>(), l, tau);
    } else {
      onehot_backward<scalar_t, false>(grad.const_data_ptr<scalar_t>(),
                                       logits.const_data_ptr<scalar_t>(), nullptr,
                                       grad_logits.mutable_data_ptr<scalar_t>(), l, tau);
    }
  });
  return grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CPU, m) {
  m.impl("onehot_st", &onehot_st_cpu);
  m.impl("onehot_st_backward", &onehot_st_backward_cpu);
}

}  // namespace dal
