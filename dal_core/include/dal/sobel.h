// Per-voxel math of the Sobel operator (kernel 2), 2D and 3D, replicate border.
//
// The Sobel derivative along one axis is the central difference [-1, 0, 1] along that axis times
// the smoothing [1, 2, 1] along every other axis (scipy.ndimage.sobel's kernel). Components are
// ordered as kornia orders them: 0 = along W (x), 1 = along H (y), 2 = along D (z).
// `normalized` divides by the kernel's absolute sum (8 in 2D, 32 in 3D), as kornia does.
//
// The forward is separable; CPU loops apply the 1D steps (d_steps, w_step, h_step) row by row,
// the CUDA kernels gather a voxel's 3x3(x3) neighbourhood and call gradient_2d / gradient_3d,
// which are the same steps in the same order. The AVX-512 kernel (dal/sobel_avx512.h) writes
// them in intrinsics; its test holds it to these bit for bit.
//
// The backward is the adjoint of that linear map. Along one axis of length n, the replicate
// border folds the taps that fall outside onto the end voxels, so the transposed 1D operator
// has position-dependent taps (adjoint_taps). The magnitude's gradient is g / |g| where |g| > 0,
// and 0 where the gradient is 0 (the subgradient of smallest norm).
#pragma once

#include "dal/common.h"

