// The float32 Sobel magnitude on CPUs with AVX-512, the one kernel written in intrinsics: every
// step in registers, nothing stored but the output.
//
// A block of rows (the CPU kernels' blocks of one plane) is swept in column strips of 2 or 3
// vectors of 16 floats. Down a strip, each new input row is stepped along D and W in registers:
// one D step per vector, plus one on the 16 columns around the strip, and the W neighbours taken
// from the adjacent vectors by valignd. The parts of the three rows around the output row stay in
// registers, so the H step, the magnitude and the square root (vsqrtps, exact) run with no L1
// traffic, where the portable row sweep (csrc/cpu/sobel_cpu.h) stores three ring rows and loads
// eight per output vector. The steps are those of dal/sobel.h, in its order (D, W, H), and
// dal_core/tests/test_sobel_avx512.cpp holds the two to the same bits.
//
// A strip walks down its rows, which hardware prefetchers do not follow well: each row also
// prefetches the newest input plane a block's rows ahead, where the next block will read it.
//
// The build targets any x86-64 CPU: only this file's functions are compiled for AVX-512 (GCC's
// target pragma), and callers run them only on CPUs that have it. No multiply-add is fused
// (setup.py: -ffp-contract=off), so the strips round exactly as the portable steps do.
#pragma once

#include "dal/common.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DAL_SOBEL_AVX512 1
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#pragma GCC push_options
#pragma GCC target("avx512f")

namespace dal {
namespace sobel {
namespace avx512 {

// Outputs at least this large are written with streaming stores, which skip the read of each
// output line before its write and leave the input in the cache. Smaller ones stay in the cache
// for the op that reads them next.
constexpr int64_t kStreamingBytes = int64_t(16) << 20;

// GCC 12 warns that the unmasked forms of valignd and vsqrtps read an uninitialised register (its
// bug 105593): the all-lanes masked forms below are the same instructions.
constexpr __mmask16 kAllLanes = 0xffff;

inline __m512 smooth(__m512 before, __m512 at, __m512 after) {  // dal/sobel.h smooth: 2 * at + (before + after)
  return _mm512_add_ps(_mm512_add_ps(at, at), _mm512_add_ps(before, after));
}

// Lanes 15 of `before` and 0-14 of `at`: each lane's left neighbour.
inline __m512 from_left(__m512 before, __m512 at) {
  return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(kAllLanes, _mm512_castps_si512(at), _mm512_castps_si512(before), 15));
}

// Lanes 1-15 of `at` and 0 of `after`: each lane's right neighbour.
inline __m512 from_right(__m512 at, __m512 after) {
  return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(kAllLanes, _mm512_castps_si512(after), _mm512_castps_si512(at), 1));
}

// The input columns of a strip of K vectors from vector v0, in a row of `cols` columns extended
// by its end columns (the replicate border). kBorder: the strip holds column 0 or reaches within 8
// columns of the row's end; other strips load whole vectors only.
template <int K, bool kBorder>
struct StripColumns {
  int64_t first, cols;  // first = the strip's first column
  __mmask16 inside[K];  // the lanes of each vector inside the row
  __mmask16 right_inside;  // those of the 8 columns right of the strip

  StripColumns(int64_t v0, int64_t cols_) : first(16 * v0), cols(cols_) {
    auto lanes = [&](int64_t column, int64_t most) {
      return static_cast<__mmask16>((1u << std::clamp<int64_t>(cols - column, 0, most)) - 1);
    };
    for (int k = 0; k < K; ++k) inside[k] = lanes(first + 16 * k, 16);
    right_inside = lanes(first + 16 * K, 8);
  }

  __m512 vector(const float* row, int k) const {
    if (!kBorder || inside[k] == kAllLanes) return _mm512_loadu_ps(row + first + 16 * k);
    return _mm512_mask_loadu_ps(_mm512_set1_ps(row[cols - 1]), inside[k], row + first + 16 * k);
  }

