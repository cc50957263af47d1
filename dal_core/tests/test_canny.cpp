// Unit tests of the Canny math: Gaussian taps, the crossing point of non-maximum suppression,
// classification, and numpy-style quantile interpolation.
#include <cmath>
#include <initializer_list>

#include "check.h"
#include "dal/canny.h"

using namespace dal::canny;

int main() {
  // scipy's radius int(4 sigma + 0.5); taps normalised over the symmetric kernel; decreasing.
  DAL_CHECK(gaussian_radius(1.0) == 4 && gaussian_radius(1.5) == 6 && gaussian_radius(0.0) == 0);
  double taps[7];
  gaussian_taps(1.5, 6, taps);
  double total = taps[0];
  for (int j = 1; j <= 6; ++j) total += 2 * taps[j];
  DAL_CHECK_NEAR(total, 1.0, 1e-15);
  for (int j = 1; j <= 6; ++j) DAL_CHECK(taps[j] < taps[j - 1]);
  DAL_CHECK_NEAR(taps[1] / taps[0], std::exp(-0.5 / (1.5 * 1.5)), 1e-15);
  gaussian_taps(0.0, 0, taps);
  DAL_CHECK(taps[0] == 1.0);

  // A magnitude field m(p) = f(p . n) peaking on the plane through the origin, normal n: the
  // origin is a local maximum along g = n; a point beside the peak is not.
  const double n[3] = {0.8, -0.5, 0.33};
  auto field = [&](double dw, double dh, double dd) {
    const double s = dw * n[0] + dh * n[1] + dd * n[2];
    return 1.0 / (1.0 + s * s / 4.0);
  };
  auto around = [&](double cw, double ch, double cd) {
    return [=](int dw, int dh, int dd) { return field(cw + dw, ch + dh, cd + dd); };
  };
  DAL_CHECK(classify(n, field(0, 0, 0), 0.1, 0.5, around(0, 0, 0)) == kEdge);
  DAL_CHECK(classify(n, field(0, 0, 0), 0.1, 1.5, around(0, 0, 0)) == kWeak);
  DAL_CHECK(classify(n, field(2, 0, 0), 0.1, 0.5, around(2, 0, 0)) == kNone);  // on the slope
  DAL_CHECK(classify(n, field(0, 0, 0), 1.5, 2.0, around(0, 0, 0)) == kNone);  // below low
  const double zero[3] = {0, 0, 0};
  DAL_CHECK(classify(zero, 0.0, 0.0, 0.0, around(0, 0, 0)) == kNone);  // no gradient, no edge

  // The crossing: major axis 0, steps along the signs, weights |g_minor| / |g_major|.
  const double g[3] = {-2.0, 1.0, 0.5};
  const Crossing<double> c = crossing_of(g);
  DAL_CHECK(c.near[0] == -1 && c.near[1] == 0 && c.near[2] == 0);
  DAL_CHECK(c.near_diagonal[0] == -1 && c.near_diagonal[1] == 1 && c.near_diagonal[2] == 0);
  DAL_CHECK(c.far[0] == -1 && c.far[1] == 0 && c.far[2] == 1);
  DAL_CHECK(c.far_diagonal[0] == -1 && c.far_diagonal[1] == 1 && c.far_diagonal[2] == 1);
  DAL_CHECK_NEAR(c.w1, 0.5, 1e-15);
  DAL_CHECK_NEAR(c.w2, 0.25, 1e-15);
  // A linear magnitude is interpolated exactly: at p + g / 2 on the + side.
  auto linear = [](int dw, int dh, int dd) { return 1.0 + 3.0 * dw - 2.0 * dh + 5.0 * dd; };
  DAL_CHECK_NEAR(magnitude_at_crossing(c, 1, linear), 1.0 + 3.0 * -1 - 2.0 * 0.5 + 5.0 * 0.25, 1e-12);
  DAL_CHECK_NEAR(magnitude_at_crossing(c, -1, linear), 1.0 + 3.0 - 2.0 * -0.5 + 5.0 * -0.25, 1e-12);

  // Hysteresis: weak and unreached strong voxels are candidates; 8 neighbours in 2D, 26 in 3D.
  DAL_CHECK(is_candidate(kWeak) && is_candidate(kEdge) && !is_candidate(kNone) && !is_candidate(kReached));
  for (int dims : {2, 3}) {
    int count = 0;
    const bool stopped = any_neighbour(dims, [&](int dd, int dh, int dw) {
      DAL_CHECK((dd || dh || dw) && (dims == 3 || dd == 0));
      ++count;
      return false;
    });
    DAL_CHECK(!stopped && count == (dims == 3 ? 26 : 8));
    count = 0;
    DAL_CHECK(any_neighbour(dims, [&](int, int, int) { return ++count == 3; }) && count == 3);
  }
  DAL_CHECK(lowest_edge_label(true) == kReached && lowest_edge_label(false) == kWeak);

  // numpy.percentile(linear): exact at both ends, linear between.
  DAL_CHECK(quantile_position(0.5, 11) == 5.0);
  DAL_CHECK_NEAR(quantile_from(2.0, 4.0, 7.25), 2.5, 1e-15);
  DAL_CHECK_NEAR(quantile_from(2.0, 4.0, 7.75), 3.5, 1e-15);
  DAL_CHECK(quantile_from(2.0, 4.0, 7.0) == 2.0);
  DAL_TEST_MAIN_END();
}
