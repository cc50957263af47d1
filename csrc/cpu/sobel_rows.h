// The row steps of the Sobel operator on CPU, shared by the sobel and canny kernels.
//
// Work is split into blocks of rows of one plane (image, plane, rows h0..h1), over all threads,
// so that one volume uses every core. A block sweeps its rows once (SobelRows): the steps along D
// and W of each input row position are computed once per block, not once per output row that
// reads them, and the H step that finishes an output row reads its three ring rows at the same
// column. The op is bound by the loads and stores of the L1 buffers, not by arithmetic, so the
// fewer passes over them the better. All buffers are a few rows long (L1-resident), and every
// inner loop runs along W, contiguous, and vectorises.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../edges.h"
#include "dal/sobel.h"

namespace dal {
namespace cpu {

using sobel::diff;
using sobel::smooth;

inline int64_t clamp_index(int64_t i, int64_t n) { return std::min(std::max(i, int64_t(0)), n - 1); }

// Rows per work block: long enough that the two extra D steps at its start cost little, short
// enough that a single 2D image still splits over the cores.
constexpr int64_t kBlockRows = 32;

// Runs body(image, plane, row) for every row of every image, split over all threads.
template <typename Body>
void for_each_row_index(const EdgeGeometry& g, const Body& body) {
  const int64_t rows = g.images * g.depth * g.rows;
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(g.cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) body(r / (g.depth * g.rows), (r / g.rows) % g.depth, r % g.rows);
  });
}

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
// is stepped once along D (smooth and differentiate: three planes in) and then along W (the
// differentiated-along-W and smoothed-along-W rows), into rings of three rows; every output row
// is then the H step of the ring rows around it, read at the same column, so the caller's last
// loop can keep gx, gy, gz in registers. The steps along D, W, H in this order are those of
// dal/sobel.h's gradient_2d / gradient_3d.
template <typename scalar_t, typename acc_t, int kDims>
class SobelRows {
 public:
  explicit SobelRows(const EdgeGeometry& g) : g_(g), stride_(g.cols) {
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

  // The D steps at column i: the D-smoothed and D-differentiated values (in 2D, the value and 0).
  static void d_steps(const scalar_t* __restrict__ before, const scalar_t* __restrict__ at,
                      const scalar_t* __restrict__ after, int64_t i, acc_t& smoothed, acc_t& derived) {
    if (kDims == 2) {
      smoothed = static_cast<acc_t>(at[i]);
      derived = acc_t(0);
    } else {
      const acc_t a = static_cast<acc_t>(before[i]), c = static_cast<acc_t>(after[i]);
      smoothed = smooth(a, static_cast<acc_t>(at[i]), c);
      derived = diff(a, c);
    }
  }

  // The D and W steps of one input row in one pass, the W neighbours read from the input rows
  // (replicated at the ends), so that no D-stepped row is stored and read back: x = d/dw of the
  // D-smoothed row, y = its smoothing along W, z = the smoothing along W of the D-differentiated
  // row (3D only).
  static void input_steps(const scalar_t* __restrict__ before, const scalar_t* __restrict__ at,
                          const scalar_t* __restrict__ after, acc_t* __restrict__ x_part, acc_t* __restrict__ y_part,
                          acc_t* __restrict__ z_part, int64_t cols) {
    auto column = [&](int64_t w, int64_t left, int64_t right) {
      acc_t s_left, s_at, s_right, d_left, d_at, d_right;
      d_steps(before, at, after, left, s_left, d_left);
      d_steps(before, at, after, w, s_at, d_at);
      d_steps(before, at, after, right, s_right, d_right);
      x_part[w] = diff(s_left, s_right);
      y_part[w] = smooth(s_left, s_at, s_right);
      if (kDims == 3) z_part[w] = smooth(d_left, d_at, d_right);
    };
    column(0, 0, std::min<int64_t>(1, cols - 1));
    // The interior, written out so that it vectorises; ivdep: the rows never overlap, but GCC's
    // run-time overlap check fell back to scalar code on every row.
    if constexpr (kDims == 3) {
#pragma GCC ivdep
      for (int64_t w = 1; w < cols - 1; ++w) {
        const acc_t b_left = static_cast<acc_t>(before[w - 1]), b_at = static_cast<acc_t>(before[w]),
                    b_right = static_cast<acc_t>(before[w + 1]);
        const acc_t a_left = static_cast<acc_t>(after[w - 1]), a_at = static_cast<acc_t>(after[w]),
                    a_right = static_cast<acc_t>(after[w + 1]);
        const acc_t s_left = smooth(b_left, static_cast<acc_t>(at[w - 1]), a_left);
        const acc_t s_right = smooth(b_right, static_cast<acc_t>(at[w + 1]), a_right);
        x_part[w] = diff(s_left, s_right);
        y_part[w] = smooth(s_left, smooth(b_at, static_cast<acc_t>(at[w]), a_at), s_right);
        z_part[w] = smooth(diff(b_left, a_left), diff(b_at, a_at), diff(b_right, a_right));
      }
    } else {
#pragma GCC ivdep
      for (int64_t w = 1; w < cols - 1; ++w) {
        const acc_t left = static_cast<acc_t>(at[w - 1]), right = static_cast<acc_t>(at[w + 1]);
        x_part[w] = diff(left, right);
        y_part[w] = smooth(left, static_cast<acc_t>(at[w]), right);
      }
    }
    if (cols > 1) column(cols - 1, cols - 2, cols - 1);
  }

  EdgeGeometry g_;
  int64_t stride_;
  std::vector<acc_t> storage_;
};

// The H step of output row `parts` at column w: the components gx, gy, gz (gz = 0 in 2D).
template <typename acc_t, int kDims>
inline void sobel_components(const SobelParts<acc_t>& parts, int64_t w, acc_t& gx, acc_t& gy, acc_t& gz) {
  gx = smooth(parts.x[0][w], parts.x[1][w], parts.x[2][w]);
  gy = diff(parts.y[0][w], parts.y[2][w]);
  gz = kDims == 3 ? smooth(parts.z[0][w], parts.z[1][w], parts.z[2][w]) : acc_t(0);
}

// Runs chunk(begin, end) over ranges of the blocks of kBlockRows rows of every plane, split over
// all threads; block(i, body) runs body(image, plane, h0, h1) for block i.
struct RowBlocks {
  const EdgeGeometry& g;
  int64_t per_plane = (g.rows + kBlockRows - 1) / kBlockRows;

  template <typename Chunk>
  void parallel(const Chunk& chunk) const {
    at::parallel_for(0, g.images * g.depth * per_plane, 1, chunk);
  }
  template <typename Body>
  void block(int64_t i, const Body& body) const {
    const int64_t plane = i / per_plane, h0 = (i % per_plane) * kBlockRows;
    body(plane / g.depth, plane % g.depth, h0, std::min(h0 + kBlockRows, g.rows));
  }
};

// Runs body(image, plane, h0, h1, rows) over the row blocks; `rows` is the calling thread's
// SobelRows.
template <typename scalar_t, typename acc_t, int kDims, typename Body>
void for_each_row_block(const EdgeGeometry& g, const Body& body) {
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
