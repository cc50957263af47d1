// CUDA kernel of dal::median_filter, and the median that residual_score filters with
// (median_cuda.cuh).
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

#include "../common.h"
#include "cuda_helpers.cuh"
#include "dal/median.h"
#include "median_cuda.cuh"

namespace dal {
namespace {

using namespace cuda;

// Fewer threads per block than the other kernels: each holds a whole window's wires.
constexpr int kMedianThreads = 128;

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

// Reads element i of a contiguous tensor in the compute precision.
template <typename scalar_t>
struct PlainLoad {
  const scalar_t* x;
  __device__ at::opmath_type<scalar_t> operator()(int64_t i) const { return static_cast<at::opmath_type<scalar_t>>(x[i]); }
};

// kK x kK x kKz windows (kKz = 1 in 2D): the per-thread wires are sized by the window.
template <typename scalar_t, typename Load, int32_t kK, int32_t kKz>
__global__ void median_kernel(Load load, scalar_t* __restrict__ out, Geometry g, int32_t pairs,
                              int32_t quad_length, DeviceNetwork column, DeviceNetwork plane, DeviceNetwork pair,
                              DeviceNetwork quad, DeviceNetwork window) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int32_t k = kK, kz = kKz, r = k / 2, rz = kz / 2, plane_length = kz * k;
  const int64_t total = g.total();
  acc_t wires[k * plane_length];
  acc_t sorted[4 * plane_length];
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < total; v += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = v % g.cols, h = (v / g.cols) % g.rows, d = (v / (g.cols * g.rows)) % g.depth;
    const int64_t volume = (v / g.voxels()) * g.voxels();
    for (int32_t x = 0; x < k; ++x) {
      acc_t* list = wires + x * plane_length;
      const int64_t wx = clamp_index(w + x - r, g.cols);
      for (int32_t y = 0; y < k; ++y) {
        const int64_t hy = clamp_index(h + y - r, g.rows);
        acc_t* col = list + y * kz;
        for (int32_t z = 0; z < kz; ++z) {
          const int64_t dz = clamp_index(d + z - rz, g.depth);
          col[z] = load(volume + (dz * g.rows + hy) * g.cols + wx);
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

template <typename scalar_t, int32_t kK, int32_t kKz, typename Load>
void launch_window(const Load& load, at::Tensor& out, const Geometry& g) {
  const DevicePlan& plan = device_plan(kKz, kK, out.device());
  median_kernel<scalar_t, Load, kK, kKz><<<blocks_for(out.numel(), kMedianThreads), kMedianThreads, 0,
                                                   at::cuda::getCurrentCUDAStream()>>>(
      load, out.mutable_data_ptr<scalar_t>(), g, plan.pairs, plan.quad_length, plan.column, plan.plane, plan.pair,
      plan.quad, plan.window);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename Load>
void launch_median(const Load& load, at::Tensor& out, const Geometry& g, int64_t kernel_size) {
  static_assert(median::kMaxKernel == 7, "launch_median instantiates the windows up to 7");
  const bool is_3d = g.spatial_dims == 3;
  switch (kernel_size) {  // check_median_args: odd, 1 to median::kMaxKernel
    case 1: return launch_window<scalar_t, 1, 1>(load, out, g);
    case 3: return is_3d ? launch_window<scalar_t, 3, 3>(load, out, g) : launch_window<scalar_t, 3, 1>(load, out, g);
    case 5: return is_3d ? launch_window<scalar_t, 5, 5>(load, out, g) : launch_window<scalar_t, 5, 1>(load, out, g);
    default: return is_3d ? launch_window<scalar_t, 7, 7>(load, out, g) : launch_window<scalar_t, 7, 1>(load, out, g);
  }
}

}  // namespace

void median_cuda(const at::Tensor& values, at::Tensor& out, const Geometry& g, int64_t kernel_size) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "median_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (values.scalar_type() == out.scalar_type()) {
      launch_median<scalar_t>(PlainLoad<scalar_t>{values.const_data_ptr<scalar_t>()}, out, g, kernel_size);
    } else {
      TORCH_INTERNAL_ASSERT(values.scalar_type() == c10::CppTypeToScalarType<acc_t>::value);
      launch_median<scalar_t>(PlainLoad<acc_t>{values.const_data_ptr<acc_t>()}, out, g, kernel_size);
    }
  });
}

namespace {

at::Tensor median_filter_cuda(const at::Tensor& x_in, int64_t kernel_size) {
  check_median_args(x_in, kernel_size);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  median_cuda(x, out, geometry_of(x), kernel_size);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CUDA, m) { m.impl("median_filter", &median_filter_cuda); }

}  // namespace dal
