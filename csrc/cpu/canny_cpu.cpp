// CPU kernel of dal::canny. Every step but hysteresis is split over images, planes and rows (one
// volume uses every core), with contiguous inner loops along W: the separable Gaussian, the
// Sobel rows of sobel_cpu.h, then non-maximum suppression and double threshold (dal/canny.h).
// Hysteresis is a worklist flood from the strong voxels through the weak ones, to convergence,
// parallel over images; it touches only candidate voxels, a small fraction of the volume.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common.h"
#include "cpu_helpers.h"
#include "dal/canny.h"
#include "sobel_cpu.h"

namespace dal {
namespace {

using namespace cpu;

// out = taps[0] * centre, then out += taps[j] * (before_j + after_j) for j = radius..1: the
// order of dal/canny.h's gaussian_step, each step a contiguous loop over the row.
template <typename acc_t, typename Row>
void gaussian_row(acc_t* __restrict__ out, const std::vector<acc_t>& taps, int64_t n, const Row& row_at) {
  const acc_t* centre = row_at(0);
  for (int64_t i = 0; i < n; ++i) out[i] = taps[0] * centre[i];
  for (int64_t j = static_cast<int64_t>(taps.size()) - 1; j >= 1; --j) {
    const acc_t* __restrict__ before = row_at(-j);
    const acc_t* __restrict__ after = row_at(j);
    const acc_t tap = taps[j];
    for (int64_t i = 0; i < n; ++i) out[i] = canny::gaussian_step(out[i], tap, before[i], after[i]);
  }
}

// The input row (b, dz, hy) in acc_t: the row itself when scalar_t is acc_t, else converted into
// `slot` (W values).
template <typename scalar_t, typename acc_t>
const acc_t* row_in_acc(const scalar_t* in, const Geometry& g, int64_t b, int64_t dz, int64_t hy, acc_t* slot) {
  const scalar_t* row = in + ((b * g.depth + dz) * g.rows + hy) * g.cols;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return row;
  } else {
    for (int64_t i = 0; i < g.cols; ++i) slot[i] = static_cast<acc_t>(row[i]);
    return slot;
  }
}

// Gaussian along D: each output row combines the rows at the same (h) of other planes.
template <typename scalar_t, typename acc_t>
void gaussian_along_d(const scalar_t* in, acc_t* out, const Geometry& g, const std::vector<acc_t>& taps) {
  const int64_t W = g.cols, radius = static_cast<int64_t>(taps.size()) - 1;
  for_each_row_index(g, [&](int64_t b, int64_t d, int64_t h) {
    thread_local std::vector<acc_t> converted;
    converted.resize(static_cast<size_t>((2 * radius + 1) * W));
    gaussian_row(out + ((b * g.depth + d) * g.rows + h) * W, taps, W, [&](int64_t j) {
      return row_in_acc(in, g, b, clamp_index(d + j, g.depth), h, converted.data() + (j + radius) * W);
    });
  });
}

// Gaussian along H then W, fused per output row: the rows around it are combined into a buffer
// replicate-padded by the radius, which the pass along W reads.
template <typename scalar_t, typename acc_t>
void gaussian_along_h_and_w(const scalar_t* in, acc_t* out, const Geometry& g, const std::vector<acc_t>& taps) {
  const int64_t W = g.cols, radius = static_cast<int64_t>(taps.size()) - 1;
  for_each_row_index(g, [&](int64_t b, int64_t d, int64_t h) {
    thread_local std::vector<acc_t> converted, padded;
    converted.resize(static_cast<size_t>((2 * radius + 1) * W));
    padded.resize(static_cast<size_t>(W + 2 * radius));
    acc_t* along_h = padded.data() + radius;
    gaussian_row(along_h, taps, W, [&](int64_t j) {
      return row_in_acc(in, g, b, d, clamp_index(h + j, g.rows), converted.data() + (j + radius) * W);
    });
    std::fill(padded.begin(), padded.begin() + radius, along_h[0]);
    std::fill(padded.end() - radius, padded.end(), along_h[W - 1]);
    gaussian_row(out + ((b * g.depth + d) * g.rows + h) * W, taps, W, [&](int64_t j) { return along_h + j; });
  });
}

// Sobel components (images, kDims, D, H, W) and magnitude (images, D, H, W) of the smoothed image.
template <typename acc_t, int kDims>
void gradient(const acc_t* smoothed, acc_t* components, acc_t* magnitude, const Geometry& g) {
  const int64_t volume = g.voxels();
  for_each_row_block<acc_t, acc_t, kDims>(g, [&](int64_t b, int64_t d, int64_t h0, int64_t h1, auto& rows) {
    rows.sweep(smoothed, b, d, h0, h1, [&](int64_t h, const SobelParts<acc_t>& parts) {
      const int64_t row = (d * g.rows + h) * g.cols;
      acc_t* gx = components + b * kDims * volume + row;
      components_row<acc_t, acc_t, kDims>(parts, gx, volume, acc_t(1), g.cols);
      const acc_t* gy = gx + volume;
      const acc_t* gz = gy + volume;
      acc_t* m = magnitude + b * volume + row;
      for (int64_t w = 0; w < g.cols; ++w) m[w] = sobel::magnitude(gx[w], gy[w], kDims == 3 ? gz[w] : acc_t(0));
    });
  });
}

// Per-image thresholds: the values given, or numpy-style linear quantiles of the magnitude.
template <typename acc_t>
void thresholds(const acc_t* magnitude, const Geometry& g, double low, double high, bool use_quantiles,
                std::vector<acc_t>& low_of, std::vector<acc_t>& high_of) {
  low_of.assign(static_cast<size_t>(g.images), static_cast<acc_t>(low));
  high_of.assign(static_cast<size_t>(g.images), static_cast<acc_t>(high));
  if (!use_quantiles) return;
  const int64_t n = g.voxels();
  at::parallel_for(0, g.images, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> values;
    for (int64_t b = begin; b < end; ++b) {
      values.assign(magnitude + b * n, magnitude + (b + 1) * n);
      auto quantile = [&](double q) {
        const double position = canny::quantile_position(q, n);
        const int64_t below = static_cast<int64_t>(position);
        std::nth_element(values.begin(), values.begin() + below, values.end());
        const acc_t at_below = values[below];
        const acc_t at_above = below + 1 < n ? *std::min_element(values.begin() + below + 1, values.end()) : at_below;
        return canny::quantile_from(at_below, at_above, position);
      };
      low_of[b] = quantile(low);
      high_of[b] = quantile(high);
    }
  });
}

