// CUDA kernels of the scoring ops: median_filter, residual_score, binary_erode, binary_dilate.
//
// One thread per output voxel runs the merge networks of dal/median.h on its own window (column
// sorts, plane merges, pair merges, the trimmed quad, the pruned window merge): the same steps,
// in the same order, as the CPU kernel shares between neighbours. The networks' steps are the
// same for every thread, so a warp never diverges; they live in global memory, uploaded once per
// device and window, and are read by all threads at once. Each thread's wires are sized by its
// window (a template argument), not by the largest one.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "../scoring.h"
#include "dal/median.h"

namespace dal {
namespace {

constexpr int kThreads = 128;

// A network as the kernel reads it: ops and outputs in one device buffer.
struct DeviceNetwork {
  const median::Op* ops;
  int32_t count;
  const int32_t* outputs;
};

// The networks of a plan copied to the device in one int32 tensor.
struct DevicePlan {
  at::Tensor storage;
  DeviceNetwork column, plane, pair, quad, window;
  int32_t pairs, quad_length;
};

DevicePlan upload(const median::Plan& plan, const at::Device& device) {
  std::vector<int32_t> flat;
  std::vector<std::pair<int64_t, int64_t>> offsets;  // (ops, outputs) start of each network
  for (const median::Network* net : {&plan.column, &plan.plane, &plan.pair, &plan.quad, &plan.window}) {
    const int64_t ops_at = static_cast<int64_t>(flat.size());
    for (const median::Op& op : net->ops) flat.insert(flat.end(), {op.kind, op.lo, op.hi});
    const int64_t outputs_at = static_cast<int64_t>(flat.size());
    flat.insert(flat.end(), net->outputs.begin(), net->outputs.end());
    offsets.emplace_back(ops_at, outputs_at);
  }
  DevicePlan d;
  d.storage = at::tensor(flat, at::TensorOptions().dtype(at::kInt)).to(device);
  const int32_t* base = d.storage.const_data_ptr<int32_t>();
  const median::Network* nets[5] = {&plan.column, &plan.plane, &plan.pair, &plan.quad, &plan.window};
  DeviceNetwork* outs[5] = {&d.column, &d.plane, &d.pair, &d.quad, &d.window};
  for (int i = 0; i < 5; ++i) {
    *outs[i] = {reinterpret_cast<const median::Op*>(base + offsets[i].first),
                static_cast<int32_t>(nets[i]->ops.size()), base + offsets[i].second};
  }
  d.pairs = plan.pairs();
  d.quad_length = plan.quad_length;
  return d;
}

// The plan of a window depends on the window alone: it is made and uploaded once per device and
// window, and kept for the life of the process.
const DevicePlan& device_plan(int32_t kz, int32_t k, const at::Device& device) {
  static std::mutex mutex;
  // Never destroyed: the tensors must not be freed after CUDA has shut down at exit.
  static auto* plans = new std::map<std::tuple<c10::DeviceIndex, int32_t, int32_t>, DevicePlan>();
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(device.index(), kz, k);
  auto it = plans->find(key);
  if (it == plans->end()) it = plans->emplace(key, upload(median::make_plan(kz, k, k), device)).first;
  return it->second;
}

template <typename scalar_t>
struct PlainLoad {
  const scalar_t* x;
  __device__ at::opmath_type<scalar_t> operator()(int64_t i) const { return static_cast<at::opmath_type<scalar_t>>(x[i]); }
};

// The masked residual, once per voxel, in the compute precision (the median reads each voxel
// k^3 times).
template <typename scalar_t>
__global__ void masked_residual_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ phi,
                                       const uint8_t* __restrict__ inside, at::opmath_type<scalar_t>* __restrict__ out,
                                       int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = median::masked_residual(static_cast<acc_t>(x[i]), static_cast<acc_t>(phi[i]),
                                     inside == nullptr || inside[i] != 0);
  }
}