  // The 16 columns around the strip in one vector: lanes 0-7 the 8 right of it, lanes 8-15 the 8
  // left of it, so that lane 15 is the left neighbour of its first column and lane 0 the right
  // neighbour of its last (from_left, from_right). One D step on it serves both sides.
  __m512 around(const float* row) const {
    if (!kBorder) {
      return _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(0x00ff, row + first + 16 * K), 0xff00, row + first - 16);
    }
    const __m512 right = _mm512_mask_loadu_ps(_mm512_set1_ps(row[cols - 1]), right_inside, row + first + 16 * K);
    if (first == 0) return _mm512_mask_blend_ps(0xff00, right, _mm512_set1_ps(row[0]));
    return _mm512_mask_loadu_ps(right, 0xff00, row + first - 16);
  }
};

// The magnitude of rows h0 <= h < h1 of plane d of image b, columns of vectors v0 to v0 + K - 1,
// times `scale` if kScaled. `stream`: write with streaming stores where a vector fills a cache
// line. Each row prefetches the input `block_rows` rows ahead.
template <int kDims, int K, bool kScaled, bool kBorder>
inline void magnitude_strip(const float* x, float* out, const Geometry& g, int64_t b, int64_t d, int64_t h0,
                            int64_t h1, float scale, bool stream, int64_t block_rows, int64_t v0) {
  const StripColumns<K, kBorder> columns(v0, g.cols);
  const int64_t W = g.cols, rows = g.rows, plane_size = rows * W;
  const float* const image = x + b * g.depth * plane_size;
  const float* const before = image + clamp_index(d - 1, g.depth) * plane_size;
  const float* const at = image + d * plane_size;
  const float* const after = image + clamp_index(d + 1, g.depth) * plane_size;
  auto row_offset = [&](int64_t h) __attribute__((always_inline)) { return clamp_index(h, rows) * W; };
  // The parts of input row h for the strip (dal/sobel.h Parts, here per vector): px = d/dw
  // of the D-smoothed row, py = its smoothing along W, pz = the W smoothing of the D derivative.
  auto row_parts = [&](int64_t h, __m512* px, __m512* py, __m512* pz) __attribute__((always_inline)) {
    const int64_t row = row_offset(h);
    // D steps of the strip's vectors (0 to K - 1) and of the columns around it (K).
    __m512 smoothed[K + 1], derived[K + 1];
    auto d_steps = [&](int k, auto load) __attribute__((always_inline)) {
      if constexpr (kDims == 3) {
        const __m512 a = load(before + row), c = load(after + row);
        smoothed[k] = smooth(a, load(at + row), c);
        derived[k] = _mm512_sub_ps(c, a);
      } else {
        smoothed[k] = load(at + row);
      }
    };
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) d_steps(k, [&](const float* r) { return columns.vector(r, k); });
    d_steps(K, [&](const float* r) { return columns.around(r); });
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) {
      const int left_of = k == 0 ? K : k - 1, right_of = k == K - 1 ? K : k + 1;
      const __m512 left = from_left(smoothed[left_of], smoothed[k]), right = from_right(smoothed[k], smoothed[right_of]);
      px[k] = _mm512_sub_ps(right, left);
      py[k] = smooth(left, smoothed[k], right);
      if constexpr (kDims == 3) {
        pz[k] = smooth(from_left(derived[left_of], derived[k]), derived[k], from_right(derived[k], derived[right_of]));
      }
    }
  };
  // With rows of whole cache lines, every whole output vector is one.
  const bool streamed = stream && W % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 64 == 0;
  // Prefetches read `after` block_rows rows ahead of the newest row, flat: past the plane's last
  // row, into the next planes and images, up to the end of x.
  const int64_t prefetch_end = g.total() - (after - x) - 16 * (v0 + K);
  const __m512 scale16 = _mm512_set1_ps(scale);
  // Parts of rows h - 1 (0), h (1) and h + 1 (2) around output row h.
  __m512 x0[K], y0[K], z0[K], x1[K], y1[K], z1[K];
  row_parts(h0 - 1, x0, y0, z0);
  row_parts(h0, x1, y1, z1);
  float* o = out + (at - x) + h0 * W + 16 * v0;
  for (int64_t h = h0; h < h1; ++h, o += W) {
    __m512 x2[K], y2[K], z2[K];
    row_parts(h + 1, x2, y2, z2);
    const int64_t ahead = (h + 1 + block_rows) * W;
    if (ahead <= prefetch_end) {
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) _mm_prefetch(reinterpret_cast<const char*>(after + ahead + 16 * (v0 + k)), _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) {
      // dal/sobel.h magnitude's sum, unfused: (gx^2 + gy^2) + gz^2.
      const __m512 gx = smooth(x0[k], x1[k], x2[k]), gy = _mm512_sub_ps(y2[k], y0[k]);
      __m512 squares = _mm512_add_ps(_mm512_mul_ps(gx, gx), _mm512_mul_ps(gy, gy));
      if constexpr (kDims == 3) {
        const __m512 gz = smooth(z0[k], z1[k], z2[k]);
        squares = _mm512_add_ps(squares, _mm512_mul_ps(gz, gz));
      }
      __m512 magnitude = _mm512_maskz_sqrt_ps(kAllLanes, squares);
      if constexpr (kScaled) magnitude = _mm512_mul_ps(scale16, magnitude);
      if (kBorder && columns.inside[k] != kAllLanes) {
        _mm512_mask_storeu_ps(o + 16 * k, columns.inside[k], magnitude);
      } else if (streamed) {
        _mm512_stream_ps(o + 16 * k, magnitude);
      } else {
        _mm512_storeu_ps(o + 16 * k, magnitude);
      }
      x0[k] = x1[k], y0[k] = y1[k], z0[k] = z1[k];
      x1[k] = x2[k], y1[k] = y2[k], z1[k] = z2[k];
    }
  }
}

