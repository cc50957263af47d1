// Exact median over a box window by merge networks (kernel 4), shared by CPU and CUDA.
//
// A (kz, ky, kx) window is the merge of sorted lists, built in stages so that a CPU loop shares
// work between neighbouring windows:
//   1. column: the kz values along depth at one (h, w), sorted (shared by ky * kx windows);
//   2. plane:  the ky sorted columns along height at one w, merged into one sorted list of
//              kz * ky values (shared by the kx windows of the row);
//   3. pair:   from kx = 5 on, the plane lists at w and w + 1 merged (shared by two windows);
//   4. quad:   pairs 0 and 1 merged, keeping only the ranks that can hold the median;
//   5. window: the quad, the other pairs and plane lists merged, keeping the median only.
// Each stage is a Batcher odd-even merge tree whose compare-exchanges are pruned twice when the
// network is built: those that touch the +infinity padding of a list (lists need not be powers
// of two) and those whose results never reach a wanted output. What is left is a straight list
// of min/max operations on "wires" with no branch on the data: it vectorises across voxels on
// the CPU and runs as is in a CUDA thread. min/max move values without arithmetic, so the median
// is bit-exact (the value scipy.ndimage.median_filter returns). NaN inputs are not ordered: a
// window holding one gives an unspecified value.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "dal/common.h"