// Non-maximum suppression and double threshold of every interior voxel.
template <typename acc_t, int kDims>
void classify(const acc_t* components, const acc_t* magnitude, uint8_t* labels, const Geometry& g,
              const std::vector<acc_t>& low_of, const std::vector<acc_t>& high_of) {
  const int64_t volume = g.voxels(), W = g.cols, plane = g.rows * W;
  for_each_row_index(g, [&](int64_t b, int64_t d, int64_t h) {
    const int64_t row = (d * g.rows + h) * W;
    uint8_t* label = labels + b * volume + row;
    std::fill(label, label + W, uint8_t(canny::kNone));  // the border stays kNone
    if (h == 0 || h == g.rows - 1 || (kDims == 3 && (d == 0 || d == g.depth - 1))) return;
    const acc_t* m = magnitude + b * volume + row;
    const acc_t* gx = components + b * kDims * volume + row;
    const acc_t low = low_of[b], high = high_of[b];
    for (int64_t w = 1; w < W - 1; ++w) {
      const acc_t grad[3] = {gx[w], gx[volume + w], kDims == 3 ? gx[2 * volume + w] : acc_t(0)};
      const acc_t* at = m + w;
      label[w] = canny::classify(grad, m[w], low, high, [&](int dw, int dh, int dd) {
        return at[dd * plane + dh * W + dw];
      });
    }
  });
}

