// The fixed-order reduction of per-chunk partials shared by the CPU kernels:
// out[b, r] = sum over chunks q (in order) of partials[b, q, r]. The chunking
// does not depend on the thread count, so neither does the result.
#pragma once

#include <cstdint>
#include <vector>

namespace fastdice {
namespace cpu {

template <typename partial_t, typename out_t>
void reduce_chunk_partials(const std::vector<partial_t>& partials, int64_t batch, int64_t chunks_per_sample,
                           int64_t row_size, out_t* out) {
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r = 0; r < row_size; ++r) {
      partial_t s = 0;
      for (int64_t q = 0; q < chunks_per_sample; ++q) s += partials[(b * chunks_per_sample + q) * row_size + r];
      out[b * row_size + r] = static_cast<out_t>(s);
    }
  }
}

}  // namespace cpu
}  // namespace fastdice
