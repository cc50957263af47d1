// CPU kernels of the scoring ops: median_filter, residual_score (|x - phi| in the eroded mask,
// then the median, in one pass over the data), binary_erode and binary_dilate.
//
// The median runs the three merge networks of dal/median.h over kLanes voxels of a row at once
// (the networks hold no branch on the data, so every step is a short, vectorised min/max loop
// across lanes). Each task takes a run of rows of one depth slice and keeps the sorted columns
// of the last ky input rows in a ring, so a column is sorted once per task and each row's plane
// lists once per row; the window stage alone runs per voxel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "../scoring.h"
#include "dal/median.h"

namespace dal {
namespace {

constexpr int64_t kLanes = 32;
constexpr int64_t kRowsPerTask = 16;

const median::Plan& plan_for(int32_t kz, int32_t k) {
  static std::mutex lock;
  static std::map<std::pair<int32_t, int32_t>, median::Plan> plans;
  std::lock_guard<std::mutex> guard(lock);
  auto it = plans.find({kz, k});
  if (it == plans.end()) it = plans.emplace(std::make_pair(kz, k), median::make_plan(kz, k, k)).first;
  return it->second;
}

// Runs a network on kLanes voxels at once: wires[w * kLanes + lane].
template <typename T>
void run_lanes(const median::Network& net, T* wires) {
  for (const median::Op& op : net.ops) {
    T* __restrict lo = wires + op.lo * kLanes;
    T* __restrict hi = wires + op.hi * kLanes;
    if (op.kind == median::kCompareExchange) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const T a = lo[l], b = hi[l];
        lo[l] = median::min_(a, b);
        hi[l] = median::max_(a, b);
      }
    } else if (op.kind == median::kMinOnly) {
      for (int64_t l = 0; l < kLanes; ++l) lo[l] = median::min_(lo[l], hi[l]);
    } else {
      for (int64_t l = 0; l < kLanes; ++l) hi[l] = median::max_(lo[l], hi[l]);
    }
  }
}

// Median of the values load(offset) over a cube of side k, replicate border, for every voxel.
// Load maps the element offset of a voxel in the contiguous input to the value to filter.
template <typename scalar_t, typename Load>
void median_volume(const Load& load, scalar_t* out, const VolumeLayout& l, int32_t k) {
  using acc_t = at::opmath_type<scalar_t>;
  const int32_t kz = l.dims == 3 ? k : 1, r = k / 2, rz = kz / 2;
  const median::Plan& plan = plan_for(kz, k);
  const int64_t H = l.height, W = l.width, blocks = (W + kLanes - 1) / kLanes;
  const int64_t padded = blocks * kLanes + 2 * r;  // a plane row with replicated ends
  const int64_t chunks = (H + kRowsPerTask - 1) / kRowsPerTask;
  const int32_t column_length = plan.column_length(), plane_length = plan.plane_length();

  at::parallel_for(0, l.batch * l.depth * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> columns(static_cast<size_t>(k * column_length * blocks * kLanes));  // ring of k rows
    std::vector<int64_t> column_row(static_cast<size_t>(k), -1);  // input row held by each slot
    std::vector<acc_t> planes(static_cast<size_t>(plane_length * padded));
    std::vector<acc_t> wires(static_cast<size_t>(plan.window.inputs * kLanes));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task % chunks, bd = task / chunks, d = bd % l.depth, b = bd / l.depth;
      std::fill(column_row.begin(), column_row.end(), -1);
      // Sorted columns of input row y, in its ring slot: columns[(slot * kz + rank) * W'].
      auto column_slot = [&](int64_t y) {
        const int64_t slot = y % k;
        acc_t* dst = columns.data() + slot * column_length * blocks * kLanes;
        if (column_row[slot] == y) return dst;
        column_row[slot] = y;
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t w0 = blk * kLanes;
          for (int32_t z = 0; z < kz; ++z) {
            const int64_t row = ((b * l.depth + median::clamp_index(d + z - rz, l.depth)) * H + y) * W;
            for (int64_t lane = 0; lane < kLanes; ++lane) {
              wires[z * kLanes + lane] = load(row + std::min(w0 + lane, W - 1));
            }
          }
          run_lanes(plan.column, wires.data());
          for (int32_t j = 0; j < kz; ++j) {
            std::copy_n(wires.data() + plan.column.outputs[j] * kLanes, kLanes, dst + j * blocks * kLanes + w0);
          }
        }
        return dst;
      };
      const int64_t h_end = std::min(H, (chunk + 1) * kRowsPerTask);
      for (int64_t h = chunk * kRowsPerTask; h < h_end; ++h) {
        // Plane lists of this row at every w, then their replicated ends.
        const acc_t* rows[median::kMaxKernel];
        for (int32_t y = 0; y < k; ++y) rows[y] = column_slot(median::clamp_index(h + y - r, H));
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t w0 = blk * kLanes;
          for (int32_t y = 0; y < k; ++y) {
            for (int32_t j = 0; j < kz; ++j) {
              std::copy_n(rows[y] + j * blocks * kLanes + w0, kLanes, wires.data() + (y * kz + j) * kLanes);
            }
          }
          run_lanes(plan.plane, wires.data());
          for (int32_t j = 0; j < plane_length; ++j) {
            std::copy_n(wires.data() + plan.plane.outputs[j] * kLanes, kLanes, planes.data() + j * padded + r + w0);
          }
        }
        for (int32_t j = 0; j < plane_length; ++j) {
          acc_t* p = planes.data() + j * padded;
          std::fill(p, p + r, p[r]);
          std::fill(p + r + W, p + padded, p[r + W - 1]);
        }
        // The window stage, kLanes voxels at a time.
        scalar_t* out_row = out + ((b * l.depth + d) * H + h) * W;
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t w0 = blk * kLanes;
          for (int32_t x = 0; x < k; ++x) {
            for (int32_t j = 0; j < plane_length; ++j) {
              std::copy_n(planes.data() + j * padded + w0 + x, kLanes, wires.data() + (x * plane_length + j) * kLanes);
            }
          }
          run_lanes(plan.window, wires.data());
          const acc_t* median = wires.data() + plan.window.outputs[0] * kLanes;
          const int64_t count = std::min(kLanes, W - w0);
          for (int64_t lane = 0; lane < count; ++lane) out_row[w0 + lane] = static_cast<scalar_t>(median[lane]);
        }
      }
    }
  });
}