// kK x kK x kKz windows (kKz = 1 in 2D): the per-thread wires are sized by the window.
template <typename scalar_t, typename Load, int32_t kK, int32_t kKz>
__global__ void median_kernel(Load load, scalar_t* __restrict__ out, VolumeLayout l, int32_t pairs,
                              int32_t quad_length, DeviceNetwork column, DeviceNetwork plane, DeviceNetwork pair,
                              DeviceNetwork quad, DeviceNetwork window) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int32_t k = kK, kz = kKz, r = k / 2, rz = kz / 2, plane_length = kz * k;
  const int64_t total = l.batch * l.voxels();
  acc_t wires[k * plane_length];
  acc_t sorted[4 * plane_length];
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < total; v += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = v % l.width, h = (v / l.width) % l.height, d = (v / (l.width * l.height)) % l.depth;
    const int64_t volume = (v / l.voxels()) * l.voxels();
    for (int32_t x = 0; x < k; ++x) {
      acc_t* list = wires + x * plane_length;
      const int64_t wx = median::clamp_index(w + x - r, l.width);
      for (int32_t y = 0; y < k; ++y) {
        const int64_t hy = median::clamp_index(h + y - r, l.height);
        acc_t* col = list + y * kz;
        for (int32_t z = 0; z < kz; ++z) {
          const int64_t dz = median::clamp_index(d + z - rz, l.depth);
          col[z] = load(volume + (dz * l.height + hy) * l.width + wx);
        }
        median::run(column.ops, column.count, col);
        for (int32_t z = 0; z < kz; ++z) sorted[z] = col[column.outputs[z]];
        for (int32_t z = 0; z < kz; ++z) col[z] = sorted[z];
      }
      median::run(plane.ops, plane.count, list);
      for (int32_t j = 0; j < plane_length; ++j) sorted[j] = list[plane.outputs[j]];
      for (int32_t j = 0; j < plane_length; ++j) list[j] = sorted[j];
    }
    for (int32_t i = 0; i < pairs; ++i) {  // plane lists 2i and 2i + 1 -> pair i, in place
      acc_t* list = wires + 2 * i * plane_length;
      median::run(pair.ops, pair.count, list);
      for (int32_t j = 0; j < 2 * plane_length; ++j) sorted[j] = list[pair.outputs[j]];
      for (int32_t j = 0; j < 2 * plane_length; ++j) list[j] = sorted[j];
    }
    acc_t* window_wires = wires;
    if constexpr (k >= 5) {  // a quad needs two pairs (dal/median.h Plan::has_quad)
      if (quad_length > 0) {  // pairs 0 and 1 -> the trimmed quad, moved just before the other lists
        median::run(quad.ops, quad.count, wires);
        for (int32_t j = 0; j < quad_length; ++j) sorted[j] = wires[quad.outputs[j]];
        window_wires = wires + 4 * plane_length - quad_length;
        for (int32_t j = 0; j < quad_length; ++j) window_wires[j] = sorted[j];
      }
    }
    median::run(window.ops, window.count, window_wires);
    out[v] = static_cast<scalar_t>(window_wires[window.outputs[0]]);
  }
}

