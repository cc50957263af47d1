// Unit tests of the one-hot operator's per-pixel math against direct formulas.
#include <cmath>
#include <limits>
#include <vector>

#include "check.h"
#include "dal/onehot.h"

using namespace dal::onehot;

static int argmax_of(const std::vector<double>& z) {
  double best = z[0];
  int32_t best_k = 0;
  for (int32_t k = 1; k < static_cast<int32_t>(z.size()); ++k) argmax_step(best, best_k, z[k], k);
  return best_k;
}

static std::vector<double> vjp_of(const std::vector<double>& z, const std::vector<double>& g,
                                  double tau) {
  double z_max = max_start<double>();
  for (double v : z) z_max = max_step(z_max, v);
  double sum = 0, dot = 0;
  std::vector<double> e(z.size());
  for (size_t k = 0; k < z.size(); ++k) {
    e[k] = softmax_weight(z[k], z_max);
    sum += e[k];
    dot += g[k] * e[k];
  }
  std::vector<double> out(z.size());
  for (size_t k = 0; k < z.size(); ++k) out[k] = softmax_vjp(e[k], g[k], sum, dot, tau);
  return out;
}

int main() {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // Arg-max: ties go to the lowest index, NaN counts as the largest value, first NaN wins.
  DAL_CHECK(argmax_of({0.1, 0.7, 0.3}) == 1);
  DAL_CHECK(argmax_of({0.5, 0.5, 0.5}) == 0);
  DAL_CHECK(argmax_of({-1.0, 2.0, 2.0}) == 1);
  DAL_CHECK(argmax_of({1.0, nan, 3.0, nan}) == 1);
  DAL_CHECK(argmax_of({nan, 5.0}) == 0);
  DAL_CHECK(argmax_of({-std::numeric_limits<double>::infinity(), -1e300}) == 1);
  DAL_CHECK(onehot_value<float>(2, 2) == 1.0f && onehot_value<float>(2, 1) == 0.0f);
  DAL_CHECK(scaled_logit(1.0, 0.5, 0.5) == 3.0);

  // The running max starts below every value and skips NaN, as fmax does.
  DAL_CHECK(max_step(max_start<float>(), -1e30f) == -1e30f);
  DAL_CHECK(max_step(2.0, nan) == 2.0 && max_step(max_start<double>(), nan) == max_start<double>());
  DAL_CHECK(max_step(max_step(max_start<double>(), 1.0), 3.0) == std::fmax(1.0, 3.0));

  // Straight-through gradient equals the softmax Jacobian-vector product, computed directly.
  const std::vector<double> logits = {0.3, -1.2, 2.0, 0.0};
  const std::vector<double> grad = {1.0, -0.5, 0.25, 2.0};
  for (double tau : {0.5, 1.0, 3.0}) {
    std::vector<double> z(logits.size()), s(logits.size());
    for (size_t k = 0; k < z.size(); ++k) z[k] = scaled_logit(logits[k], 0.0, tau);
    double norm = 0;
    for (size_t k = 0; k < z.size(); ++k) norm += std::exp(z[k]);
    for (size_t k = 0; k < z.size(); ++k) s[k] = std::exp(z[k]) / norm;
    const std::vector<double> got = vjp_of(z, grad, tau);
    for (size_t k = 0; k < z.size(); ++k) {
      double expected = 0;  // sum_j g_j ds_j/dlogit_k, ds_j/dz_k = s_j (delta_jk - s_k)
      for (size_t j = 0; j < z.size(); ++j) expected += grad[j] * s[j] * ((j == k) - s[k]) / tau;
      DAL_CHECK_NEAR(got[k], expected, 1e-12);
    }
  }
  // Large logits do not overflow (the max is subtracted first); a constant gradient gives zero.
  const std::vector<double> big = vjp_of({1000.0, 999.0, -1000.0}, {1.0, 1.0, 1.0}, 1.0);
  for (double v : big) DAL_CHECK(std::isfinite(v) && std::fabs(v) < 1e-12);
  // A single class has a constant softmax: zero gradient.
  DAL_CHECK(vjp_of({4.2}, {3.0}, 1.0)[0] == 0.0);
  DAL_TEST_MAIN_END();
}