// The magnitude of rows h0 <= h < h1 of plane d of image b, all columns, in a sweep by blocks of
// `block_rows` rows (the prefetch distance).
template <int kDims>
inline void magnitude_block(const float* x, float* out, const Geometry& g, int64_t b, int64_t d, int64_t h0,
                            int64_t h1, float scale, bool stream, int64_t block_rows) {
  const int64_t W = g.cols, vector_count = (W + 15) / 16;
  auto strip = [&](auto width, auto scaled, int64_t v0) {
    constexpr int K = decltype(width)::value;
    if (v0 >= 1 && 16 * (v0 + K) + 8 <= W) {
      magnitude_strip<kDims, K, decltype(scaled)::value, false>(x, out, g, b, d, h0, h1, scale, stream, block_rows, v0);
    } else {
      magnitude_strip<kDims, K, decltype(scaled)::value, true>(x, out, g, b, d, h0, h1, scale, stream, block_rows, v0);
    }
  };
  // Strips of 3 vectors, the most whose 18 parts fit in the 32 registers, and of 2 where 3 do not
  // divide the row (10 vectors: 3 + 3 + 2 + 2): a wider strip spends less on the D step around it.
  for (int64_t v0 = 0; v0 < vector_count;) {
    const int64_t left = vector_count - v0;
    const bool three = left == 3 || left >= 5;
    const bool scaled = scale != 1.0f;  // unnormalized: no multiply by 1
    using Two = std::integral_constant<int, 2>;
    using Three = std::integral_constant<int, 3>;
    if (three) {
      scaled ? strip(Three{}, std::true_type{}, v0) : strip(Three{}, std::false_type{}, v0);
    } else {
      scaled ? strip(Two{}, std::true_type{}, v0) : strip(Two{}, std::false_type{}, v0);
    }
    v0 += three ? 3 : 2;
  }
  if (stream) _mm_sfence();  // order the streaming stores before the threads join
}

}  // namespace avx512
}  // namespace sobel
}  // namespace dal

#pragma GCC pop_options
#endif
