// Shared definitions for the framework-free per-voxel math of dal's kernels.
// Everything here compiles as plain C++17 and, under nvcc, as host+device code.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DAL_HOST_DEVICE __host__ __device__
#else
#define DAL_HOST_DEVICE
#endif

namespace dal {

// exp in float32 from arithmetic alone (Cephes' range reduction and polynomial, within 2 ulp
// of expf), so that a CPU loop calling it vectorises, which a call to libm's expf does not.
// Underflows to exactly 0 below -87.3 (as expf does near there); NaN gives NaN.
DAL_HOST_DEVICE inline float exp_(float x) {
  const float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  const bool underflow = x < -87.3f;
  x = x > 88.7f ? 88.7f : x;
  x = underflow ? 0.0f : x;
  const float n = ::floorf(x * kLog2e + 0.5f);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return underflow ? 0.0f : p * scale;
}
DAL_HOST_DEVICE inline double exp_(double x) { return ::exp(x); }

DAL_HOST_DEVICE inline bool is_nan(float x) { return x != x; }
DAL_HOST_DEVICE inline bool is_nan(double x) { return x != x; }

// Replicate border ("nearest"): the index i clamped to [0, size).
DAL_HOST_DEVICE inline int64_t clamp_index(int64_t i, int64_t size) {
  return i < 0 ? 0 : (i >= size ? size - 1 : i);
}

// A contiguous (N, C, H, W) or (N, C, D, H, W) tensor as `images` = N * C volumes of
// depth x rows x cols (depth 1 in 2D); spatial_dims is 2 or 3.
struct Geometry {
  int spatial_dims;
  int64_t images, depth, rows, cols;
  DAL_HOST_DEVICE int64_t voxels() const { return depth * rows * cols; }
  DAL_HOST_DEVICE int64_t total() const { return images * voxels(); }
};

}  // namespace dal
