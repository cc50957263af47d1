// How the CPU kernels split a volume over threads: by rows, or by blocks of rows, of every plane
// of every image, so that one volume uses every core.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>

#include "dal/common.h"

namespace dal {
namespace cpu {

// Rows per work block: long enough that the two extra D steps at a Sobel block's start cost
// little, short enough that a single 2D image still splits over the cores.
constexpr int64_t kBlockRows = 32;

// Runs body(image, plane, row) for every row of every image, split over all threads.
template <typename Body>
void for_each_row_index(const Geometry& g, const Body& body) {
  const int64_t rows = g.images * g.depth * g.rows;
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(g.cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) body(r / (g.depth * g.rows), (r / g.rows) % g.depth, r % g.rows);
  });
}

// Runs chunk(begin, end) over ranges of the blocks of kBlockRows rows of every plane, split over
// all threads; block(i, body) runs body(image, plane, h0, h1) for block i.
struct RowBlocks {
  const Geometry& g;
  int64_t per_plane = (g.rows + kBlockRows - 1) / kBlockRows;

  template <typename Chunk>
  void parallel(const Chunk& chunk) const {
    at::parallel_for(0, g.images * g.depth * per_plane, 1, chunk);
  }
  template <typename Body>
  void block(int64_t i, const Body& body) const {
    const int64_t plane = i / per_plane, h0 = (i % per_plane) * kBlockRows;
    body(plane / g.depth, plane % g.depth, h0, std::min(h0 + kBlockRows, g.rows));
  }
};

}  // namespace cpu
}  // namespace dal
