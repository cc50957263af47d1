// CPU kernels of dal::sobel: one fused pass over blocks of output rows (the row sweep of
// sobel_cpu.h; the float32 magnitude on AVX-512 CPUs in registers, dal/sobel_avx512.h), split over
// images, planes and rows so that one volume uses every core. The backward gathers the weights
// around each output row with the adjoint taps of dal/sobel.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common.h"
#include "dal/sobel_avx512.h"
#include "sobel_cpu.h"

namespace dal {

const char* sobel_cpu_kernel() {
  // Chosen once, at the first call: torch's capability honours ATEN_CPU_CAPABILITY, and
  // DAL_PORTABLE=1 forces the row sweep.
  static const char* const kernel = [] {
#if defined(DAL_SOBEL_AVX512)
    const char* portable = std::getenv("DAL_PORTABLE");
    if (!(portable && std::strcmp(portable, "1") == 0) && at::get_cpu_capability() == "AVX512") return "avx512";
#endif
    return "portable";
  }();
  return kernel;
}

namespace {

using namespace cpu;

bool avx512_chosen() {
  static const bool chosen = std::strcmp(sobel_cpu_kernel(), "avx512") == 0;
  return chosen;
}

// The scaled magnitude of output row `parts`, with the exact sqrt of dal/sobel.h.
template <typename scalar_t, typename acc_t, int kDims>
void magnitude_row(const SobelParts<acc_t>& parts, scalar_t* __restrict__ out, acc_t scale, int64_t cols) {
  for (int64_t w = 0; w < cols; ++w) {
    acc_t gx, gy, gz;
    sobel_components<acc_t, kDims>(parts, w, gx, gy, gz);
    out[w] = static_cast<scalar_t>(scale * sobel::magnitude(gx, gy, gz));
  }
}

template <typename scalar_t, int kDims, bool kMagnitude>
void sobel_forward(const scalar_t* x, scalar_t* out, const Geometry& g, bool normalized) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t scale = sobel::scale<acc_t>(kDims, normalized);
#if defined(DAL_SOBEL_AVX512)
  if constexpr (kMagnitude && std::is_same_v<scalar_t, float>) {
    if (avx512_chosen()) {
      const bool stream = g.total() * int64_t(sizeof(float)) >= sobel::avx512::kStreamingBytes;
      const RowBlocks blocks{g};
      blocks.parallel([&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          blocks.block(i, [&](int64_t b, int64_t d, int64_t h0, int64_t h1) {
            sobel::avx512::magnitude_block<kDims>(x, out, g, b, d, h0, h1, scale, stream, kBlockRows);
          });
        }
      });
      return;
    }
  }
#endif
  const int64_t plane = g.rows * g.cols;
  for_each_row_block<scalar_t, acc_t, kDims>(g, [&](int64_t b, int64_t d, int64_t h0, int64_t h1, auto& rows) {
    rows.sweep(x, b, d, h0, h1, [&](int64_t h, const SobelParts<acc_t>& parts) {
      if (kMagnitude) {
        magnitude_row<scalar_t, acc_t, kDims>(parts, out + ((b * g.depth + d) * g.rows + h) * g.cols, scale, g.cols);
      } else {
        components_row<scalar_t, acc_t, kDims>(parts, out + ((b * kDims * g.depth + d) * g.rows + h) * g.cols,
                                               g.depth * plane, scale, g.cols);
      }
    });
  });
}

// Backward, step 1 (magnitude only): per-voxel weights d|g|/dg_k * grad, as (images, dims, D, H, W).
template <typename scalar_t, int kDims>
void magnitude_weights(const scalar_t* grad, const scalar_t* x, at::opmath_type<scalar_t>* weights,
                       const Geometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t volume = g.voxels();
  for_each_row_block<scalar_t, acc_t, kDims>(g, [&](int64_t b, int64_t d, int64_t h0, int64_t h1, auto& rows) {
    rows.sweep(x, b, d, h0, h1, [&](int64_t h, const SobelParts<acc_t>& parts) {
      const int64_t row = (d * g.rows + h) * g.cols;
      acc_t* out = weights + b * kDims * volume + row;
      const scalar_t* grad_row = grad + b * volume + row;
      for (int64_t w = 0; w < g.cols; ++w) {
        acc_t gx, gy, gz;
        sobel_components<acc_t, kDims>(parts, w, gx, gy, gz);
        const acc_t mag = sobel::magnitude(gx, gy, gz);
        const acc_t gr = static_cast<acc_t>(grad_row[w]);
        out[w] = sobel::magnitude_vjp(gr, gx, mag);
        out[volume + w] = sobel::magnitude_vjp(gr, gy, mag);
        if (kDims == 3) out[2 * volume + w] = sobel::magnitude_vjp(gr, gz, mag);
      }
    });
  });
}

template <typename weight_t, typename acc_t>
void add_scaled_row(acc_t* __restrict__ into, const weight_t* __restrict__ row, acc_t coef,
                    int64_t cols) {
  for (int64_t w = 0; w < cols; ++w) into[w] += coef * static_cast<acc_t>(row[w]);
}

