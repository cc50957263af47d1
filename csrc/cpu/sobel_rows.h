// The row steps of the Sobel operator on CPU, shared by the sobel and canny kernels: for one
// output row (image, plane, row), the separable steps of dal/sobel.h along D and H over the 3x3
// input rows around it go into three short buffers (L1-resident), then the step along W writes
// the output row. All inner loops run along W, contiguous, and vectorise.
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

// Three row buffers of W + 2 values each, indices -1 and W kept for the border along W.
template <typename acc_t>
struct RowBuffers {
  std::vector<acc_t> storage;
  int64_t stride = 0;
  void resize(int64_t cols) {
    stride = cols + 2;
    storage.resize(static_cast<size_t>(3 * stride));
  }
  acc_t* row(int k) { return storage.data() + k * stride + 1; }
};

// Smoothing and derivative along H of one plane's three rows.
template <typename scalar_t, typename acc_t>
void steps_along_h(const scalar_t* __restrict__ above, const scalar_t* __restrict__ at,
                   const scalar_t* __restrict__ below, acc_t* __restrict__ smoothed,
                   acc_t* __restrict__ derived, int64_t cols) {
  for (int64_t w = 0; w < cols; ++w) {
    const acc_t a = static_cast<acc_t>(above[w]), b = static_cast<acc_t>(at[w]),
                c = static_cast<acc_t>(below[w]);
    smoothed[w] = smooth(a, b, c);
    derived[w] = diff(a, c);
  }
}

// Steps along D of the H-steps of three planes: the parts of gx, gy, gz still to be done along W.
template <typename acc_t>
void steps_along_d(const acc_t* __restrict__ s0, const acc_t* __restrict__ s1,
                   const acc_t* __restrict__ s2, const acc_t* __restrict__ d0,
                   const acc_t* __restrict__ d1, const acc_t* __restrict__ d2,
                   acc_t* __restrict__ x_part, acc_t* __restrict__ y_part,
                   acc_t* __restrict__ z_part, int64_t cols) {
  for (int64_t w = 0; w < cols; ++w) {
    x_part[w] = smooth(s0[w], s1[w], s2[w]);
    y_part[w] = smooth(d0[w], d1[w], d2[w]);
    z_part[w] = diff(s0[w], s2[w]);
  }
}

template <typename acc_t>
void replicate_ends(acc_t* row, int64_t cols) {
  row[-1] = row[0];
  row[cols] = row[cols - 1];
}

// The step along W and the output: magnitude, or components `component_stride` apart.
template <typename scalar_t, typename acc_t, int kDims, bool kMagnitude>
void steps_along_w(const acc_t* __restrict__ x_part, const acc_t* __restrict__ y_part,
                   const acc_t* __restrict__ z_part, scalar_t* __restrict__ out,
                   int64_t component_stride, acc_t scale, int64_t cols) {
  for (int64_t w = 0; w < cols; ++w) {
    const acc_t gx = diff(x_part[w - 1], x_part[w + 1]);
    const acc_t gy = smooth(y_part[w - 1], y_part[w], y_part[w + 1]);
    const acc_t gz = kDims == 3 ? smooth(z_part[w - 1], z_part[w], z_part[w + 1]) : acc_t(0);
    if (kMagnitude) {
      out[w] = static_cast<scalar_t>(scale * sobel::magnitude(gx, gy, gz));
    } else {
      out[w] = static_cast<scalar_t>(scale * gx);
      out[component_stride + w] = static_cast<scalar_t>(scale * gy);
      if (kDims == 3) out[2 * component_stride + w] = static_cast<scalar_t>(scale * gz);
    }
  }
}

// Runs body(image, plane, row) for every row of every image, split over all threads.
template <typename Body>
void for_each_row_index(const EdgeGeometry& g, const Body& body) {
  const int64_t rows = g.images * g.depth * g.rows;
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(g.cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) body(r / (g.depth * g.rows), (r / g.rows) % g.depth, r % g.rows);
  });
}

// The same, handing the body the calling thread's row buffers.
template <typename acc_t, typename Body>
void for_each_row(const EdgeGeometry& g, const Body& body) {
  for_each_row_index(g, [&](int64_t b, int64_t d, int64_t h) {
    thread_local RowBuffers<acc_t> buffers;
    buffers.resize(g.cols);
    body(b, d, h, buffers);
  });
}

// Computes the unscaled H/D steps of the output row (b, d, h) into buffers 0 (x), 1 (y), 2 (z),
// with their ends replicated, ready for steps_along_w.
template <typename scalar_t, typename acc_t, int kDims>
void h_and_d_steps(const scalar_t* x, const EdgeGeometry& g, int64_t b, int64_t d, int64_t h,
                   RowBuffers<acc_t>& buf, std::vector<acc_t>& plane_steps) {
  const int64_t W = g.cols;
  auto row_ptr = [&](int64_t dz, int64_t hy) {
    return x + ((b * g.depth + clamp_index(dz, g.depth)) * g.rows + clamp_index(hy, g.rows)) * W;
  };
  if (kDims == 2) {
    steps_along_h(row_ptr(0, h - 1), row_ptr(0, h), row_ptr(0, h + 1), buf.row(0), buf.row(1), W);
  } else {
    plane_steps.resize(static_cast<size_t>(6 * W));
    acc_t* s = plane_steps.data();
    acc_t* dv = s + 3 * W;
    for (int k = 0; k < 3; ++k) {
      steps_along_h(row_ptr(d + k - 1, h - 1), row_ptr(d + k - 1, h), row_ptr(d + k - 1, h + 1),
                    s + k * W, dv + k * W, W);
    }
    steps_along_d(s, s + W, s + 2 * W, dv, dv + W, dv + 2 * W, buf.row(0), buf.row(1), buf.row(2), W);
    replicate_ends(buf.row(2), W);
  }
  replicate_ends(buf.row(0), W);
  replicate_ends(buf.row(1), W);
}

}  // namespace cpu
}  // namespace dal
