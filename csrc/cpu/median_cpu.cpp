// CPU kernel of dal::median_filter, and the median that residual_score filters with
// (median_cpu.h).
//
// The median runs the merge networks of dal/median.h over many voxels at once (the
// networks hold no branch on the data, so every step is a short, vectorised min/max loop across
// lanes). Each task takes a run of rows of one depth slice: it sorts each depth column once,
// merges each row's plane lists once and each pair of neighbouring plane lists once; per voxel
// it runs only the trimmed quad and the last, pruned window merge.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "../common.h"
#include "dal/median.h"
#include "median_cpu.h"

namespace dal {
namespace {

// Voxels in flight per network step: kRowLanes along one input row for the column stage (its
// loads follow the input's rows), kLanes over the rows of a task laid end to end for the rest.
constexpr int64_t kRowLanes = 32;
constexpr int64_t kLanes = 128;
constexpr int64_t kRowsPerTask = 16;

const median::Plan& plan_for(int32_t kz, int32_t k) {
  static std::mutex lock;
  static std::map<std::pair<int32_t, int32_t>, median::Plan> plans;
  std::lock_guard<std::mutex> guard(lock);
  auto it = plans.find({kz, k});
  if (it == plans.end()) it = plans.emplace(std::make_pair(kz, k), median::make_plan(kz, k, k)).first;
  return it->second;
}

// Runs a network on Lanes voxels at once. at[w] points at the Lanes values of wire w: first at
// its input, wherever that lies (only read), then at its row of `buf` once a step wrote it; so
// inputs are read in place rather than copied in. Each step loads both operands before it
// stores, so a step may write where it reads.
template <int64_t Lanes, typename T>
void run_lanes(const median::Network& net, const T** at, T* buf) {
  constexpr int64_t kChunk = 64 / sizeof(T);  // one 512-bit vector (two 256-bit ones on AVX2)
  static_assert(Lanes % kChunk == 0, "lanes must fill whole vectors");
  for (const median::Op& op : net.ops) {
    const T* a = at[op.lo];
    const T* b = at[op.hi];
    T* lo = buf + op.lo * Lanes;
    T* hi = buf + op.hi * Lanes;
    if (op.kind == median::kCompareExchange) {
      for (int64_t i = 0; i < Lanes; i += kChunk) {
        T va[kChunk], vb[kChunk];
        for (int64_t j = 0; j < kChunk; ++j) va[j] = a[i + j], vb[j] = b[i + j];
        for (int64_t j = 0; j < kChunk; ++j) lo[i + j] = median::min_(va[j], vb[j]), hi[i + j] = median::max_(va[j], vb[j]);
      }
      at[op.lo] = lo;
      at[op.hi] = hi;
    } else if (op.kind == median::kMinOnly) {
      for (int64_t i = 0; i < Lanes; i += kChunk) {
        T va[kChunk], vb[kChunk];
        for (int64_t j = 0; j < kChunk; ++j) va[j] = a[i + j], vb[j] = b[i + j];
        for (int64_t j = 0; j < kChunk; ++j) lo[i + j] = median::min_(va[j], vb[j]);
      }
      at[op.lo] = lo;
    } else {
      for (int64_t i = 0; i < Lanes; i += kChunk) {
        T va[kChunk], vb[kChunk];
        for (int64_t j = 0; j < kChunk; ++j) va[j] = a[i + j], vb[j] = b[i + j];
        for (int64_t j = 0; j < kChunk; ++j) hi[i + j] = median::max_(va[j], vb[j]);
      }
      at[op.hi] = hi;
    }
  }
}

// Runs `net` over positions [0, end) of lists laid end to end, kLanes at a time: input wire
// (list l, rank j) of position p is source(l)[j * size + p]; output rank j goes to
// out[j * size + p]. Idle lanes of the last block compute garbage past `end` (the buffers have
// the slack).
template <typename T, typename Source>
void run_flat(const median::Network& net, int32_t lists, int32_t length, const Source& source, T* out,
              int64_t size, int64_t end, const T** at, T* buf) {
  for (int64_t p0 = 0; p0 < end; p0 += kLanes) {
    for (int32_t l = 0; l < lists; ++l) {
      for (int32_t j = 0; j < length; ++j) at[l * length + j] = source(l) + j * size + p0;
    }
    run_lanes<kLanes>(net, at, buf);
    for (size_t j = 0; j < net.outputs.size(); ++j) std::copy_n(at[net.outputs[j]], kLanes, out + j * size + p0);
  }
}

// Reads element i of a contiguous tensor in the compute precision.
template <typename T, typename acc_t>
struct Load {
  const T* data;
  acc_t operator()(int64_t i) const { return static_cast<acc_t>(data[i]); }
};

// Median of the values load(offset) over a cube of side k, replicate border, for every voxel.
// Load maps the element offset of a voxel in the contiguous input to the value to filter.
//
// A task is a run of rows of one depth slice. Its buffers hold lists of rows laid end to end,
// each row `stride` long: r replicated values, W values, r replicated values (and room for the
// idle lanes of the last column block). Position p = row * stride + r + w.
template <typename scalar_t, typename Load>
void median_volume(const Load& load, scalar_t* out, const Geometry& g, int32_t k) {
  using acc_t = at::opmath_type<scalar_t>;
  const int32_t kz = g.spatial_dims == 3 ? k : 1, r = k / 2, rz = kz / 2;
  const median::Plan& plan = plan_for(kz, k);
  const int64_t H = g.rows, W = g.cols, row_blocks = (W + kRowLanes - 1) / kRowLanes;
  const int64_t stride = row_blocks * kRowLanes + 2 * r;
  const int64_t chunks = (H + kRowsPerTask - 1) / kRowsPerTask;
  const int32_t plane_length = plan.plane_length(), pair_count = plan.pairs();
  // Input rows of a task: its rows and r more on each side. Slack for the idle lanes.
  const int64_t size = (kRowsPerTask + 2 * r) * stride + 2 * kLanes + 2 * k;

  at::parallel_for(0, g.images * g.depth * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> columns(static_cast<size_t>(kz * size), acc_t(0));  // [rank][position]
    std::vector<acc_t> planes(static_cast<size_t>(plane_length * size), acc_t(0));
    std::vector<acc_t> pairs(static_cast<size_t>(2 * plane_length * size * (pair_count > 0)), acc_t(0));
    std::vector<acc_t> quads(static_cast<size_t>(plan.quad_length * size), acc_t(0));
    std::vector<acc_t> wires(static_cast<size_t>(plan.max_inputs() * kLanes));
    std::vector<const acc_t*> at(static_cast<size_t>(plan.max_inputs()));  // see run_lanes
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task % chunks, bd = task / chunks, d = bd % g.depth, b = bd / g.depth;
      const int64_t h_begin = chunk * kRowsPerTask, rows = std::min(H, h_begin + kRowsPerTask) - h_begin;
      // 1. Sorted depth columns of input rows h_begin - r .. h_begin + rows + r (clamped).
      for (int64_t e = 0; e < rows + 2 * r; ++e) {
        const int64_t y = clamp_index(h_begin - r + e, H);
        for (int64_t w0 = 0; w0 < W; w0 += kRowLanes) {
          for (int32_t z = 0; z < kz; ++z) {
            const int64_t row = ((b * g.depth + clamp_index(d + z - rz, g.depth)) * H + y) * W;
            acc_t* dst = wires.data() + z * kRowLanes;
            if (w0 + kRowLanes <= W) {  // a full block: a contiguous, vectorised load
              for (int64_t lane = 0; lane < kRowLanes; ++lane) dst[lane] = load(row + w0 + lane);
            } else {
              for (int64_t lane = 0; lane < kRowLanes; ++lane) dst[lane] = load(row + std::min(w0 + lane, W - 1));
            }
          }
          for (int32_t z = 0; z < kz; ++z) at[z] = wires.data() + z * kRowLanes;
          run_lanes<kRowLanes>(plan.column, at.data(), wires.data());
          for (int32_t j = 0; j < kz; ++j) {
            std::copy_n(at[plan.column.outputs[j]], kRowLanes, columns.data() + j * size + e * stride + r + w0);
          }
        }
      }
      // 2. Plane lists of the task's rows: row i merges the columns of input rows i .. i + k - 1.
      const int64_t positions = rows * stride;
      run_flat(plan.plane, k, kz, [&](int32_t y) { return columns.data() + y * stride; }, planes.data(), size,
               positions, at.data(), wires.data());
      for (int64_t i = 0; i < rows; ++i) {  // replicate the ends of each row
        for (int32_t j = 0; j < plane_length; ++j) {
          acc_t* p = planes.data() + j * size + i * stride;
          std::fill(p, p + r, p[r]);
          std::fill(p + r + W, p + stride, p[r + W - 1]);
        }
      }
      // 3. Pairs: the plane lists at p and p + 1 merged, at every p a window reads. Window
      // inputs start r before the voxel: at q = p - r, so the windows read from q = 0.
      const int64_t windows = (rows - 1) * stride + W;  // window q = row * stride + w
      if (pair_count > 0) {
        run_flat(plan.pair, 2, plane_length, [&](int32_t x) { return planes.data() + x; }, pairs.data(), size,
                 windows + k - 3, at.data(), wires.data());
      }
      // 4. Quads: pairs at q and q + 2 merged, the ranks that can hold the median kept.
      if (plan.has_quad()) {
        run_flat(plan.quad, 2, 2 * plane_length, [&](int32_t x) { return pairs.data() + 2 * x; }, quads.data(),
                 size, windows, at.data(), wires.data());
      }
      // 5. Windows, in the wire layout of plan.window: the quad (plane lists q .. q + 3), the
      // other pairs (plane lists q + 2i, q + 2i + 1), the plane lists in no pair.
      struct ListSource {
        const acc_t* base;
        int32_t length;
        int64_t shift;
      };
      std::vector<ListSource> lists;
      if (plan.has_quad()) lists.push_back({quads.data(), plan.quad_length, 0});
      for (int32_t i = plan.has_quad() ? 2 : 0; i < pair_count; ++i) lists.push_back({pairs.data(), 2 * plane_length, 2 * i});
      for (int32_t x = 2 * pair_count; x < k; ++x) lists.push_back({planes.data(), plane_length, x});
      scalar_t* out_rows = out + ((b * g.depth + d) * H + h_begin) * W;
      for (int64_t q0 = 0; q0 < windows; q0 += kLanes) {
        int32_t wire = 0;
        for (const ListSource& list : lists) {
          for (int32_t j = 0; j < list.length; ++j) at[wire++] = list.base + j * size + q0 + list.shift;
        }
        run_lanes<kLanes>(plan.window, at.data(), wires.data());
        const acc_t* median = at[plan.window.outputs[0]];
        for (int64_t lane = 0, q = q0; lane < kLanes && q < windows; ++lane, ++q) {
          const int64_t row = q / stride, w = q - row * stride;
          if (w < W) out_rows[row * W + w] = static_cast<scalar_t>(median[lane]);
        }
      }
    }
  });
}

}  // namespace

void median_cpu(const at::Tensor& values, at::Tensor& out, const Geometry& g, int32_t kernel_size) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "median_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (values.scalar_type() == out.scalar_type()) {
      median_volume<scalar_t>(Load<scalar_t, acc_t>{values.const_data_ptr<scalar_t>()}, o, g, kernel_size);
    } else {
      TORCH_INTERNAL_ASSERT(values.scalar_type() == c10::CppTypeToScalarType<acc_t>::value);
      median_volume<scalar_t>(Load<acc_t, acc_t>{values.const_data_ptr<acc_t>()}, o, g, kernel_size);
    }
  });
}

namespace {

at::Tensor median_filter_cpu(const at::Tensor& x_in, int64_t kernel_size) {
  check_median_args(x_in, kernel_size);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  median_cpu(x, out, geometry_of(x), static_cast<int32_t>(kernel_size));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CPU, m) { m.impl("median_filter", &median_filter_cpu); }

}  // namespace dal