// Hysteresis to convergence, the rule of dal/canny.h: every weak voxel connected (8 / 26
// neighbours) to a strong one through weak ones becomes an edge (kReached). Labelled voxels are interior, so their
// neighbours are in range. Each image is cut into slabs along its outer axis (D in 3D, H in 2D),
// enough for every thread to have one: each slab is flooded on its own, then the voxels that
// touch a reached voxel across a slab boundary seed the next round, until no seed is left. A
// flood writes only inside its slab and the seeds are gathered between rounds: no data race.
class Hysteresis {
 public:
  Hysteresis(uint8_t* labels, const Geometry& g)
      : labels_(labels), g_(g), outer_(g.spatial_dims == 3 ? g.depth : g.rows),
        line_(g.spatial_dims == 3 ? g.rows * g.cols : g.cols) {
    canny::any_neighbour(g.spatial_dims, [&](int dd, int dh, int dw) {
      offsets_.push_back((dd * g.rows + dh) * g.cols + dw);
      return false;
    });
    // Inside a parallel region (one image per thread) the flood runs alone: one slab.
    const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
    const int64_t wanted = (threads + g.images - 1) / g.images;
    slabs_per_image_ = std::max<int64_t>(1, std::min<int64_t>(wanted, outer_ / 8));
  }

  void run() {
    const int64_t tasks = g_.images * slabs_per_image_;
    std::vector<std::vector<int64_t>> seeds(static_cast<size_t>(tasks));
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const Slab s = slab(t);
        for (int64_t i = s.begin; i < s.end; ++i)
          if (labels_[i] == canny::kEdge) flood(i, s);
      }
    });
    while (slabs_per_image_ > 1) {
      at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) seeds[t] = seeds_across_boundaries(t);
      });
      bool any = false;
      for (const auto& s : seeds) any = any || !s.empty();
      if (!any) break;
      at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t)
          for (const int64_t i : seeds[t]) flood(i, slab(t));
      });
    }
  }

 private:
  struct Slab {
    int64_t begin, end;  // flat voxel range [begin, end)
  };

  Slab slab(int64_t task) const {
    const int64_t image = task / slabs_per_image_, k = task % slabs_per_image_;
    const int64_t base = image * g_.voxels();
    return {base + outer_ * k / slabs_per_image_ * line_, base + outer_ * (k + 1) / slabs_per_image_ * line_};
  }

  // Marks i reached, then every weak or strong voxel connected to it inside the slab.
  void flood(int64_t i, const Slab& s) {
    if (labels_[i] == canny::kReached) return;
    labels_[i] = canny::kReached;
    std::vector<int64_t>& stack = stack_();
    stack.push_back(i);
    while (!stack.empty()) {
      const int64_t p = stack.back();
      stack.pop_back();
      for (const int64_t o : offsets_) {
        const int64_t q = p + o;
        if (q >= s.begin && q < s.end && canny::is_candidate(labels_[q])) {
          labels_[q] = canny::kReached;
          stack.push_back(q);
        }
      }
    }
  }

  // Unreached candidates on the slab's first and last lines with a reached neighbour outside it.
  std::vector<int64_t> seeds_across_boundaries(int64_t task) const {
    const Slab s = slab(task);
    const int64_t k = task % slabs_per_image_;
    std::vector<int64_t> found;
    auto scan_line = [&](int64_t line_begin, bool look_before) {
      for (int64_t i = line_begin; i < line_begin + line_; ++i) {
        if (!canny::is_candidate(labels_[i])) continue;
        for (const int64_t o : offsets_) {
          const int64_t q = i + o;
          if ((look_before ? q < s.begin : q >= s.end) && labels_[q] == canny::kReached) {
            found.push_back(i);
            break;
          }
        }
      }
    };
    if (k > 0) scan_line(s.begin, true);
    if (k < slabs_per_image_ - 1) scan_line(s.end - line_, false);
    return found;
  }

  static std::vector<int64_t>& stack_() {
    thread_local std::vector<int64_t> stack;
    return stack;
  }

  uint8_t* labels_;
  Geometry g_;
  int64_t outer_, line_, slabs_per_image_;
  std::vector<int64_t> offsets_;
};

struct CannyParams {
  double low, high;
  bool use_hysteresis, use_quantiles;
};

