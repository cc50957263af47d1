// A dependency-free check macro for dal_core's C++ tests: each test binary returns non-zero
// when any check fails, which is all CTest needs.
#pragma once

#include <cmath>
#include <cstdio>

namespace dal_test {
inline int& failures() {
  static int count = 0;
  return count;
}
inline bool near(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1 + std::fabs(b)); }
}  // namespace dal_test

#define DAL_CHECK(cond)                                                           \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++dal_test::failures();                                                     \
    }                                                                             \
  } while (0)

#define DAL_CHECK_NEAR(a, b, tol) DAL_CHECK(dal_test::near((a), (b), (tol)))

#define DAL_TEST_MAIN_END()                                                 \
  do {                                                                      \
    if (dal_test::failures()) {                                             \
      std::fprintf(stderr, "%d check(s) failed\n", dal_test::failures());   \
      return 1;                                                             \
    }                                                                       \
    std::printf("all checks passed\n");                                     \
    return 0;                                                               \
  } while (0)