namespace dal {
namespace sobel {

// Summed as scipy.ndimage sums a symmetric kernel: the centre, then the pair around it. The pair
// sum is the same for a mirrored image, so mirror-symmetric images give exactly mirror-symmetric
// gradients, and their ties (which Canny's `<=` keeps) are exact ties, as in scikit-image.
template <typename Acc>
DAL_HOST_DEVICE inline Acc smooth(Acc before, Acc at, Acc after) {
  return Acc(2) * at + (before + after);
}

template <typename Acc>
DAL_HOST_DEVICE inline Acc diff(Acc before, Acc after) {
  return after - before;
}

// 1 / sum|kernel| when normalized, else 1.
template <typename Acc>
DAL_HOST_DEVICE inline Acc scale(int spatial_dims, bool normalized) {
  return normalized ? Acc(1) / (spatial_dims == 3 ? Acc(32) : Acc(8)) : Acc(1);
}

// The gradient is three 1D steps, along D, then W, then H: the order of the CPU row sweep, which
// steps each input row along D and W once and finishes each output row along H. Every kernel
// takes them in this order, so that all round alike.

// The D step of one column (before, at, after along D): smoothed and differentiated.
template <typename Acc>
struct DSteps {
  Acc smoothed, derived;
};

template <typename Acc>
DAL_HOST_DEVICE inline DSteps<Acc> d_steps(Acc before, Acc at, Acc after) {
  return {smooth(before, at, after), diff(before, after)};
}

// In 2D, where there is no D: the value itself, and no derivative.
template <typename Acc>
DAL_HOST_DEVICE inline DSteps<Acc> d_steps_2d(Acc at) {
  return {at, Acc(0)};
}

// The W step of one input position, from the D steps at w - 1, w, w + 1: the parts that the H
// step finishes into gx (x), gy (y) and gz (z; 0 in 2D).
template <typename Acc>
struct Parts {
  Acc x, y, z;
};

template <typename Acc>
DAL_HOST_DEVICE inline Parts<Acc> w_step(const DSteps<Acc>& left, const DSteps<Acc>& at, const DSteps<Acc>& right) {
  return {diff(left.smoothed, right.smoothed), smooth(left.smoothed, at.smoothed, right.smoothed),
          smooth(left.derived, at.derived, right.derived)};
}

// The H step: the components (gx, gy, gz) from the parts of rows h - 1, h, h + 1.
template <typename Acc>
DAL_HOST_DEVICE inline void h_step(const Parts<Acc>& above, const Parts<Acc>& at, const Parts<Acc>& below, Acc g[3]) {
  g[0] = smooth(above.x, at.x, below.x);
  g[1] = diff(above.y, below.y);
  g[2] = smooth(above.z, at.z, below.z);
}

// Components (gx, gy, 0) from the 3x3 neighbourhood n[h][w] (index 1 = the pixel).
template <typename Acc>
DAL_HOST_DEVICE inline void gradient_2d(const Acc n[3][3], Acc g[3]) {
  Parts<Acc> parts[3];
  for (int h = 0; h < 3; ++h) parts[h] = w_step(d_steps_2d(n[h][0]), d_steps_2d(n[h][1]), d_steps_2d(n[h][2]));
  h_step(parts[0], parts[1], parts[2], g);
}

// Components (gx, gy, gz) from the 3x3x3 neighbourhood n[d][h][w].
template <typename Acc>
DAL_HOST_DEVICE inline void gradient_3d(const Acc n[3][3][3], Acc g[3]) {
  Parts<Acc> parts[3];
  for (int h = 0; h < 3; ++h) {
    DSteps<Acc> d[3];
    for (int w = 0; w < 3; ++w) d[w] = d_steps(n[0][h][w], n[1][h][w], n[2][h][w]);
    parts[h] = w_step(d[0], d[1], d[2]);
  }
  h_step(parts[0], parts[1], parts[2], g);
}

DAL_HOST_DEVICE inline float sqrt_(float v) { return ::sqrtf(v); }
DAL_HOST_DEVICE inline double sqrt_(double v) { return ::sqrt(v); }

template <typename Acc>
DAL_HOST_DEVICE inline Acc magnitude(Acc gx, Acc gy, Acc gz = Acc(0)) {
  return sqrt_(gx * gx + gy * gy + gz * gz);
}

// d|g|/dg_k times the incoming gradient; 0 where |g| = 0.
template <typename Acc>
DAL_HOST_DEVICE inline Acc magnitude_vjp(Acc grad, Acc component, Acc mag) {
  return mag > Acc(0) ? grad * component / mag : Acc(0);
}

// Taps of the transposed 1D operator at index j of an axis of length n: the gradient at j is
// taps[0] * w[j-1] + taps[1] * w[j] + taps[2] * w[j+1] (a tap whose neighbour lies outside the
// axis is 0). The forward kernel is k = (-1, 0, 1) for the derivative, (1, 2, 1) for smoothing.
template <typename Acc>
DAL_HOST_DEVICE inline void adjoint_taps(bool derivative, int64_t j, int64_t n, Acc taps[3]) {
  const Acc k_before = derivative ? Acc(-1) : Acc(1);
  const Acc k_at = derivative ? Acc(0) : Acc(2);
  const Acc k_after = Acc(1);
  taps[0] = j > 0 ? k_after : Acc(0);
  taps[1] = k_at + (j == 0 ? k_before : Acc(0)) + (j == n - 1 ? k_after : Acc(0));
  taps[2] = j < n - 1 ? k_before : Acc(0);
}

// The adjoint's taps along D and H at output row (d, h). In 2D the plane counts once, at D
// offset 0: smoothing tap 1, derivative tap 0.
template <typename Acc>
struct RowTaps {
  Acc smooth_d[3], diff_d[3], smooth_h[3], diff_h[3];
};

template <typename Acc>
DAL_HOST_DEVICE inline RowTaps<Acc> row_taps(bool is_3d, int64_t d, int64_t depth, int64_t h, int64_t rows) {
  RowTaps<Acc> t = {{Acc(0), Acc(1), Acc(0)}, {Acc(0), Acc(0), Acc(0)}, {}, {}};
  if (is_3d) {
    adjoint_taps(false, d, depth, t.smooth_d);
    adjoint_taps(true, d, depth, t.diff_d);
  }
  adjoint_taps(false, h, rows, t.smooth_h);
  adjoint_taps(true, h, rows, t.diff_h);
  return t;
}

// The factors of the weight rows of gx, gy and gz at offsets (a - 1, b - 1) along (D, H) from
// the output row; the W taps follow: the derivative's for gx, the smoothing's for gy and gz.
template <typename Acc>
DAL_HOST_DEVICE inline void row_factors(const RowTaps<Acc>& t, int a, int b, Acc f[3]) {
  f[0] = t.smooth_d[a] * t.smooth_h[b];
  f[1] = t.smooth_d[a] * t.diff_h[b];
  f[2] = t.diff_d[a] * t.smooth_h[b];
}

}  // namespace sobel
}  // namespace dal