namespace dal {
namespace median {

// The largest cube side the ops accept (a 7^3 window already needs ~4900 min/max steps).
constexpr int32_t kMaxKernel = 7;

// One step of a network: lo <- min(lo, hi), hi <- max(lo, hi), or only one of the two when the
// other result is never read again.
enum OpKind : int32_t { kCompareExchange = 0, kMinOnly = 1, kMaxOnly = 2 };

struct Op {
  int32_t kind, lo, hi;
};

// The order of the networks (x86 minps/maxps semantics, so CPU loops of them vectorise).
template <typename T>
DAL_HOST_DEVICE inline T min_(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
DAL_HOST_DEVICE inline T max_(T a, T b) {
  return a < b ? b : a;
}

template <typename T>
DAL_HOST_DEVICE inline void apply(const Op& op, T& lo, T& hi) {
  const T a = lo, b = hi;
  if (op.kind != kMaxOnly) lo = min_(a, b);
  if (op.kind != kMinOnly) hi = max_(a, b);
}

// A network over `inputs` wires: `lists` sorted lists of `length` values, rank j of list l on
// wire l * length + j. After the ops, wire outputs[r] holds the r-th wanted rank of the merge.
struct Network {
  int32_t inputs = 0;
  std::vector<Op> ops;
  std::vector<int32_t> outputs;
};

namespace detail {

// Compare-exchange positions of Batcher's odd-even merge of two sorted halves of n = 2^p values.
inline void odd_even_merge(int32_t lo, int32_t n, int32_t step, std::vector<std::pair<int32_t, int32_t>>& out) {
  const int32_t stride = step * 2;
  if (stride < n) {
    odd_even_merge(lo, n, stride, out);
    odd_even_merge(lo + step, n, stride, out);
    for (int32_t i = lo + step; i + step < lo + n; i += stride) out.emplace_back(i, i + step);
  } else {
    out.emplace_back(lo, lo + step);
  }
}

constexpr int32_t kPad = -1;  // a virtual +infinity wire

// Merges the sorted wire sequences a and b; appends the compare-exchanges to ops and returns
// the wires of the merged sequence in sorted order.
inline std::vector<int32_t> merge(const std::vector<int32_t>& a, const std::vector<int32_t>& b,
                                  std::vector<Op>& ops) {
  int32_t half = 1;
  while (half < static_cast<int32_t>(std::max(a.size(), b.size()))) half *= 2;
  std::vector<int32_t> v(2 * static_cast<size_t>(half), kPad);
  std::copy(a.begin(), a.end(), v.begin());
  std::copy(b.begin(), b.end(), v.begin() + half);
  std::vector<std::pair<int32_t, int32_t>> steps;
  odd_even_merge(0, 2 * half, 1, steps);
  for (const auto& [i, j] : steps) {
    if (v[j] == kPad) continue;  // already in order: padding is above everything
    if (v[i] == kPad) {
      std::swap(v[i], v[j]);  // the real value moves down: a renaming, no op
      continue;
    }
    ops.push_back({kCompareExchange, v[i], v[j]});
  }
  v.resize(a.size() + b.size());
  return v;
}

}  // namespace detail

// Builds the network that merges sorted lists of the given lengths (list l on the wires after
// those of lists 0..l-1, its rank j on the j-th) and yields the given ranks (0-based) of the
// merged sequence. The two shortest lists are merged first (the fewest operations for the odd
// list counts of a median window).
inline Network merge_network(const std::vector<int32_t>& lengths, const std::vector<int32_t>& ranks) {
  Network net;
  std::vector<std::vector<int32_t>> pending;
  for (int32_t length : lengths) {
    std::vector<int32_t> wires(static_cast<size_t>(length));
    for (int32_t j = 0; j < length; ++j) wires[j] = net.inputs + j;
    net.inputs += length;
    pending.push_back(std::move(wires));
  }
  std::vector<Op> ops;
  while (pending.size() > 1) {
    // The two shortest sequences, first come first served among equals.
    std::stable_sort(pending.begin(), pending.end(),
                     [](const auto& x, const auto& y) { return x.size() < y.size(); });
    std::vector<int32_t> merged = detail::merge(pending[0], pending[1], ops);
    pending.erase(pending.begin(), pending.begin() + 2);
    pending.push_back(std::move(merged));
  }
  for (int32_t r : ranks) net.outputs.push_back(pending[0][r]);
  // Backward pass: keep what reaches an output, and only the half of it that is read.
  std::vector<char> live(static_cast<size_t>(net.inputs), 0);
  for (int32_t w : net.outputs) live[w] = 1;
  for (auto it = ops.rbegin(); it != ops.rend(); ++it) {
    const bool lo_read = live[it->lo], hi_read = live[it->hi];
    if (!lo_read && !hi_read) continue;
    it->kind = lo_read && hi_read ? kCompareExchange : (lo_read ? kMinOnly : kMaxOnly);
    live[it->lo] = live[it->hi] = 1;
    net.ops.push_back(*it);
  }
  std::reverse(net.ops.begin(), net.ops.end());
  return net;
}

inline Network merge_network(int32_t lists, int32_t length, const std::vector<int32_t>& ranks) {
  return merge_network(std::vector<int32_t>(static_cast<size_t>(lists), length), ranks);
}

inline std::vector<int32_t> all_ranks(int32_t n) {
  std::vector<int32_t> r(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) r[i] = i;
  return r;
}

// The stages of a (kz, ky, kx) median window (kz = 1 for 2D images). From kx = 5 on, the plane
// lists of neighbouring w are first merged in pairs (pair i: lists 2i and 2i + 1), which the
// CPU shares between the windows two apart. Pairs 0 and 1 are then merged into a "quad" of
// which only the ranks that can hold the median are kept: a quad value of rank i has i values
// below it and at most i + (values outside the quad) below it in the window, so only ranks
// median - outside .. median matter. The window merges that trimmed quad with the other pairs
// and the last list. The trimming halves the window merge of a 5^3 median.
struct Plan {
  int32_t kz, ky, kx;
  Network column;  // kz lists of 1 -> all kz ranks
  Network plane;   // ky lists of kz -> all kz * ky ranks
  Network pair;    // 2 plane lists -> all ranks (no steps without pairs)
  Network quad;    // pairs 0 and 1 -> ranks quad_first .. quad_first + quad_length - 1
  Network window;  // [trimmed quad], the other pairs, the other plane lists -> the median
  int32_t quad_first = 0, quad_length = 0;

  int32_t column_length() const { return kz; }
  int32_t plane_length() const { return kz * ky; }
  int32_t pairs() const { return kx >= 5 ? kx / 2 : 0; }
  bool has_quad() const { return pairs() >= 2; }
  // The most wires any stage uses (at most kz * ky * kx).
  int32_t max_inputs() const {
    return std::max({column.inputs, plane.inputs, pair.inputs, quad.inputs, window.inputs});
  }
};

inline Plan make_plan(int32_t kz, int32_t ky, int32_t kx) {
  Plan p{kz, ky, kx, {}, {}, {}, {}, {}};
  const int32_t length = kz * ky, count = length * kx, median = count / 2;
  p.column = merge_network(kz, 1, all_ranks(kz));
  p.plane = merge_network(ky, kz, all_ranks(length));
  std::vector<int32_t> lists;  // the window's input lists
  int32_t first_pair = 0, rank = median;
  if (p.pairs() > 0) p.pair = merge_network(2, length, all_ranks(2 * length));
  if (p.has_quad()) {
    const int32_t outside = count - 4 * length;
    p.quad_first = std::max(0, median - outside);
    p.quad_length = std::min(4 * length - 1, median) - p.quad_first + 1;
    std::vector<int32_t> ranks(static_cast<size_t>(p.quad_length));
    for (int32_t j = 0; j < p.quad_length; ++j) ranks[j] = p.quad_first + j;
    p.quad = merge_network(2, 2 * length, ranks);
    lists.push_back(p.quad_length);
    first_pair = 2;
    rank = median - p.quad_first;
  }
  for (int32_t i = first_pair; i < p.pairs(); ++i) lists.push_back(2 * length);
  for (int32_t x = 2 * p.pairs(); x < kx; ++x) lists.push_back(length);
  p.window = merge_network(lists, {rank});
  return p;
}

// Runs a network on one set of wires (one voxel: the CUDA thread's loop).
template <typename T>
DAL_HOST_DEVICE inline void run(const Op* ops, int32_t count, T* wires) {
  for (int32_t i = 0; i < count; ++i) apply(ops[i], wires[ops[i].lo], wires[ops[i].hi]);
}

}  // namespace median
}  // namespace dal
