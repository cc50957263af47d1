// CPU kernels of the scoring ops: median_filter, residual_score (|x - phi| in the eroded mask,
// then the median, in one op), binary_erode and binary_dilate.
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

#include "../scoring.h"
#include "dal/median.h"

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

// Median of the values load(offset) over a cube of side k, replicate border, for every voxel.
// Load maps the element offset of a voxel in the contiguous input to the value to filter.
//
// A task is a run of rows of one depth slice. Its buffers hold lists of rows laid end to end,
// each row `stride` long: r replicated values, W values, r replicated values (and room for the
// idle lanes of the last column block). Position p = row * stride + r + w.
template <typename scalar_t, typename Load>
void median_volume(const Load& load, scalar_t* out, const VolumeLayout& l, int32_t k) {
  using acc_t = at::opmath_type<scalar_t>;
  const int32_t kz = l.dims == 3 ? k : 1, r = k / 2, rz = kz / 2;
  const median::Plan& plan = plan_for(kz, k);
  const int64_t H = l.height, W = l.width, row_blocks = (W + kRowLanes - 1) / kRowLanes;
  const int64_t stride = row_blocks * kRowLanes + 2 * r;
  const int64_t chunks = (H + kRowsPerTask - 1) / kRowsPerTask;
  const int32_t plane_length = plan.plane_length(), pair_count = plan.pairs();
  // Input rows of a task: its rows and r more on each side. Slack for the idle lanes.
  const int64_t size = (kRowsPerTask + 2 * r) * stride + 2 * kLanes + 2 * k;

  at::parallel_for(0, l.batch * l.depth * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> columns(static_cast<size_t>(kz * size), acc_t(0));  // [rank][position]
    std::vector<acc_t> planes(static_cast<size_t>(plane_length * size), acc_t(0));
    std::vector<acc_t> pairs(static_cast<size_t>(2 * plane_length * size * (pair_count > 0)), acc_t(0));
    std::vector<acc_t> quads(static_cast<size_t>(plan.quad_length * size), acc_t(0));
    std::vector<acc_t> wires(static_cast<size_t>(plan.max_inputs() * kLanes));
    std::vector<const acc_t*> at(static_cast<size_t>(plan.max_inputs()));  // see run_lanes
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task % chunks, bd = task / chunks, d = bd % l.depth, b = bd / l.depth;
      const int64_t h_begin = chunk * kRowsPerTask, rows = std::min(H, h_begin + kRowsPerTask) - h_begin;
      // 1. Sorted depth columns of input rows h_begin - r .. h_begin + rows + r (clamped).
      for (int64_t e = 0; e < rows + 2 * r; ++e) {
        const int64_t y = median::clamp_index(h_begin - r + e, H);
        for (int64_t w0 = 0; w0 < W; w0 += kRowLanes) {
          for (int32_t z = 0; z < kz; ++z) {
            const int64_t row = ((b * l.depth + median::clamp_index(d + z - rz, l.depth)) * H + y) * W;
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
      scalar_t* out_rows = out + ((b * l.depth + d) * H + h_begin) * W;
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

template <bool Minimum>
inline uint8_t extreme(uint8_t a, uint8_t b) {
  return Minimum ? (b < a ? b : a) : (a < b ? b : a);
}

// One row of a box extreme along W. Plain arguments, not captures: a byte store may alias any
// memory, so bounds read through a closure would be reloaded after each store, unvectorised.
template <bool Minimum>
void extreme_along_row(const uint8_t* src, uint8_t* __restrict dst, int64_t width, int64_t radius) {
  for (int64_t w = radius; w + radius < width; ++w) {
    uint8_t v = src[w - radius];
    for (int64_t o = 1 - radius; o <= radius; ++o) v = extreme<Minimum>(v, src[w + o]);
    dst[w] = v;
  }
  auto clamped = [&](int64_t w) {
    uint8_t v = src[w];
    for (int64_t o = -radius; o <= radius; ++o) v = extreme<Minimum>(v, src[median::clamp_index(w + o, width)]);
    dst[w] = v;
  };
  for (int64_t w = 0; w < std::min(radius, width); ++w) clamped(w);
  for (int64_t w = std::max(radius, width - radius); w < width; ++w) clamped(w);
}

template <bool Minimum>
void extreme_of_rows(uint8_t* __restrict dst, const uint8_t* other, int64_t width) {
  for (int64_t w = 0; w < width; ++w) dst[w] = extreme<Minimum>(dst[w], other[w]);
}

// Box minimum (erode) or maximum (dilate) of a 0/1 byte volume, radius voxels each way along
// every spatial axis, replicate border: one pass per axis, each a contiguous loop along W.
// Replaces `volume` by the result; never writes into the tensor it was given (it may be a view
// of the caller's mask).
template <bool Minimum>
void box_extreme(at::Tensor& volume, const VolumeLayout& l, int64_t radius) {
  if (radius == 0 || volume.numel() == 0) return;
  const int64_t W = l.width, H = l.height, D = l.depth;
  at::Tensor spare;  // a buffer of ours that the next pass may overwrite
  for (int64_t axis = 0; axis < l.dims; ++axis) {
    at::Tensor result = spare.defined() ? spare : at::empty_like(volume);
    const uint8_t* in = volume.const_data_ptr<uint8_t>();
    uint8_t* out = result.mutable_data_ptr<uint8_t>();
    at::parallel_for(0, l.batch * D * H, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const uint8_t* src = in + row * W;
        uint8_t* dst = out + row * W;
        if (axis == 0) {
          extreme_along_row<Minimum>(src, dst, W, radius);
        } else {  // along H or D: whole neighbouring rows at once
          const int64_t stride = axis == 1 ? W : W * H, size = axis == 1 ? H : D;
          const int64_t pos = axis == 1 ? row % H : (row / H) % D;
          std::copy_n(src, W, dst);
          for (int64_t o = -radius; o <= radius; ++o) {
            extreme_of_rows<Minimum>(dst, src + (median::clamp_index(pos + o, size) - pos) * stride, W);
          }
        }
      }
    });
    spare = axis == 0 ? at::Tensor() : volume;
    volume = result;
  }
}

at::Tensor binary_morphology(const at::Tensor& mask, int64_t radius, bool erode) {
  const VolumeLayout l = volume_layout(mask, "mask");
  check_radius(radius, "radius");
  at::Tensor bytes = mask_bytes(mask);
  if (erode) {
    box_extreme<true>(bytes, l, radius);
  } else {
    box_extreme<false>(bytes, l, radius);
  }
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
    inside = mask_bytes(*mask_in);
    box_extreme<true>(inside, volume_layout(inside, "mask"), erode);
    inside = inside.expand(x.sizes()).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "residual_score_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* ps = phi.const_data_ptr<scalar_t>();
    const uint8_t* ms = inside.defined() ? inside.const_data_ptr<uint8_t>() : nullptr;
    // The masked residual once, in the compute precision: the median reads each voxel about
    // six times (kz depths, and the rows a task shares with its neighbours), so forming it in
    // the median's load costs more than one pass that writes it.
    at::Tensor residual = at::empty(x.sizes(), x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    acc_t* r = residual.mutable_data_ptr<acc_t>();
    at::parallel_for(0, x.numel(), 1 << 14, [=](int64_t begin, int64_t end) {
      if (ms != nullptr) {
        for (int64_t i = begin; i < end; ++i) {
          r[i] = median::masked_residual(static_cast<acc_t>(xs[i]), static_cast<acc_t>(ps[i]), ms[i] != 0);
        }
      } else {
        for (int64_t i = begin; i < end; ++i) {
          r[i] = median::masked_residual(static_cast<acc_t>(xs[i]), static_cast<acc_t>(ps[i]), true);
        }
      }
    });
    median_volume<scalar_t>([r](int64_t i) { return r[i]; }, out.mutable_data_ptr<scalar_t>(), l,
                            static_cast<int32_t>(kernel_size));
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
