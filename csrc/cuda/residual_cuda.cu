// CUDA kernel of dal::residual_score: |x - phi| in the eroded mask (dal/residual.h,
// morphology_cuda.cuh), once per voxel, then its median (median_cuda.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "../common.h"
#include "cuda_helpers.cuh"
#include "dal/residual.h"
#include "median_cuda.cuh"
#include "morphology_cuda.cuh"

namespace dal {
namespace {

using namespace cuda;

// The masked residual, once per voxel, in the compute precision (the median reads each voxel
// k^3 times).
template <typename scalar_t>
__global__ void masked_residual_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ phi,
                                       const uint8_t* __restrict__ inside, at::opmath_type<scalar_t>* __restrict__ out,
                                       int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = residual::masked_residual(static_cast<acc_t>(x[i]), static_cast<acc_t>(phi[i]),
                                       inside == nullptr || inside[i] != 0);
  }
}

at::Tensor residual_score_cuda(const at::Tensor& x_in, const at::Tensor& phi_in,
                               const std::optional<at::Tensor>& mask_in, int64_t kernel_size, int64_t erode) {
  check_residual_args(x_in, phi_in, mask_in, kernel_size, erode);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), phi = phi_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  const at::Tensor inside = eroded_mask_bytes(mask_in, erode, x.sizes(), erode_cuda);
  at::Tensor residual;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "residual_score_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    residual = at::empty(x.sizes(), x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    masked_residual_kernel<scalar_t><<<blocks_for(x.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), phi.const_data_ptr<scalar_t>(),
        inside.defined() ? inside.const_data_ptr<uint8_t>() : nullptr, residual.mutable_data_ptr<acc_t>(), x.numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  median_cuda(residual, out, geometry_of(x), kernel_size);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CUDA, m) { m.impl("residual_score", &residual_score_cuda); }

}  // namespace dal