int blocks_for(int64_t items) {
  const int64_t wanted = (items + kThreads - 1) / kThreads;
  const int64_t cap = int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

template <typename scalar_t, int32_t kK, int32_t kKz, typename Load>
void launch_window(const Load& load, at::Tensor& out, const VolumeLayout& l) {
  const DevicePlan& plan = device_plan(kKz, kK, out.device());
  median_kernel<scalar_t, Load, kK, kKz><<<blocks_for(out.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      load, out.mutable_data_ptr<scalar_t>(), l, plan.pairs, plan.quad_length, plan.column, plan.plane, plan.pair,
      plan.quad, plan.window);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename Load>
void launch_median(const Load& load, at::Tensor& out, const VolumeLayout& l, int64_t kernel_size) {
  static_assert(median::kMaxKernel == 7, "launch_median instantiates the windows up to 7");
  const bool is_3d = l.dims == 3;
  switch (kernel_size) {  // check_kernel_size: odd, 1 to median::kMaxKernel
    case 1: return launch_window<scalar_t, 1, 1>(load, out, l);
    case 3: return is_3d ? launch_window<scalar_t, 3, 3>(load, out, l) : launch_window<scalar_t, 3, 1>(load, out, l);
    case 5: return is_3d ? launch_window<scalar_t, 5, 5>(load, out, l) : launch_window<scalar_t, 5, 1>(load, out, l);
    default: return is_3d ? launch_window<scalar_t, 7, 7>(load, out, l) : launch_window<scalar_t, 7, 1>(load, out, l);
  }
}

at::Tensor median_filter_cuda(const at::Tensor& x_in, int64_t kernel_size) {
  const VolumeLayout l = check_median_args(x_in, kernel_size);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "median_filter_cuda", [&] {
    launch_median<scalar_t>(PlainLoad<scalar_t>{x.const_data_ptr<scalar_t>()}, out, l, kernel_size);
  });
  return out;
}

// One axis of a box minimum (erode) or maximum (dilate) of a 0/1 byte volume, replicate border.
__global__ void box_extreme_kernel(const uint8_t* __restrict__ in, uint8_t* __restrict__ out, int64_t total,
                                   int64_t stride, int64_t size, int64_t radius, bool minimum) {
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < total; v += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = (v / stride) % size;
    uint8_t value = minimum ? 1 : 0;
    for (int64_t o = -radius; o <= radius; ++o) {
      const uint8_t n = in[v + (median::clamp_index(i + o, size) - i) * stride];
      value = minimum ? (n < value ? n : value) : (n > value ? n : value);
    }
    out[v] = value;
  }
}

void box_extreme(at::Tensor& volume, const VolumeLayout& l, int64_t radius, bool minimum) {
  if (radius == 0 || volume.numel() == 0) return;
  const int64_t strides[3] = {1, l.width, l.width * l.height};
  const int64_t sizes[3] = {l.width, l.height, l.depth};
  at::Tensor spare;  // a buffer of ours that the next pass may overwrite (never the caller's mask)
  for (int64_t axis = 0; axis < l.dims; ++axis) {
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
  const VolumeLayout l = volume_layout(mask, "mask");
  check_radius(radius, "radius");
  const c10::cuda::CUDAGuard guard(mask.device());
  at::Tensor bytes = mask_bytes(mask);
  box_extreme(bytes, l, radius, erode);
  return bytes.to(at::kBool);
}

at::Tensor binary_erode_cuda(const at::Tensor& mask, int64_t radius) { return binary_morphology(mask, radius, true); }
at::Tensor binary_dilate_cuda(const at::Tensor& mask, int64_t radius) { return binary_morphology(mask, radius, false); }

at::Tensor residual_score_cuda(const at::Tensor& x_in, const at::Tensor& phi_in,
                               const std::optional<at::Tensor>& mask_in, int64_t kernel_size, int64_t erode) {
  const VolumeLayout l = check_residual_args(x_in, phi_in, mask_in, kernel_size, erode);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), phi = phi_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  at::Tensor inside;
  if (mask_in.has_value()) {
    inside = mask_bytes(*mask_in);
    box_extreme(inside, volume_layout(inside, "mask"), erode, true);
    inside = inside.expand(x.sizes()).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "residual_score_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor residual = at::empty(x.sizes(), x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    masked_residual_kernel<scalar_t><<<blocks_for(x.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), phi.const_data_ptr<scalar_t>(),
        inside.defined() ? inside.const_data_ptr<uint8_t>() : nullptr, residual.mutable_data_ptr<acc_t>(), x.numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    launch_median<scalar_t>(PlainLoad<acc_t>{residual.const_data_ptr<acc_t>()}, out, l, kernel_size);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CUDA, m) {
  m.impl("median_filter", &median_filter_cuda);
  m.impl("residual_score", &residual_score_cuda);
  m.impl("binary_erode", &binary_erode_cuda);
  m.impl("binary_dilate", &binary_dilate_cuda);
}

}  // namespace dal
