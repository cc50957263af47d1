// How the CUDA kernels cover their items: grid-stride loops over blocks of threads, and a voxel's
// coordinates in dal/common.h's Geometry.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>

#include "dal/common.h"

namespace dal {
namespace cuda {

constexpr int kThreads = 256;

// Blocks of `threads` for a grid-stride loop over n items: enough to fill the device, no more.
inline int blocks_for(int64_t n, int threads = kThreads) {
  const int64_t wanted = (n + threads - 1) / threads;
  const int64_t cap = int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

// (image, d, h, w) of a flat voxel index.
struct Voxel {
  int64_t b, d, h, w;
};

__device__ inline Voxel voxel_of(int64_t p, const Geometry& g) {
  return {p / g.voxels(), (p / (g.rows * g.cols)) % g.depth, (p / g.cols) % g.rows, p % g.cols};
}

}  // namespace cuda
}  // namespace dal
