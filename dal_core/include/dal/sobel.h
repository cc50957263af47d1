// Per-voxel math of the Sobel operator (kernel 2), 2D and 3D, replicate border.
//
// The Sobel derivative along one axis is the central difference [-1, 0, 1] along that axis times
// the smoothing [1, 2, 1] along every other axis (scipy.ndimage.sobel's kernel). Components are
// ordered as kornia orders them: 0 = along W (x), 1 = along H (y), 2 = along D (z).
// `normalized` divides by the kernel's absolute sum (8 in 2D, 32 in 3D), as kornia does.
//
// The forward is separable; CPU loops apply the 1D steps row by row, the CUDA kernels gather a
// voxel's 3x3(x3) neighbourhood and call gradient_2d / gradient_3d, which are the same steps in
// the same order.
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

// The steps run along D, then W, then H, in the order the CPU row sweep takes them
// (csrc/cpu/sobel_rows.h), so that CPU and CUDA round alike.

// Components (gx, gy) from the 3x3 neighbourhood n[h][w] (index 1 = the pixel).
template <typename Acc>
DAL_HOST_DEVICE inline void gradient_2d(const Acc n[3][3], Acc g[2]) {
  Acc x_part[3], y_part[3];  // per row h: d/dw of the row; the row smoothed along w
  for (int h = 0; h < 3; ++h) {
    x_part[h] = diff(n[h][0], n[h][2]);
    y_part[h] = smooth(n[h][0], n[h][1], n[h][2]);
  }
  g[0] = smooth(x_part[0], x_part[1], x_part[2]);
  g[1] = diff(y_part[0], y_part[2]);
}

// Components (gx, gy, gz) from the 3x3x3 neighbourhood n[d][h][w].
template <typename Acc>
DAL_HOST_DEVICE inline void gradient_3d(const Acc n[3][3][3], Acc g[3]) {
  Acc x_part[3], y_part[3], z_part[3];  // per row h, the D and W steps of each component
  for (int h = 0; h < 3; ++h) {
    Acc smooth_d[3], diff_d[3];
    for (int w = 0; w < 3; ++w) {
      smooth_d[w] = smooth(n[0][h][w], n[1][h][w], n[2][h][w]);
      diff_d[w] = diff(n[0][h][w], n[2][h][w]);
    }
    x_part[h] = diff(smooth_d[0], smooth_d[2]);
    y_part[h] = smooth(smooth_d[0], smooth_d[1], smooth_d[2]);
    z_part[h] = smooth(diff_d[0], diff_d[1], diff_d[2]);
  }
  g[0] = smooth(x_part[0], x_part[1], x_part[2]);
  g[1] = diff(y_part[0], y_part[2]);
  g[2] = smooth(z_part[0], z_part[1], z_part[2]);
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

}  // namespace sobel
}  // namespace dal
