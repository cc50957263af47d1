// CUDA kernel of dal::canny: one thread per voxel for the separable Gaussian (dal/canny.h's
// gaussian_step), the Sobel gradient (sobel_cuda.cuh) and non-maximum suppression with double
// threshold (dal/canny.h's classify). Hysteresis runs on tiles in shared memory: each block loads
// its tile of labels with a one-voxel halo, propagates "reached" through weak voxels inside the
// tile until the tile stops changing, writes it back and raises a device flag if anything
// changed; the host relaunches until a pass leaves the flag down (convergence).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "../common.h"
#include "dal/canny.h"
#include "sobel_cuda.cuh"

namespace dal {
namespace {

using namespace cuda;

// The Gaussian's taps in double (dal/canny.h gaussian_taps) and in acc_t, made on the device by
// one thread: a call uploads nothing from the host, and a CUDA graph can capture it.
template <typename acc_t>
__global__ void gaussian_taps_kernel(double sigma, int radius, double* taps64, acc_t* taps) {
  canny::gaussian_taps(sigma, radius, taps64);
  for (int j = 0; j <= radius; ++j) taps[j] = static_cast<acc_t>(taps64[j]);
}

// Gaussian along one axis (0 = D, 1 = H, 2 = W); taps from the centre outwards.
template <typename in_t, typename acc_t>
__global__ void gaussian_kernel(const in_t* __restrict__ in, acc_t* __restrict__ out, Geometry g,
                                const acc_t* __restrict__ taps, int radius, int axis) {
  const int64_t extent = axis == 0 ? g.depth : (axis == 1 ? g.rows : g.cols);
  const int64_t stride = axis == 0 ? g.rows * g.cols : (axis == 1 ? g.cols : 1);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < g.total(); p += int64_t(gridDim.x) * blockDim.x) {
    const Voxel v = voxel_of(p, g);
    const int64_t i = axis == 0 ? v.d : (axis == 1 ? v.h : v.w);
    const int64_t line = p - i * stride;
    acc_t sum = taps[0] * static_cast<acc_t>(in[p]);
    for (int j = radius; j >= 1; --j) {
      sum = canny::gaussian_step(sum, taps[j], static_cast<acc_t>(in[line + clamp_index(i - j, extent) * stride]),
                                 static_cast<acc_t>(in[line + clamp_index(i + j, extent) * stride]));
    }
    out[p] = sum;
  }
}

// Sobel components (images, 3, D, H, W) and magnitude of the smoothed image.
template <typename acc_t>
__global__ void gradient_kernel(const acc_t* __restrict__ smoothed, acc_t* __restrict__ components,
                                acc_t* __restrict__ magnitude, Geometry g) {
  const int64_t volume = g.voxels();
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < g.total(); p += int64_t(gridDim.x) * blockDim.x) {
    const Voxel v = voxel_of(p, g);
    acc_t grad[3];
    gradient_at(smoothed, g, v, grad);
    const int64_t base = v.b * 3 * volume + p % volume;
    for (int k = 0; k < 3; ++k) components[base + k * volume] = grad[k];
    magnitude[p] = sobel::magnitude(grad[0], grad[1], grad[2]);
  }
}

// Per-image quantile thresholds from each image's sorted magnitudes (one thread per image).
template <typename acc_t>
__global__ void quantile_kernel(const acc_t* __restrict__ sorted, int64_t images, int64_t n, double low_q,
                                double high_q, acc_t* __restrict__ low, acc_t* __restrict__ high) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < images; b += int64_t(gridDim.x) * blockDim.x) {
    const acc_t* values = sorted + b * n;
    auto quantile = [&](double q) {
      const double position = canny::quantile_position(q, n);
      const int64_t below = static_cast<int64_t>(position);
      return canny::quantile_from(values[below], values[below + 1 < n ? below + 1 : below], position);
    };
    low[b] = quantile(low_q);
    high[b] = quantile(high_q);
  }
}

