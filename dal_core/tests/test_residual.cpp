// Unit tests of the residual score's per-voxel math.
#include <cmath>

#include "check.h"
#include "dal/residual.h"

using namespace dal::residual;

int main() {
  DAL_CHECK(masked_residual(1.0f, 3.5f, true) == 2.5f && masked_residual(4.0f, 3.5f, true) == 0.5f);
  // Outside the mask the value is 0, whatever the residual (no infinity or NaN leaks in).
  DAL_CHECK(masked_residual(1.0f, INFINITY, false) == 0.0f);
  DAL_CHECK(masked_residual(1.0f, NAN, false) == 0.0f && masked_residual(1.0, 3.0, true) == 2.0);
  DAL_TEST_MAIN_END();
}