// The whole pipeline over the images of g, in `work` ((kDims + 2) * g.total() values) and
// `labels` (g.total()).
template <typename scalar_t, typename acc_t, int kDims>
void canny_pipeline(const scalar_t* x, bool* edges, const Geometry& g, const std::vector<acc_t>& taps,
                    const CannyParams& p, acc_t* work, uint8_t* labels) {
  const int64_t n = g.total();
  acc_t* smoothed = work;
  acc_t* scratch = work + n;
  // Axes in scipy's order (D, H, W), which smooths the first axis first.
  if (kDims == 3) {
    gaussian_along_d(x, scratch, g, taps);
    gaussian_along_h_and_w(scratch, smoothed, g, taps);
  } else {
    gaussian_along_h_and_w(x, smoothed, g, taps);
  }
  acc_t* magnitude = scratch;  // free again once smoothed
  acc_t* components = work + 2 * n;
  gradient<acc_t, kDims>(smoothed, components, magnitude, g);

  std::vector<acc_t> low_of, high_of;
  thresholds(magnitude, g, p.low, p.high, p.use_quantiles, low_of, high_of);
  classify<acc_t, kDims>(components, magnitude, labels, g, low_of, high_of);
  if (p.use_hysteresis) Hysteresis(labels, g).run();
  const uint8_t kept = canny::lowest_edge_label(p.use_hysteresis);
  at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) edges[i] = labels[i] >= kept;
  });
}

// With at least as many images as threads, each thread runs whole images, one after the other,
// in buffers of one image that stay in its cache (the loops inside then run serially); otherwise
// every step is split over all threads, down to the rows of one volume.
template <typename scalar_t, int kDims>
void canny_kernel(const scalar_t* x, bool* edges, const Geometry& g, double sigma, const CannyParams& p,
                  const at::TensorOptions& acc_options) {
  using acc_t = at::opmath_type<scalar_t>;
  const int radius = canny::gaussian_radius(sigma);
  std::vector<double> taps64(static_cast<size_t>(radius + 1));
  canny::gaussian_taps(sigma, radius, taps64.data());
  const std::vector<acc_t> taps(taps64.begin(), taps64.end());

  if (g.images > 1 && g.images >= at::get_num_threads()) {
    Geometry one = g;
    one.images = 1;
    const int64_t volume = g.voxels();
    at::parallel_for(0, g.images, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> work(static_cast<size_t>((kDims + 2) * volume));
      std::vector<uint8_t> labels(static_cast<size_t>(volume));
      for (int64_t b = begin; b < end; ++b) {
        canny_pipeline<scalar_t, acc_t, kDims>(x + b * volume, edges + b * volume, one, taps, p, work.data(),
                                               labels.data());
      }
    });
  } else {
    at::Tensor work = at::empty({(kDims + 2) * g.total()}, acc_options);
    at::Tensor labels = at::empty({g.total()}, acc_options.dtype(at::kByte));
    canny_pipeline<scalar_t, acc_t, kDims>(x, edges, g, taps, p, work.mutable_data_ptr<acc_t>(),
                                           labels.mutable_data_ptr<uint8_t>());
  }
}

at::Tensor canny_cpu(const at::Tensor& x_in, double low, double high, double sigma, bool use_hysteresis,
                     bool use_quantiles) {
  check_canny_args(x_in, low, high, sigma, use_quantiles);
  const at::Tensor x = x_in.contiguous();
  at::Tensor edges = at::empty(x.sizes(), x.options().dtype(at::kBool));
  if (x.numel() == 0) return edges;
  const Geometry g = geometry_of(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "canny_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_options = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    bool* out = edges.mutable_data_ptr<bool>();
    const CannyParams params{low, high, use_hysteresis, use_quantiles};
    if (g.spatial_dims == 3) {
      canny_kernel<scalar_t, 3>(x.const_data_ptr<scalar_t>(), out, g, sigma, params, acc_options);
    } else {
      canny_kernel<scalar_t, 2>(x.const_data_ptr<scalar_t>(), out, g, sigma, params, acc_options);
    }
  });
  return edges;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CPU, m) { m.impl("canny", &canny_cpu); }

}  // namespace dal
