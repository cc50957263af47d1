// Per-voxel math of the Canny edge detector (kernel 3), 2D and 3D.
//
// Steps: Gaussian smoothing (separable, replicate border, truncated at 4 sigma as
// scipy.ndimage.gaussian_filter does), Sobel gradient (dal/sobel.h), non-maximum suppression
// along the gradient direction with interpolation, double threshold, hysteresis.
//
// Non-maximum suppression: a voxel is kept when its magnitude m is >= the magnitude interpolated
// at p + u and at p - u, u = g / max_k |g_k| (the point where the gradient line leaves the voxel's
// unit cube). u has +-1 along the major axis, so the interpolation is linear on an edge of the
// 3x3 neighbourhood in 2D (exactly scikit-image's canny) and bilinear on a face of the 3x3x3
// neighbourhood in 3D. Voxels on the border of the image are never edges (as in scikit-image).
#pragma once

#include "dal/common.h"

namespace dal {
namespace canny {

// Labels of the double threshold; hysteresis turns connected weak voxels into edges.
// kReached marks, during hysteresis, the voxels already known to be edges.
enum Label : uint8_t { kNone = 0, kWeak = 1, kEdge = 2, kReached = 3 };

// Radius of the truncated Gaussian: scipy's int(truncate * sigma + 0.5) with truncate = 4.
DAL_HOST_DEVICE inline int gaussian_radius(double sigma) { return static_cast<int>(4.0 * sigma + 0.5); }

// The radius + 1 taps of the normalised Gaussian from the centre outwards, taps[j] for offsets
// +-j, in double (scipy's _gaussian_kernel1d). A smoothed value is accumulated as scipy does:
// taps[0] * x[0], then taps[j] * (x[-j] + x[j]) from the outermost pair inwards
// (gaussian_step), which keeps mirror-symmetric images exactly symmetric.
DAL_HOST_DEVICE inline void gaussian_taps(double sigma, int radius, double* taps) {
  double sum = 0;
  for (int j = 0; j <= radius; ++j) {
    taps[j] = radius == 0 ? 1.0 : ::exp(-0.5 / (sigma * sigma) * (j * j));
    sum += j == 0 ? taps[j] : 2 * taps[j];
  }
  for (int j = 0; j <= radius; ++j) taps[j] /= sum;
}

template <typename Acc>
DAL_HOST_DEVICE inline Acc gaussian_step(Acc sum, Acc tap, Acc before, Acc after) {
  return sum + (before + after) * tap;
}

template <typename Acc>
DAL_HOST_DEVICE inline Acc abs_(Acc v) {
  return v < Acc(0) ? -v : v;
}

// Linear interpolation written as scikit-image writes it: `to * w + from * (1 - w)`.
template <typename Acc>
DAL_HOST_DEVICE inline Acc lerp(Acc from, Acc to, Acc w) {
  return to * w + from * (Acc(1) - w);
}

// Where the gradient line p + t g leaves the voxel's unit cube (t = 1 / max_k |g_k|): the four
// neighbours, on the + side, of the face (2D: edge) it crosses, as (dw, dh, dd) offsets, and the
// interpolation weights along the two minor axes. The - side is the mirror image. g = (gx, gy, gz),
// gz = 0 in 2D, where w2 = 0 and only near and near_diagonal are used.
template <typename Acc>
struct Crossing {
  int near[3], near_diagonal[3], far[3], far_diagonal[3];
  Acc w1, w2;
};

template <typename Acc>
DAL_HOST_DEVICE inline Crossing<Acc> crossing_of(const Acc g[3]) {
  const Acc a[3] = {abs_(g[0]), abs_(g[1]), abs_(g[2])};
  int major = a[1] > a[0] ? 1 : 0;  // ties: the first axis (either gives the same point)
  major = a[2] > a[major] ? 2 : major;
  const int minor1 = major == 0 ? 1 : 0, minor2 = major == 2 ? 1 : 2;
  Crossing<Acc> c;
  for (int k = 0; k < 3; ++k) {
    const int step = g[k] < Acc(0) ? -1 : 1;
    c.near[k] = k == major ? step : 0;
    c.near_diagonal[k] = k == major || k == minor1 ? step : 0;
    c.far[k] = k == major || k == minor2 ? step : 0;
    c.far_diagonal[k] = step;
  }
  c.w1 = a[minor1] / a[major];
  c.w2 = a[minor2] / a[major];
  return c;
}

// Magnitude interpolated where the gradient line leaves the cube on the side `sign` (+1 or -1);
// mag_at(dw, dh, dd) returns the magnitude at that offset from p.
template <typename Acc, typename MagAt>
DAL_HOST_DEVICE inline Acc magnitude_at_crossing(const Crossing<Acc>& c, int sign, const MagAt& mag_at) {
  auto at = [&](const int o[3]) { return mag_at(sign * o[0], sign * o[1], sign * o[2]); };
  const Acc near = lerp(at(c.near), at(c.near_diagonal), c.w1);
  if (c.w2 == Acc(0)) return near;  // 2D, or a gradient in a plane of the grid
  return lerp(near, lerp(at(c.far), at(c.far_diagonal), c.w1), c.w2);
}

// Non-maximum suppression and double threshold of one interior voxel of magnitude m.
template <typename Acc, typename MagAt>
DAL_HOST_DEVICE inline Label classify(const Acc g[3], Acc m, Acc low, Acc high, const MagAt& mag_at) {
  if (!(m > Acc(0) && m >= low)) return kNone;
  const Crossing<Acc> c = crossing_of(g);
  if (!(magnitude_at_crossing(c, 1, mag_at) <= m && magnitude_at_crossing(c, -1, mag_at) <= m)) return kNone;
  return m >= high ? kEdge : kWeak;
}

// Hysteresis: a candidate (weak, or strong and not yet reached) becomes an edge (kReached) when
// one of its neighbours is reached: 8 neighbours in 2D, 26 in 3D. Kernels repeat the rule to
// convergence, from the strong voxels.
DAL_HOST_DEVICE inline bool is_candidate(uint8_t label) { return label == kWeak || label == kEdge; }

// Calls visit(dd, dh, dw) for each neighbour offset of hysteresis until one returns true, and
// says whether one did.
template <typename Visit>
DAL_HOST_DEVICE inline bool any_neighbour(int spatial_dims, const Visit& visit) {
  const int reach_d = spatial_dims == 3 ? 1 : 0;
  for (int dd = -reach_d; dd <= reach_d; ++dd)
    for (int dh = -1; dh <= 1; ++dh)
      for (int dw = -1; dw <= 1; ++dw)
        if ((dd || dh || dw) && visit(dd, dh, dw)) return true;
  return false;
}

// The lowest label of an output edge: reached with hysteresis, else weak or strong.
DAL_HOST_DEVICE inline uint8_t lowest_edge_label(bool hysteresis) { return hysteresis ? kReached : kWeak; }

// numpy.percentile's "linear" quantile q in [0, 1] of n sorted values, given the order statistics
// at floor(q * (n - 1)) and the next one (numpy's lerp, exact at both ends).
DAL_HOST_DEVICE inline double quantile_position(double q, int64_t n) { return q * static_cast<double>(n - 1); }

template <typename Acc>
DAL_HOST_DEVICE inline Acc quantile_from(Acc below, Acc above, double position) {
  const Acc t = static_cast<Acc>(position - ::floor(position));
  const Acc d = above - below;
  return t >= Acc(0.5) ? above - d * (Acc(1) - t) : below + d * t;
}

}  // namespace canny
}  // namespace dal
