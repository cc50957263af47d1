// Per-pixel math of the straight-through one-hot operator (kernel 1).
//
// Forward: y_k = [k == argmax_j z_j] with z = (logits + noise) / tau, ties to the lowest index
// and NaN counted as the largest value (as torch.argmax does).
// Backward: the gradient of softmax(z), i.e. dL/dlogits_k = s_k (g_k - <g, s>) / tau.
//
// The functions below are the steps of one pixel's loop over its K classes. CPU and CUDA kernels
// differ only in how they loop over pixels (the CPU keeps a chunk of pixels in flight so that its
// inner loop is contiguous and vectorises; CUDA gives each thread one pixel).
#pragma once

#include "dal/common.h"

namespace dal {
namespace onehot {

template <typename Acc>
DAL_HOST_DEVICE inline Acc scaled_logit(Acc logit, Acc noise, Acc tau) {
  return (logit + noise) / tau;
}

// One step of a running arg-max over classes visited in increasing order k.
template <typename Acc>
DAL_HOST_DEVICE inline void argmax_step(Acc& best, int32_t& best_k, Acc value, int32_t k) {
  const bool take = value > best || (is_nan(value) && !is_nan(best));
  best = take ? value : best;
  best_k = take ? k : best_k;
}

template <typename Acc>
DAL_HOST_DEVICE inline Acc onehot_value(int32_t best_k, int32_t k) {
  return best_k == k ? Acc(1) : Acc(0);
}

// The running maximum of the scaled logits, from -infinity (max_start), that the softmax weights
// subtract: NaN is skipped, as fmax skips it.
template <typename Acc>
DAL_HOST_DEVICE inline Acc max_start() {
  return -Acc(INFINITY);
}

template <typename Acc>
DAL_HOST_DEVICE inline Acc max_step(Acc running, Acc z) {
  return z > running ? z : running;
}

// Unnormalised softmax weight exp(z - max_z); max_z keeps it in (0, 1].
template <typename Acc>
DAL_HOST_DEVICE inline Acc softmax_weight(Acc z, Acc z_max) {
  return exp_(z - z_max);
}

// Straight-through gradient of one class, given the pixel's sums over classes:
// sum_weight = sum_j e_j, dot_grad_weight = sum_j g_j e_j.
template <typename Acc>
DAL_HOST_DEVICE inline Acc softmax_vjp(Acc weight, Acc grad, Acc sum_weight, Acc dot_grad_weight,
                                       Acc tau) {
  const Acc inv_sum = Acc(1) / sum_weight;
  return weight * inv_sum * (grad - dot_grad_weight * inv_sum) / tau;
}

}  // namespace onehot
}  // namespace dal
