// The AVX-512 Sobel magnitude against the portable per-voxel math of dal/sobel.h (gradient_2d /
// gradient_3d, magnitude, scale: what the portable CPU row sweep and the CUDA kernels compute),
// bit for bit: every strip layout (rows of 1 to 100 columns), 2D and 3D, unnormalized and
// normalized, streamed stores, and values whose squares overflow. On a CPU without AVX-512 it
// says so and exits with 77, which CTest reports as skipped.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "dal/sobel.h"
#include "dal/sobel_avx512.h"

#if defined(DAL_SOBEL_AVX512)

using dal::Geometry;
using dal::clamp_index;

// The magnitude of every voxel from its clamped neighbourhood, as the portable kernels compute it.
static std::vector<float> portable(const std::vector<float>& x, const Geometry& g, float scale) {
  std::vector<float> out(static_cast<size_t>(g.total()));
  for (int64_t b = 0; b < g.images; ++b)
    for (int64_t d = 0; d < g.depth; ++d)
      for (int64_t h = 0; h < g.rows; ++h)
        for (int64_t w = 0; w < g.cols; ++w) {
          auto at = [&](int64_t dd, int64_t hh, int64_t ww) {
            return x[static_cast<size_t>(
                ((b * g.depth + clamp_index(dd, g.depth)) * g.rows + clamp_index(hh, g.rows)) * g.cols +
                clamp_index(ww, g.cols))];
          };
          float grad[3];
          if (g.spatial_dims == 3) {
            float n[3][3][3];
            for (int i = 0; i < 3; ++i)
              for (int j = 0; j < 3; ++j)
                for (int k = 0; k < 3; ++k) n[i][j][k] = at(d + i - 1, h + j - 1, w + k - 1);
            dal::sobel::gradient_3d(n, grad);
          } else {
            float n[3][3];
            for (int j = 0; j < 3; ++j)
              for (int k = 0; k < 3; ++k) n[j][k] = at(0, h + j - 1, w + k - 1);
            dal::sobel::gradient_2d(n, grad);
          }
          out[static_cast<size_t>(((b * g.depth + d) * g.rows + h) * g.cols + w)] =
              scale * dal::sobel::magnitude(grad[0], grad[1], grad[2]);
        }
  return out;
}

// The AVX-512 kernel over blocks of 32 rows, as the CPU kernel sweeps them; out 64-byte aligned.
static std::vector<float> avx512(const std::vector<float>& x, const Geometry& g, float scale, bool stream) {
  constexpr int64_t kBlockRows = 32;
  const size_t n = static_cast<size_t>(g.total());
  float* out = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
  for (int64_t b = 0; b < g.images; ++b)
    for (int64_t d = 0; d < g.depth; ++d)
      for (int64_t h0 = 0; h0 < g.rows; h0 += kBlockRows) {
        const int64_t h1 = h0 + kBlockRows < g.rows ? h0 + kBlockRows : g.rows;
        if (g.spatial_dims == 3) {
          dal::sobel::avx512::magnitude_block<3>(x.data(), out, g, b, d, h0, h1, scale, stream, kBlockRows);
        } else {
          dal::sobel::avx512::magnitude_block<2>(x.data(), out, g, b, d, h0, h1, scale, stream, kBlockRows);
        }
      }
  std::vector<float> result(out, out + n);
  std::free(out);
  return result;
}

static void check_same_bits(const Geometry& g, float amplitude, bool normalized, bool stream, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(g.total()));
  for (float& v : x) v = amplitude * uniform(rng);
  const float scale = dal::sobel::scale<float>(g.spatial_dims, normalized);
  const std::vector<float> want = portable(x, g, scale), got = avx512(x, g, scale, stream);
  const bool same = std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0;
  if (!same) {
    std::fprintf(stderr, "differs: %dD, %lld x %lld x %lld x %lld, amplitude %g, normalized %d, stream %d\n",
                 g.spatial_dims, static_cast<long long>(g.images), static_cast<long long>(g.depth),
                 static_cast<long long>(g.rows), static_cast<long long>(g.cols), amplitude, normalized, stream);
  }
  DAL_CHECK(same);
}

int main() {
  if (!__builtin_cpu_supports("avx512f")) {
    std::printf("skipped: this CPU has no AVX-512\n");
    return 77;
  }
  for (int64_t cols = 1; cols <= 100; ++cols) {
    const uint32_t seed = static_cast<uint32_t>(cols);
    check_same_bits(Geometry{3, 2, 3, 4, cols}, 1.0f, cols % 2 == 0, false, seed);
    check_same_bits(Geometry{2, 2, 1, 5, cols}, 1.0f, cols % 2 == 1, false, seed);
  }
  check_same_bits(Geometry{3, 1, 8, 70, 96}, 1.0f, false, true, 1);  // whole cache lines: streamed
  check_same_bits(Geometry{2, 1, 1, 40, 70}, 1e38f, false, false, 2);  // 2 * x past float's largest
  check_same_bits(Geometry{3, 1, 3, 40, 70}, 1e18f, true, false, 3);  // squares past it
  DAL_TEST_MAIN_END();
}

#else

int main() {
  std::printf("skipped: the AVX-512 kernel is built by GCC for x86-64 only\n");
  return 77;
}

#endif
