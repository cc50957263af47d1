// Unit tests of the Sobel math: gradients of linear ramps, and the adjoint taps against the
// transpose of the replicate-border 1D operator built as a matrix.
#include <vector>

#include "check.h"
#include "dal/sobel.h"

using namespace dal::sobel;

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
  double g2[2];
  gradient_2d(n2, g2);
  DAL_CHECK_NEAR(g2[0], 16.0, 1e-12);
  DAL_CHECK_NEAR(g2[1], 24.0, 1e-12);
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
  DAL_TEST_MAIN_END();
}
