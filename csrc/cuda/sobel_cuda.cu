// CUDA kernels of dal::sobel: one thread per voxel, gathering its 3x3(x3) neighbourhood (clamped:
// replicate border) for dal/sobel.h's gradient_2d / gradient_3d; neighbouring threads read
// neighbouring addresses along W. The backward gathers the weights around each voxel with the
// adjoint taps of dal/sobel.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common.h"
#include "sobel_cuda.cuh"

namespace dal {
namespace {

using namespace cuda;

template <typename scalar_t>
__global__ void sobel_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                     Geometry g, bool magnitude, bool normalized) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t scale = sobel::scale<acc_t>(g.spatial_dims, normalized);
  const int64_t volume = g.voxels();
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < g.total(); p += int64_t(gridDim.x) * blockDim.x) {
    const Voxel v = voxel_of(p, g);
    acc_t grad[3];
    gradient_at(x, g, v, grad);
    if (magnitude) {
      out[p] = static_cast<scalar_t>(scale * sobel::magnitude(grad[0], grad[1], grad[2]));
    } else {
      const int64_t base = v.b * g.spatial_dims * volume + p % volume;
      for (int k = 0; k < g.spatial_dims; ++k) out[base + k * volume] = static_cast<scalar_t>(scale * grad[k]);
    }
  }
}

// Backward, step 1 (magnitude only): weights d|g|/dg_k * grad as (images, dims, D, H, W).
template <typename scalar_t>
__global__ void magnitude_weights_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                                         at::opmath_type<scalar_t>* __restrict__ weights, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t volume = g.voxels();
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < g.total(); p += int64_t(gridDim.x) * blockDim.x) {
    const Voxel v = voxel_of(p, g);
    acc_t c[3];
    gradient_at(x, g, v, c);
    const acc_t mag = sobel::magnitude(c[0], c[1], c[2]);
    const acc_t gr = static_cast<acc_t>(grad[p]);
    const int64_t base = v.b * g.spatial_dims * volume + p % volume;
    for (int k = 0; k < g.spatial_dims; ++k) weights[base + k * volume] = sobel::magnitude_vjp(gr, c[k], mag);
  }
}

// Backward, step 2: grad_x = scale * sum_k T_k^T weights_k.
template <typename scalar_t, typename weight_t>
__global__ void sobel_adjoint_kernel(const weight_t* __restrict__ weights, scalar_t* __restrict__ grad_x,
                                     Geometry g, bool normalized) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t scale = sobel::scale<acc_t>(g.spatial_dims, normalized);
  const int64_t volume = g.voxels();
  const bool is_3d = g.spatial_dims == 3;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < g.total(); p += int64_t(gridDim.x) * blockDim.x) {
    const Voxel v = voxel_of(p, g);
    const sobel::RowTaps<acc_t> taps = sobel::row_taps<acc_t>(is_3d, v.d, g.depth, v.h, g.rows);
    acc_t smooth_w[3], diff_w[3];
    sobel::adjoint_taps(false, v.w, g.cols, smooth_w);
    sobel::adjoint_taps(true, v.w, g.cols, diff_w);
    const weight_t* wx = weights + v.b * g.spatial_dims * volume;
    const weight_t* wy = wx + volume;
    const weight_t* wz = wy + volume;
    acc_t sum = 0;
    for (int a = is_3d ? 0 : 1; a < (is_3d ? 3 : 2); ++a) {
      const int64_t dz = clamp_index(v.d + a - 1, g.depth);
      for (int b = 0; b < 3; ++b) {
        const int64_t row = (dz * g.rows + clamp_index(v.h + b - 1, g.rows)) * g.cols;
        acc_t f[3];
        sobel::row_factors(taps, a, b, f);
        for (int c = 0; c < 3; ++c) {
          const int64_t i = row + clamp_index(v.w + c - 1, g.cols);
          sum += f[0] * diff_w[c] * static_cast<acc_t>(wx[i]) + f[1] * smooth_w[c] * static_cast<acc_t>(wy[i]);
          if (is_3d) sum += f[2] * smooth_w[c] * static_cast<acc_t>(wz[i]);
        }
      }
    }
    grad_x[p] = static_cast<scalar_t>(scale * sum);
  }
}

at::Tensor sobel_cuda(const at::Tensor& x_in, bool magnitude, bool normalized) {
  check_edge_input(x_in, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty(sobel_output_shape(x, magnitude), x.options());
  if (x.numel() == 0) return out;
  const Geometry g = geometry_of(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sobel_cuda", [&] {
    sobel_forward_kernel<scalar_t><<<blocks_for(g.total()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g, magnitude, normalized);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor sobel_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in, bool magnitude, bool normalized) {
  check_sobel_backward_args(grad_in, x_in, magnitude);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor grad_x = at::empty_like(x);
  if (x.numel() == 0) return grad_x;
  const Geometry g = geometry_of(x);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sobel_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (magnitude) {
      at::Tensor weights = at::empty({g.images * g.spatial_dims * g.voxels()},
                                     x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      magnitude_weights_kernel<scalar_t><<<blocks_for(g.total()), kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), weights.mutable_data_ptr<acc_t>(), g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      sobel_adjoint_kernel<scalar_t, acc_t><<<blocks_for(g.total()), kThreads, 0, stream>>>(
          weights.const_data_ptr<acc_t>(), grad_x.mutable_data_ptr<scalar_t>(), g, normalized);
    } else {
      sobel_adjoint_kernel<scalar_t, scalar_t><<<blocks_for(g.total()), kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(), g, normalized);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CUDA, m) {
  m.impl("sobel", &sobel_cuda);
  m.impl("sobel_backward", &sobel_backward_cuda);
}

}  // namespace dal
