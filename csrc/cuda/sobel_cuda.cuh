// The Sobel gradient of one voxel on CUDA, shared by sobel_cuda.cu and canny_cuda.cu: its
// 3x3(x3) neighbourhood (clamped: replicate border) through dal/sobel.h.
#pragma once

#include "cuda_helpers.cuh"
#include "dal/sobel.h"

namespace dal {
namespace cuda {

template <typename acc_t, typename scalar_t>
__device__ inline void gradient_at(const scalar_t* x, const Geometry& g, const Voxel& v, acc_t out[3]) {
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
  }
}

}  // namespace cuda
}  // namespace dal
