// Unit tests of the Sobel math: gradients of linear ramps, and the adjoint taps against the
// transpose of the replicate-border 1D operator built as a matrix.
#include <vector>

#include "check.h"
#include "dal/sobel.h"

using namespace dal::sobel;

static int clamp(int i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// The forward 1D operator with replicate border as an n x n matrix: y_i = sum_o k(o) x_clamp(i+o).
static std::vector<double> forward_matrix(bool derivative, int n) {
  const double k[3] = {derivative ? -1.0 : 1.0, derivative ? 0.0 : 2.0, 1.0};
  std::vector<double> m(static_cast<size_t>(n * n), 0.0);
  for (int i = 0; i < n; ++i) {
    for (int o = -1; o <= 1; ++o) {
      int j = i + o;
      j = j < 0 ? 0 : (j >= n ? n - 1 : j);
      m[static_cast<size_t>(i * n + j)] += k[o + 1];
    }
  }
  return m;
}

int main() {
  // A ramp 2x + 3y (+ 5z): interior Sobel gives 8 * slope in 2D, 32 * slope in 3D.
  double n2[3][3];
  for (int h = 0; h < 3; ++h)
    for (int w = 0; w < 3; ++w) n2[h][w] = 2.0 * w + 3.0 * h;
  double g2[3];
  gradient_2d(n2, g2);
  DAL_CHECK_NEAR(g2[0], 16.0, 1e-12);
  DAL_CHECK_NEAR(g2[1], 24.0, 1e-12);
  DAL_CHECK(g2[2] == 0.0);
  DAL_CHECK_NEAR(scale<double>(2, true) * g2[0], 2.0, 1e-12);

  double n3[3][3][3];
  for (int d = 0; d < 3; ++d)
    for (int h = 0; h < 3; ++h)
      for (int w = 0; w < 3; ++w) n3[d][h][w] = 2.0 * w + 3.0 * h + 5.0 * d;
  double g3[3];
  gradient_3d(n3, g3);
  DAL_CHECK_NEAR(g3[0], 64.0, 1e-12);
  DAL_CHECK_NEAR(g3[1], 96.0, 1e-12);
  DAL_CHECK_NEAR(g3[2], 160.0, 1e-12);
  DAL_CHECK_NEAR(scale<double>(3, true) * g3[2], 5.0, 1e-12);
  DAL_CHECK_NEAR(magnitude(3.0, 4.0), 5.0, 1e-12);
  DAL_CHECK_NEAR(magnitude(2.0, 3.0, 6.0), 7.0, 1e-12);

  // The magnitude's gradient: g / |g|, and 0 at |g| = 0.
  DAL_CHECK_NEAR(magnitude_vjp(2.0, 3.0, 5.0), 1.2, 1e-12);
  DAL_CHECK(magnitude_vjp(2.0, 0.0, 0.0) == 0.0);

  // Adjoint taps equal the transposed forward matrix, for every length and both kernels.
  for (bool derivative : {false, true}) {
    for (int n = 1; n <= 6; ++n) {
      const std::vector<double> m = forward_matrix(derivative, n);
      for (int j = 0; j < n; ++j) {
        double taps[3];
        adjoint_taps(derivative, j, n, taps);
        for (int o = -1; o <= 1; ++o) {
          const int i = j + o;
          const double expected = (i >= 0 && i < n) ? m[static_cast<size_t>(i * n + j)] : 0.0;
          DAL_CHECK_NEAR(taps[o + 1], expected, 1e-12);
        }
      }
    }
  }
  // The row factors and W taps of the adjoint, summed over a voxel's neighbourhood, are the
  // transpose of the forward: <sobel(x), w> = <x, adjoint(w)> for the unit images x and w of a
  // 3 x 4 x 5 volume, component by component.
  const int D = 3, H = 4, W = 5;
  auto at = [&](int d, int h, int w) { return (d * H + h) * W + w; };
  for (int k = 0; k < 3; ++k) {
    std::vector<double> forward(static_cast<size_t>(D * H * W * D * H * W), 0.0);  // [out][in]
    for (int d = 0; d < D; ++d)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w) {
          for (int in = 0; in < D * H * W; ++in) {
            double n[3][3][3];
            for (int a = 0; a < 3; ++a)
              for (int b = 0; b < 3; ++b)
                for (int c = 0; c < 3; ++c)
                  n[a][b][c] = at(clamp(d + a - 1, D), clamp(h + b - 1, H), clamp(w + c - 1, W)) == in ? 1.0 : 0.0;
            double g[3];
            gradient_3d(n, g);
            forward[static_cast<size_t>(at(d, h, w) * D * H * W + in)] = g[k];
          }
        }
    for (int d = 0; d < D; ++d)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w) {
          const RowTaps<double> taps = row_taps<double>(true, d, D, h, H);
          double smooth_w[3], diff_w[3];
          adjoint_taps(false, w, W, smooth_w);
          adjoint_taps(true, w, W, diff_w);
          for (int out = 0; out < D * H * W; ++out) {  // the adjoint of the unit weight at `out`
            double sum = 0;
            for (int a = 0; a < 3; ++a)
              for (int b = 0; b < 3; ++b) {
                double f[3];
                row_factors(taps, a, b, f);
                for (int c = 0; c < 3; ++c) {
                  const int i = at(clamp(d + a - 1, D), clamp(h + b - 1, H), clamp(w + c - 1, W));
                  if (i != out || d + a - 1 < 0 || d + a - 1 >= D || h + b - 1 < 0 || h + b - 1 >= H ||
                      w + c - 1 < 0 || w + c - 1 >= W)
                    continue;  // taps to a neighbour outside the volume are 0 (folded into the ends)
                  sum += f[k] * (k == 0 ? diff_w[c] : smooth_w[c]);
                }
              }
            DAL_CHECK(sum == forward[static_cast<size_t>(out * D * H * W + at(d, h, w))]);
          }
        }
  }
  DAL_TEST_MAIN_END();
}
