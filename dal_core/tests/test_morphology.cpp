// Unit tests of the erode/dilate math against a direct minimum and maximum over each window.
#include <cstdint>
#include <initializer_list>
#include <random>
#include <vector>

#include "check.h"
#include "dal/morphology.h"

using namespace dal::morphology;

int main() {
  DAL_CHECK(extreme<true>(0, 1) == 0 && extreme<true>(1, 1) == 1);
  DAL_CHECK(extreme<false>(0, 1) == 1 && extreme<false>(0, 0) == 0);
  // A line of 0/1 bytes `stride` apart: the extreme at i is that of the clamped window.
  std::mt19937 rng(3);
  for (int64_t size : {1, 2, 5, 9}) {
    for (int64_t radius : {0, 1, 2, 4}) {
      const int64_t stride = 3;
      std::vector<uint8_t> line(static_cast<size_t>(size * stride), 7);  // 7 between the values: never read
      for (int64_t i = 0; i < size; ++i) line[static_cast<size_t>(i * stride)] = static_cast<uint8_t>(rng() % 2);
      for (int64_t i = 0; i < size; ++i) {
        uint8_t lo = 1, hi = 0;
        for (int64_t o = -radius; o <= radius; ++o) {
          const uint8_t v = line[static_cast<size_t>(dal::clamp_index(i + o, size) * stride)];
          lo = v < lo ? v : lo;
          hi = v > hi ? v : hi;
        }
        const uint8_t* at = line.data() + i * stride;
        DAL_CHECK(extreme_along<true>(at, i, size, stride, radius) == lo);
        DAL_CHECK(extreme_along<false>(at, i, size, stride, radius) == hi);
      }
    }
  }
  // The edge does not erode: a full line stays full.
  const std::vector<uint8_t> full(4, 1);
  for (int64_t i = 0; i < 4; ++i) DAL_CHECK(extreme_along<true>(full.data() + i, i, 4, 1, 3) == 1);
  DAL_TEST_MAIN_END();
}
