// Unit tests of dal_core/common.h.
#include <cmath>
#include <limits>

#include "check.h"
#include "dal/common.h"

int main() {
  // exp_ within 2 ulp-ish (3e-7 relative) of libm over the range softmax uses, and beyond.
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double rel = std::fabs(dal::exp_(x) - std::exp(double(x))) / std::exp(double(x));
    worst = rel > worst ? rel : worst;
  }
  DAL_CHECK(worst < 3e-7);
  DAL_CHECK(dal::exp_(0.0f) == 1.0f);
  DAL_CHECK(dal::exp_(-100.0f) == 0.0f);
  DAL_CHECK(dal::exp_(-std::numeric_limits<float>::infinity()) == 0.0f);
  DAL_CHECK(dal::is_nan(dal::exp_(std::numeric_limits<float>::quiet_NaN())));
  DAL_CHECK(dal::exp_(1.0) == std::exp(1.0));
  DAL_CHECK(dal::clamp_index(-2, 10) == 0 && dal::clamp_index(11, 10) == 9 && dal::clamp_index(4, 10) == 4);
  const dal::Geometry g{3, 2, 4, 5, 6};
  DAL_CHECK(g.voxels() == 120 && g.total() == 240);
  DAL_TEST_MAIN_END();
}
