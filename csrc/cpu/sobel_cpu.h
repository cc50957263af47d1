// The Sobel row sweep of the CPU kernels, shared by sobel_cpu.cpp (the portable kernel) and
// canny_cpu.cpp.
//
// Work is split into blocks of rows of one plane (image, plane, rows h0..h1; cpu_helpers.h), over
// all threads, so that one volume uses every core. A block sweeps its rows once (SobelRows): the
// steps along D and W of each input row position are computed once per block, not once per
// output row that reads them, and the H step that finishes an output row reads its three ring
// rows at the same column. The op is bound by the loads and stores of the L1 buffers, not by
// arithmetic, so the fewer passes over them the better. All buffers are a few rows long
// (L1-resident), and every inner loop runs along W, contiguous, and vectorises.
#pragma once

#include <c10/macros/Macros.h>

#include <algorithm>
#include <vector>

#include "cpu_helpers.h"
#include "dal/sobel.h"

namespace dal {
namespace cpu {

// The three rows around output row h of the parts that the H step finishes: x (to smooth along H
// into gx), y (to differentiate along H into gy), z (to smooth along H into gz); index 0 is row
// h - 1, 1 is row h, 2 is row h + 1. y[1] is unused (the derivative skips the centre), and in 2D z
// is unused.
template <typename acc_t>
struct SobelParts {
  const acc_t* x[3];
  const acc_t* y[3];
  const acc_t* z[3];
};

// Sweeps blocks of rows and hands each output row's parts to a callback. Each input row position
// is stepped once along D and then along W (dal/sobel.h d_steps, w_step), into rings of three
// rows; every output row is then the H step (h_step) of the ring rows around it, read at the same
// column, so the caller's last loop can keep gx, gy, gz in registers.
template <typename scalar_t, typename acc_t, int kDims>
class SobelRows {
 public:
  explicit SobelRows(const Geometry& g) : g_(g), stride_(g.cols) {
    storage_.resize(static_cast<size_t>(9 * stride_));
  }

  // emit(h, parts) for rows h0 <= h < h1 of plane d of image b.
  template <typename Emit>
  void sweep(const scalar_t* x, int64_t b, int64_t d, int64_t h0, int64_t h1, const Emit& emit) {
    for (int64_t h = h0 - 1; h <= h0; ++h) input_row(x, b, d, h);
    for (int64_t h = h0; h < h1; ++h) {
      input_row(x, b, d, h + 1);
      SobelParts<acc_t> parts;
      for (int k = 0; k < 3; ++k) {
        parts.x[k] = ring(0, h + k - 1);
        parts.y[k] = ring(1, h + k - 1);
        parts.z[k] = ring(2, h + k - 1);
      }
      emit(h, parts);
    }
  }

 private:
  // Buffer k of 9: rings 0-2 (x, y, z parts) of three rows each.
  acc_t* buffer(int k) { return storage_.data() + k * stride_; }
  acc_t* ring(int part, int64_t h) { return buffer(3 * part + static_cast<int>((h + 3) % 3)); }

  // Input row h (clamped: replicate border along H and D) stepped along D, then along W.
  void input_row(const scalar_t* x, int64_t b, int64_t d, int64_t h) {
    const int64_t W = g_.cols, hy = clamp_index(h, g_.rows);
    auto row_ptr = [&](int64_t dz) {
      return x + ((b * g_.depth + clamp_index(dz, g_.depth)) * g_.rows + hy) * W;
    };
    input_steps(row_ptr(d - 1), row_ptr(d), row_ptr(d + 1), ring(0, h), ring(1, h), ring(2, h), W);
  }

  // The D steps at column i (in 2D, the value and no derivative). Always inlined: GCC kept the
  // float16 3D one out of line, and the loop below calling it then ran unvectorised.
  C10_ALWAYS_INLINE static sobel::DSteps<acc_t> d_steps(const scalar_t* __restrict__ before, const scalar_t* __restrict__ at,
                                      const scalar_t* __restrict__ after, int64_t i) {
    if constexpr (kDims == 2) return sobel::d_steps_2d(static_cast<acc_t>(at[i]));
    return sobel::d_steps(static_cast<acc_t>(before[i]), static_cast<acc_t>(at[i]), static_cast<acc_t>(after[i]));
  }