// Non-maximum suppression and double threshold; strong voxels get `strong_label`.
template <typename acc_t>
__global__ void classify_kernel(const acc_t* __restrict__ components, const acc_t* __restrict__ magnitude,
                                const acc_t* __restrict__ low, const acc_t* __restrict__ high,
                                uint8_t* __restrict__ labels, Geometry g, uint8_t strong_label) {
  const int64_t volume = g.voxels(), plane = g.rows * g.cols;
  const bool is_3d = g.spatial_dims == 3;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < g.total(); p += int64_t(gridDim.x) * blockDim.x) {
    const Voxel v = voxel_of(p, g);
    const bool interior = v.h > 0 && v.h < g.rows - 1 && v.w > 0 && v.w < g.cols - 1 &&
                          (!is_3d || (v.d > 0 && v.d < g.depth - 1));
    uint8_t label = canny::kNone;
    if (interior) {
      const int64_t base = v.b * 3 * volume + p % volume;
      const acc_t grad[3] = {components[base], components[base + volume], components[base + 2 * volume]};
      label = canny::classify(grad, magnitude[p], low[v.b], high[v.b], [&](int dw, int dh, int dd) {
        return magnitude[p + dd * plane + dh * g.cols + dw];
      });
    }
    labels[p] = label == canny::kEdge ? strong_label : label;
  }
}

// Tiles of hysteresis: kTileW x kTileH x tile_d voxels (tile_d = 1 in 2D), one thread each.
constexpr int kTileW = 32, kTileH = 4, kTileD3 = 4;

// Launches cover at most kMaxGridYZ tiles along y and z (the grid's limit): tile_y0 and tile_z0
// are the first tiles of this launch, along H and along (image, D).
constexpr int64_t kMaxGridYZ = 65535;

__global__ void hysteresis_kernel(uint8_t* labels, Geometry g, int64_t tile_y0, int64_t tile_z0, int* changed) {
  extern __shared__ uint8_t tile[];
  const int tile_d = blockDim.z;
  const int sw = kTileW + 2, sh = kTileH + 2, sd = g.spatial_dims == 3 ? tile_d + 2 : 1;
  const int64_t tiles_d = (g.depth + tile_d - 1) / tile_d;
  const int64_t tile_z = tile_z0 + blockIdx.z;
  const int64_t b = tile_z / tiles_d;
  const int64_t d0 = (tile_z % tiles_d) * tile_d, h0 = (tile_y0 + blockIdx.y) * kTileH, w0 = int64_t(blockIdx.x) * kTileW;
  const int halo_d = g.spatial_dims == 3 ? 1 : 0;
  uint8_t* image = labels + b * g.voxels();

  // Load the tile and its halo (outside the image: no label).
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  const int me = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  for (int s = me; s < sw * sh * sd; s += threads) {
    const int64_t w = w0 + s % sw - 1, h = h0 + (s / sw) % sh - 1, d = d0 + s / (sw * sh) - halo_d;
    const bool inside = w >= 0 && w < g.cols && h >= 0 && h < g.rows && d >= 0 && d < g.depth;
    tile[s] = inside ? image[(d * g.rows + h) * g.cols + w] : uint8_t(canny::kNone);
  }
  __syncthreads();

  const int64_t w = w0 + threadIdx.x, h = h0 + threadIdx.y, d = d0 + threadIdx.z;
  const bool mine = w < g.cols && h < g.rows && d < g.depth;
  const int s_me = ((threadIdx.z + halo_d) * sh + threadIdx.y + 1) * sw + threadIdx.x + 1;
  bool tile_changed = false;
  while (true) {
    bool grew = false;
    if (mine && canny::is_candidate(tile[s_me])) {
      grew = canny::any_neighbour(g.spatial_dims, [&](int dd, int dh, int dw) {
        return tile[s_me + (dd * sh + dh) * sw + dw] == canny::kReached;
      });
      // Labels only ever go weak -> reached, so a neighbour read while another thread writes
      // it sees either value, and the next sweep catches up.
      if (grew) tile[s_me] = canny::kReached;
    }
    if (!__syncthreads_or(grew)) break;
    tile_changed = true;
  }
  if (mine && tile[s_me] == canny::kReached) image[(d * g.rows + h) * g.cols + w] = canny::kReached;
  if (tile_changed && me == 0) atomicExch(changed, 1);
}

