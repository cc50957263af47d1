// Device helpers shared by the CUDA kernels of the edge ops: a voxel's coordinates, and its Sobel
// gradient from its 3x3(x3) neighbourhood (clamped: replicate border) through dal/sobel.h.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>

#include "../edges.h"
#include "dal/sobel.h"

namespace dal {
namespace cuda {

constexpr int kThreads = 256;

// Blocks of kThreads for a grid-stride loop over n items: enough to fill the device, no more.
inline int blocks_for(int64_t n) {
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  const int64_t cap = int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

__device__ inline int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// (image, d, h, w) of a flat voxel index.
struct Voxel {
  int64_t b, d, h, w;
};

__device__ inline Voxel voxel_of(int64_t p, const EdgeGeometry& g) {
  return {p / g.voxels(), (p / (g.rows * g.cols)) % g.depth, (p / g.cols) % g.rows, p % g.cols};
}

template <typename acc_t, typename scalar_t>
__device__ inline void gradient_at(const scalar_t* x, const EdgeGeometry& g, const Voxel& v, acc_t out[3]) {
  const scalar_t* image = x + v.b * g.voxels();
  if (g.spatial_dims == 3) {
    acc_t n[3][3][3];
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b)
        for (int c = 0; c < 3; ++c)
          n[a][b][c] = static_cast<acc_t>(
              image[(clamp_index(v.d + a - 1, g.depth) * g.rows + clamp_index(v.h + b - 1, g.rows)) * g.cols +
                    clamp_index(v.w + c - 1, g.cols)]);
    sobel::gradient_3d(n, out);
  } else {
    acc_t n[3][3];
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 3; ++c)
        n[b][c] = static_cast<acc_t>(image[clamp_index(v.h + b - 1, g.rows) * g.cols + clamp_index(v.w + c - 1, g.cols)]);
    sobel::gradient_2d(n, out);
    out[2] = acc_t(0);
  }
}

}  // namespace cuda
}  // namespace dal
