// CUDA kernels of dal::binary_erode and dal::binary_dilate, and the erosion of residual_score's
// mask (morphology_cuda.cuh): one pass per axis of dal/morphology.h's extreme, one thread per
// voxel.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common.h"
#include "cuda_helpers.cuh"
#include "dal/morphology.h"
#include "morphology_cuda.cuh"

namespace dal {
namespace {

using namespace cuda;

// One axis of a box minimum (erode) or maximum (dilate) of a 0/1 byte volume, replicate border.
__global__ void box_extreme_kernel(const uint8_t* __restrict__ in, uint8_t* __restrict__ out, int64_t total,
                                   int64_t stride, int64_t size, int64_t radius, bool minimum) {
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < total; v += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = (v / stride) % size;
    out[v] = minimum ? morphology::extreme_along<true>(in + v, i, size, stride, radius)
                     : morphology::extreme_along<false>(in + v, i, size, stride, radius);
  }
}

void box_extreme(at::Tensor& volume, const Geometry& g, int64_t radius, bool minimum) {
  if (radius == 0 || volume.numel() == 0) return;
  const int64_t strides[3] = {1, g.cols, g.cols * g.rows};
  const int64_t sizes[3] = {g.cols, g.rows, g.depth};
  at::Tensor spare;  // a buffer of ours that the next pass may overwrite (never the caller's mask)
  for (int64_t axis = 0; axis < g.spatial_dims; ++axis) {
    at::Tensor result = spare.defined() ? spare : at::empty_like(volume);
    box_extreme_kernel<<<blocks_for(volume.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        volume.const_data_ptr<uint8_t>(), result.mutable_data_ptr<uint8_t>(), volume.numel(), strides[axis],
        sizes[axis], radius, minimum);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    spare = axis == 0 ? at::Tensor() : volume;
    volume = result;
  }
}

at::Tensor binary_morphology(const at::Tensor& mask, int64_t radius, bool erode) {
  check_morphology_args(mask, radius);
  const c10::cuda::CUDAGuard guard(mask.device());
  at::Tensor bytes = mask_bytes(mask);
  box_extreme(bytes, geometry_of(bytes), radius, erode);
  return bytes.to(at::kBool);
}

at::Tensor binary_erode_cuda(const at::Tensor& mask, int64_t radius) { return binary_morphology(mask, radius, true); }
at::Tensor binary_dilate_cuda(const at::Tensor& mask, int64_t radius) { return binary_morphology(mask, radius, false); }

}  // namespace

void erode_cuda(at::Tensor& bytes, const Geometry& g, int64_t radius) { box_extreme(bytes, g, radius, true); }

TORCH_LIBRARY_IMPL(dal, CUDA, m) {
  m.impl("binary_erode", &binary_erode_cuda);
  m.impl("binary_dilate", &binary_dilate_cuda);
}

}  // namespace dal