at::Tensor canny_cuda(const at::Tensor& x_in, double low, double high, double sigma, bool use_hysteresis,
                      bool use_quantiles) {
  check_canny_args(x_in, low, high, sigma, use_quantiles);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  if (x.numel() == 0) return at::zeros(x.sizes(), x.options().dtype(at::kBool));
  const Geometry g = geometry_of(x);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t n = g.total();
  at::Tensor labels = at::empty({n}, x.options().dtype(at::kByte));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "canny_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_options = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    const int radius = canny::gaussian_radius(sigma);
    const at::Tensor taps64 = at::empty({radius + 1}, x.options().dtype(at::kDouble));
    const at::Tensor taps = std::is_same_v<acc_t, double> ? taps64 : at::empty({radius + 1}, acc_options);
    gaussian_taps_kernel<acc_t><<<1, 1, 0, stream>>>(sigma, radius, taps64.mutable_data_ptr<double>(),
                                                     taps.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    // Gaussian along D (3D), H, W: scipy's order.
    at::Tensor a = at::empty({n}, acc_options), b = at::empty({n}, acc_options);
    const acc_t* t = taps.const_data_ptr<acc_t>();
    if (g.spatial_dims == 3) {
      gaussian_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), b.mutable_data_ptr<acc_t>(), g, t, radius, 0);
      gaussian_kernel<acc_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
          b.const_data_ptr<acc_t>(), a.mutable_data_ptr<acc_t>(), g, t, radius, 1);
    } else {
      gaussian_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), a.mutable_data_ptr<acc_t>(), g, t, radius, 1);
    }
    gaussian_kernel<acc_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
        a.const_data_ptr<acc_t>(), b.mutable_data_ptr<acc_t>(), g, t, radius, 2);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    at::Tensor components = at::empty({3 * n}, acc_options);
    at::Tensor& magnitude = a;  // free again once smoothed (in b)
    gradient_kernel<acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
        b.const_data_ptr<acc_t>(), components.mutable_data_ptr<acc_t>(), magnitude.mutable_data_ptr<acc_t>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    at::Tensor low_of = at::full({g.images}, low, acc_options), high_of = at::full({g.images}, high, acc_options);
    if (use_quantiles) {
      const at::Tensor sorted = std::get<0>(magnitude.view({g.images, g.voxels()}).sort(1)).contiguous();
      quantile_kernel<acc_t><<<blocks_for(g.images), kThreads, 0, stream>>>(
          sorted.const_data_ptr<acc_t>(), g.images, g.voxels(), low, high, low_of.mutable_data_ptr<acc_t>(),
          high_of.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    classify_kernel<acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
        components.const_data_ptr<acc_t>(), magnitude.const_data_ptr<acc_t>(), low_of.const_data_ptr<acc_t>(),
        high_of.const_data_ptr<acc_t>(), labels.mutable_data_ptr<uint8_t>(), g,
        use_hysteresis ? uint8_t(canny::kReached) : uint8_t(canny::kEdge));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  if (use_hysteresis) {
    const int tile_d = g.spatial_dims == 3 ? kTileD3 : 1;
    const dim3 block(kTileW, kTileH, tile_d);
    const int64_t tiles_w = (g.cols + kTileW - 1) / kTileW, tiles_h = (g.rows + kTileH - 1) / kTileH;
    const int64_t tiles_z = g.images * ((g.depth + tile_d - 1) / tile_d);
    const size_t shared = size_t(kTileW + 2) * (kTileH + 2) * (g.spatial_dims == 3 ? tile_d + 2 : 1);
    at::Tensor changed = at::empty({1}, x.options().dtype(at::kInt));
    do {
      changed.zero_();
      for (int64_t z0 = 0; z0 < tiles_z; z0 += kMaxGridYZ) {
        for (int64_t y0 = 0; y0 < tiles_h; y0 += kMaxGridYZ) {
          const dim3 grid(static_cast<unsigned>(tiles_w), static_cast<unsigned>(std::min(kMaxGridYZ, tiles_h - y0)),
                          static_cast<unsigned>(std::min(kMaxGridYZ, tiles_z - z0)));
          hysteresis_kernel<<<grid, block, shared, stream>>>(labels.mutable_data_ptr<uint8_t>(), g, y0, z0,
                                                             changed.mutable_data_ptr<int>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    } while (changed.item<int>() != 0);
  }
  return labels.ge(canny::lowest_edge_label(use_hysteresis)).view(x.sizes());
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CUDA, m) { m.impl("canny", &canny_cuda); }

}  // namespace dal