at::Tensor median_filter_cpu(const at::Tensor& x_in, int64_t kernel_size) {
  const VolumeLayout l = check_median_args(x_in, kernel_size);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "median_filter_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* data = x.const_data_ptr<scalar_t>();
    median_volume<scalar_t>([data](int64_t i) { return static_cast<acc_t>(data[i]); },
                            out.mutable_data_ptr<scalar_t>(), l, static_cast<int32_t>(kernel_size));
  });
  return out;
}

// Box minimum (erode) or maximum (dilate) of a 0/1 byte volume, radius voxels each way along
// every spatial axis, replicate border: one pass per axis.
void box_extreme(at::Tensor& volume, const VolumeLayout& l, int64_t radius, bool minimum) {
  if (radius == 0 || volume.numel() == 0) return;
  const int64_t strides[3] = {1, l.width, l.width * l.height};
  const int64_t sizes[3] = {l.width, l.height, l.depth};
  at::Tensor scratch = at::empty_like(volume);
  for (int64_t axis = 0; axis < l.dims; ++axis) {
    const uint8_t* in = volume.const_data_ptr<uint8_t>();
    uint8_t* out = scratch.mutable_data_ptr<uint8_t>();
    const int64_t stride = strides[axis], size = sizes[axis];
    // One task per row of W voxels; each voxel reads its neighbours along the axis.
    at::parallel_for(0, l.batch * l.depth * l.height, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t base = row * l.width;
        const int64_t pos = axis == 0 ? 0 : (axis == 1 ? row % l.height : (row / l.height) % l.depth);
        for (int64_t w = 0; w < l.width; ++w) {
          const int64_t i = axis == 0 ? w : pos;
          uint8_t v = minimum ? 1 : 0;
          for (int64_t o = -radius; o <= radius; ++o) {
            const uint8_t n = in[base + w + (median::clamp_index(i + o, size) - i) * stride];
            v = minimum ? std::min(v, n) : std::max(v, n);
          }
          out[base + w] = v;
        }
      }
    });
    std::swap(volume, scratch);
  }
}

at::Tensor binary_morphology(const at::Tensor& mask, int64_t radius, bool erode) {
  const VolumeLayout l = volume_layout(mask, "mask");
  check_radius(radius, "radius");
  at::Tensor bytes = (mask != 0).to(at::kByte).contiguous();
  box_extreme(bytes, l, radius, erode);
  return bytes.to(at::kBool);
}

at::Tensor binary_erode_cpu(const at::Tensor& mask, int64_t radius) { return binary_morphology(mask, radius, true); }
at::Tensor binary_dilate_cpu(const at::Tensor& mask, int64_t radius) { return binary_morphology(mask, radius, false); }

at::Tensor residual_score_cpu(const at::Tensor& x_in, const at::Tensor& phi_in,
                              const std::optional<at::Tensor>& mask_in, int64_t kernel_size, int64_t erode) {
  const VolumeLayout l = check_residual_args(x_in, phi_in, mask_in, kernel_size, erode);
  const at::Tensor x = x_in.contiguous(), phi = phi_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  at::Tensor inside;
  if (mask_in.has_value()) {
    inside = (*mask_in != 0).to(at::kByte).contiguous();
    box_extreme(inside, volume_layout(inside, "mask"), erode, true);
    inside = inside.expand(x.sizes()).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "residual_score_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* ps = phi.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int32_t k = static_cast<int32_t>(kernel_size);
    if (inside.defined()) {
      const uint8_t* ms = inside.const_data_ptr<uint8_t>();
      median_volume<scalar_t>(
          [=](int64_t i) {
            return median::masked_residual(static_cast<acc_t>(xs[i]), static_cast<acc_t>(ps[i]), ms[i] != 0);
          },
          o, l, k);
    } else {
      median_volume<scalar_t>(
          [=](int64_t i) { return median::masked_residual(static_cast<acc_t>(xs[i]), static_cast<acc_t>(ps[i]), true); },
          o, l, k);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CPU, m) {
  m.impl("median_filter", &median_filter_cpu);
  m.impl("residual_score", &residual_score_cpu);
  m.impl("binary_erode", &binary_erode_cpu);
  m.impl("binary_dilate", &binary_dilate_cpu);
}

}  // namespace dal