  // The D and W steps of one input row in one pass, the W neighbours read from the input rows
  // (replicated at the ends), so that no D-stepped row is stored and read back.
  static void input_steps(const scalar_t* __restrict__ before, const scalar_t* __restrict__ at,
                          const scalar_t* __restrict__ after, acc_t* __restrict__ x_part, acc_t* __restrict__ y_part,
                          acc_t* __restrict__ z_part, int64_t cols) {
    auto column = [&](int64_t w, int64_t left, int64_t right) {
      const sobel::Parts<acc_t> p = sobel::w_step(d_steps(before, at, after, left), d_steps(before, at, after, w),
                                                  d_steps(before, at, after, right));
      x_part[w] = p.x;
      y_part[w] = p.y;
      if (kDims == 3) z_part[w] = p.z;
    };
    column(0, 0, std::min<int64_t>(1, cols - 1));
    // The interior: the same steps without the clamps. ivdep: the rows never overlap, but GCC's
    // run-time overlap check fell back to scalar code on every row.
#pragma GCC ivdep
    for (int64_t w = 1; w < cols - 1; ++w) {
      const sobel::Parts<acc_t> p = sobel::w_step(d_steps(before, at, after, w - 1), d_steps(before, at, after, w),
                                                  d_steps(before, at, after, w + 1));
      x_part[w] = p.x;
      y_part[w] = p.y;
      if (kDims == 3) z_part[w] = p.z;
    }
    if (cols > 1) column(cols - 1, cols - 2, cols - 1);
  }

  Geometry g_;
  int64_t stride_;
  std::vector<acc_t> storage_;
};

// The H step of output row `parts` at column w: the components gx, gy, gz (gz = 0 in 2D).
template <typename acc_t, int kDims>
inline void sobel_components(const SobelParts<acc_t>& parts, int64_t w, acc_t& gx, acc_t& gy, acc_t& gz) {
  auto row = [&](int k) {
    return sobel::Parts<acc_t>{parts.x[k][w], parts.y[k][w], kDims == 3 ? parts.z[k][w] : acc_t(0)};
  };
  acc_t g[3];
  sobel::h_step(row(0), row(1), row(2), g);
  gx = g[0], gy = g[1], gz = g[2];
}

// Runs body(image, plane, h0, h1, rows) over the row blocks; `rows` is the calling thread's
// SobelRows.
template <typename scalar_t, typename acc_t, int kDims, typename Body>
void for_each_row_block(const Geometry& g, const Body& body) {
  const RowBlocks blocks{g};
  blocks.parallel([&](int64_t begin, int64_t end) {
    SobelRows<scalar_t, acc_t, kDims> rows(g);
    for (int64_t i = begin; i < end; ++i) {
      blocks.block(i, [&](int64_t b, int64_t d, int64_t h0, int64_t h1) { body(b, d, h0, h1, rows); });
    }
  });
}

// The components of output row `parts`, scaled, `component_stride` apart.
template <typename scalar_t, typename acc_t, int kDims>
void components_row(const SobelParts<acc_t>& parts, scalar_t* __restrict__ out, int64_t component_stride,
                    acc_t scale, int64_t cols) {
  for (int64_t w = 0; w < cols; ++w) {
    acc_t gx, gy, gz;
    sobel_components<acc_t, kDims>(parts, w, gx, gy, gz);
    out[w] = static_cast<scalar_t>(scale * gx);
    out[component_stride + w] = static_cast<scalar_t>(scale * gy);
    if (kDims == 3) out[2 * component_stride + w] = static_cast<scalar_t>(scale * gz);
  }
}

}  // namespace cpu
}  // namespace dal
