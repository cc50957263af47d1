// Unit tests of the median merge networks against std::nth_element and std::sort.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "check.h"
#include "dal/median.h"

using namespace dal::median;

// Fills `lists` sorted lists of `length` random values (few distinct ones when `ties`).
static std::vector<float> sorted_lists(std::mt19937& rng, int32_t lists, int32_t length, bool ties) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> wires(static_cast<size_t>(lists * length));
  for (float& v : wires) v = ties ? std::round(uniform(rng) * 2.0f) : uniform(rng);
  for (int32_t l = 0; l < lists; ++l) std::sort(wires.begin() + l * length, wires.begin() + (l + 1) * length);
  return wires;
}

static void check_merge(std::mt19937& rng, int32_t lists, int32_t length, bool ties) {
  const Network net = merge_network(lists, length, all_ranks(lists * length));
  std::vector<float> wires = sorted_lists(rng, lists, length, ties);
  std::vector<float> expected = wires;
  std::sort(expected.begin(), expected.end());
  run(net.ops.data(), static_cast<int32_t>(net.ops.size()), wires.data());
  for (int32_t r = 0; r < lists * length; ++r) DAL_CHECK(wires[net.outputs[r]] == expected[r]);
}

// The three stages on one random window equal the median of its values.
static void check_window(std::mt19937& rng, int32_t kz, int32_t k, bool ties) {
  const Plan plan = make_plan(kz, k, k);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> window(static_cast<size_t>(kz * k * k));  // [x][y][z]
  for (float& v : window) v = ties ? std::round(uniform(rng) * 3.0f) : uniform(rng);
  std::vector<float> planes(window.size());  // kx sorted plane lists
  for (int32_t x = 0; x < k; ++x) {
    std::vector<float> columns(static_cast<size_t>(kz * k));
    for (int32_t y = 0; y < k; ++y) {
      std::vector<float> column(window.begin() + (x * k + y) * kz, window.begin() + (x * k + y + 1) * kz);
      run(plan.column.ops.data(), static_cast<int32_t>(plan.column.ops.size()), column.data());
      for (int32_t z = 0; z < kz; ++z) columns[y * kz + z] = column[plan.column.outputs[z]];
    }
    run(plan.plane.ops.data(), static_cast<int32_t>(plan.plane.ops.size()), columns.data());
    for (int32_t j = 0; j < kz * k; ++j) planes[x * kz * k + j] = columns[plan.plane.outputs[j]];
  }
  const int32_t length = plan.plane_length();
  for (int32_t i = 0; i < plan.pairs(); ++i) {  // lists 2i and 2i + 1 -> one sorted pair list
    float* pair = planes.data() + 2 * i * length;
    std::vector<float> merged(static_cast<size_t>(2 * length));
    run(plan.pair.ops.data(), static_cast<int32_t>(plan.pair.ops.size()), pair);
    for (int32_t j = 0; j < 2 * length; ++j) merged[j] = pair[plan.pair.outputs[j]];
    std::copy(merged.begin(), merged.end(), pair);
  }
  float* window_wires = planes.data();
  if (plan.has_quad()) {  // pairs 0 and 1 -> the trimmed quad, just before the other lists
    run(plan.quad.ops.data(), static_cast<int32_t>(plan.quad.ops.size()), planes.data());
    std::vector<float> trimmed(static_cast<size_t>(plan.quad_length));
    for (int32_t j = 0; j < plan.quad_length; ++j) trimmed[j] = planes[plan.quad.outputs[j]];
    window_wires = planes.data() + 4 * length - plan.quad_length;
    std::copy(trimmed.begin(), trimmed.end(), window_wires);
  }
  run(plan.window.ops.data(), static_cast<int32_t>(plan.window.ops.size()), window_wires);
  std::vector<float> sorted = window;
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  DAL_CHECK(window_wires[plan.window.outputs[0]] == sorted[sorted.size() / 2]);
}

int main() {
  std::mt19937 rng(7);
  for (int32_t lists = 1; lists <= 7; ++lists) {
    for (int32_t length : {1, 2, 3, 5, 7, 9, 25}) {
      check_merge(rng, lists, length, false);
      check_merge(rng, lists, length, true);
    }
  }
  for (int32_t k : {1, 3, 5, 7}) {
    for (int32_t trial = 0; trial < 20; ++trial) {
      check_window(rng, 1, k, trial % 2 == 0);
      check_window(rng, k, k, trial % 2 == 0);
    }
  }
  // Pruning keeps only what the median needs: far fewer operations than the full merge.
  const Plan plan = make_plan(5, 5, 5);
  const Network full = merge_network(5, 25, all_ranks(125));
  DAL_CHECK(plan.window.ops.size() < full.ops.size());
  DAL_CHECK(plan.pairs() == 2 && make_plan(3, 3, 3).pairs() == 0 && make_plan(1, 7, 7).pairs() == 3);
  DAL_CHECK(plan.has_quad() && plan.quad_first == 37 && plan.quad_length == 26);  // ranks 37..62 of 100
  // Lists of unequal lengths merge too.
  {
    const Network net = merge_network(std::vector<int32_t>{4, 1, 6}, all_ranks(11));
    std::vector<float> wires = {0.5f, 1.5f, 2.0f, 9.0f, 1.0f, -3.0f, 0.0f, 0.5f, 2.5f, 3.0f, 7.0f};
    std::vector<float> expected = wires;
    std::sort(expected.begin(), expected.end());
    run(net.ops.data(), static_cast<int32_t>(net.ops.size()), wires.data());
    for (int32_t r = 0; r < 11; ++r) DAL_CHECK(wires[net.outputs[r]] == expected[r]);
  }
  DAL_CHECK(plan.window.outputs.size() == 1);
  DAL_TEST_MAIN_END();
}