// Backward, step 2: grad_x = scale * sum_k T_k^T weights_k, T_k the Sobel map of component k.
// Per output row, the D and H taps (dal/sobel.h adjoint_taps) gather the weight rows around it
// into per-component buffers, and the W taps finish.
template <typename scalar_t, typename weight_t, int kDims>
void sobel_adjoint(const weight_t* weights, scalar_t* grad_x, const Geometry& g,
                   at::opmath_type<scalar_t> scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t volume = g.voxels(), W = g.cols;
  for_each_row_index(g, [&](int64_t b, int64_t d, int64_t h) {
    thread_local std::vector<acc_t> buffers;
    buffers.resize(static_cast<size_t>(2 * (W + 2)));
    const sobel::RowTaps<acc_t> taps = sobel::row_taps<acc_t>(kDims == 3, d, g.depth, h, g.rows);
    // Buffer 0 gathers the part to be differentiated along W (gx), buffer 1 the part to be
    // smoothed along W (gy and gz): both are transposed along W in the same pass below.
    acc_t* to_diff = buffers.data() + 1;
    acc_t* to_smooth = to_diff + W + 2;
    std::fill(to_diff - 1, to_diff + W + 1, acc_t(0));
    std::fill(to_smooth - 1, to_smooth + W + 1, acc_t(0));
    const weight_t* base = weights + b * kDims * volume;
    for (int a = kDims == 3 ? 0 : 1; a < (kDims == 3 ? 3 : 2); ++a) {
      for (int j = 0; j < 3; ++j) {
        const int64_t dz = clamp_index(d + a - 1, g.depth), hy = clamp_index(h + j - 1, g.rows);
        const int64_t row = (dz * g.rows + hy) * W;
        acc_t f[3];
        sobel::row_factors(taps, a, j, f);
        if (f[0] != acc_t(0)) add_scaled_row(to_diff, base + row, f[0], W);
        if (f[1] != acc_t(0)) add_scaled_row(to_smooth, base + volume + row, f[1], W);
        if (kDims == 3 && f[2] != acc_t(0)) add_scaled_row(to_smooth, base + 2 * volume + row, f[2], W);
      }
    }
    scalar_t* out = grad_x + ((b * g.depth + d) * g.rows + h) * W;
    // Interior taps along W (neighbours outside are the zeros at -1 and W), then the two ends.
    for (int64_t w = 0; w < W; ++w) {
      const acc_t v = to_diff[w - 1] - to_diff[w + 1] +
                      sobel::smooth(to_smooth[w - 1], to_smooth[w], to_smooth[w + 1]);
      out[w] = static_cast<scalar_t>(scale * v);
    }
    for (const int64_t w : {int64_t(0), W - 1}) {
      acc_t t_diff[3], t_smooth[3];
      sobel::adjoint_taps(true, w, W, t_diff);
      sobel::adjoint_taps(false, w, W, t_smooth);
      acc_t v = 0;
      for (int j = 0; j < 3; ++j) v += t_diff[j] * to_diff[w + j - 1] + t_smooth[j] * to_smooth[w + j - 1];
      out[w] = static_cast<scalar_t>(scale * v);
    }
  });
}

at::Tensor sobel_cpu(const at::Tensor& x_in, bool magnitude, bool normalized) {
  check_edge_input(x_in, "x");
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty(sobel_output_shape(x, magnitude), x.options());
  if (x.numel() == 0) return out;
  const Geometry g = geometry_of(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sobel_cpu", [&] {
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (g.spatial_dims == 3) {
      magnitude ? sobel_forward<scalar_t, 3, true>(in, o, g, normalized)
                : sobel_forward<scalar_t, 3, false>(in, o, g, normalized);
    } else {
      magnitude ? sobel_forward<scalar_t, 2, true>(in, o, g, normalized)
                : sobel_forward<scalar_t, 2, false>(in, o, g, normalized);
    }
  });
  return out;
}

at::Tensor sobel_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, bool magnitude,
                              bool normalized) {
  check_sobel_backward_args(grad_in, x_in, magnitude);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor grad_x = at::empty_like(x);
  if (x.numel() == 0) return grad_x;
  const Geometry g = geometry_of(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sobel_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t scale = sobel::scale<acc_t>(g.spatial_dims, normalized);
    scalar_t* out = grad_x.mutable_data_ptr<scalar_t>();
    if (magnitude) {
      at::Tensor weights = at::empty({g.images * g.spatial_dims * g.voxels()},
                                     x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      acc_t* w = weights.mutable_data_ptr<acc_t>();
      if (g.spatial_dims == 3) {
        magnitude_weights<scalar_t, 3>(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), w, g);
        sobel_adjoint<scalar_t, acc_t, 3>(w, out, g, scale);
      } else {
        magnitude_weights<scalar_t, 2>(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), w, g);
        sobel_adjoint<scalar_t, acc_t, 2>(w, out, g, scale);
      }
    } else if (g.spatial_dims == 3) {
      sobel_adjoint<scalar_t, scalar_t, 3>(grad.const_data_ptr<scalar_t>(), out, g, scale);
    } else {
      sobel_adjoint<scalar_t, scalar_t, 2>(grad.const_data_ptr<scalar_t>(), out, g, scale);
    }
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CPU, m) {
  m.impl("sobel", &sobel_cpu);
  m.impl("sobel_backward", &sobel_backward_cpu);
}

}  // namespace dal
