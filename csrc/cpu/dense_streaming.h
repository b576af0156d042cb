// The streaming forward of the commonest problem: float32 probabilities or
// sigmoid logits against a dense float32 / bool / uint8 target, unit spatial
// stride, no mask and no pixel loss (the textbook loss DiceLoss() replaces).
// It reads each input and target row once, straight into SIMD registers:
// activation, the [0, 1] checks and the statistics in one loop, with no tile
// copies in between. The sums run in the tile code's order (kLanes partial
// sums per 512-position tile, then into the chunk's doubles), so the result
// does not depend on the thread count.
// Compiled once per instruction set: see isa_prologue.h.
#pragma once

#include "tile_loading.h"

#ifndef FD_CPU_ISA_NS
#error "define FD_CPU_ISA_NS before including dense_streaming.h"
#endif

namespace fastdice {
namespace cpu {
namespace FD_CPU_ISA_NS {

// Whether forward_dense_streaming serves this problem (float32 input, activation
// none or sigmoid, no pixel loss: the caller's template parameters).
inline bool dense_streaming_applies(const DiceProblem& pr) {
  const TargetDtype td = pr.target.dtype;
  return !pr.target.is_label && !pr.has_mask() && pr.in_stride_s == 1 && pr.target.stride_s == 1 &&
         (td == TargetDtype::kFloat32 || td == TargetDtype::kBool || td == TargetDtype::kUInt8);
}

typedef uint8_t Byte8 __attribute__((vector_size(8)));

// Eight target values from src[0..8) as floats.
inline Float8 load_target8(const float* src) {
  Float8 v;
  std::memcpy(&v, src, sizeof(v));
  return v;
}
inline Float8 load_target8(const uint8_t* src) {
#if defined(FD_CPU_ISA_AVX2)
  // GCC widens an 8-byte vector element by element (16 scalar instructions):
  // one vpmovzxbd instead.
  const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src))));
  Float8 v;
  std::memcpy(&v, &f, sizeof(v));
  return v;
#else
  Byte8 b;
  std::memcpy(&b, src, sizeof(b));
  return __builtin_convertvector(__builtin_convertvector(b, Int8), Float8);
#endif
}
inline Float8 load_target8(const bool* src) { return load_target8(reinterpret_cast<const uint8_t*>(src)); }

template <Activation kAct>
inline Float8 activate8(Float8 x) {
  if constexpr (kAct == Activation::kSigmoid) {
    const Float8 e = exp_nonpositive_lanes<Float8, UInt8>(x < 0.f ? x : -x);  // exp(-|x|)
    const Float8 r = 1.f / (1.f + e);
    return x >= 0.f ? r : e * r;
  } else {
    return x;
  }
}

inline Float8 min8(Float8 a, Float8 b) { return a < b ? a : b; }
inline Float8 max8(Float8 a, Float8 b) { return a > b ? a : b; }

// The running [0, 1] check of a row: lane-wise min and max (two cheap
// operations per vector, where a compare-and-accumulate takes five); a NaN
// shows in the row's sums instead, which it turns NaN.
struct RangeLanes {
  Float8 lo = Float8{} + 0.f;
  Float8 hi = Float8{} + 1.f;
  void add(Float8 v) {
    lo = min8(lo, v);
    hi = max8(hi, v);
  }
  bool outside() const {
    bool out = false;
    for (int j = 0; j < kLanes; ++j) out |= lo[j] < 0.f || hi[j] > 1.f;
    return out;
  }
};

// Class c of sample b over positions [s_begin, s_end): adds the statistics to
// chunk_acc[0..kAccumulated) and the range of its probabilities (kCheckP) and
// targets to p_range / t_range.
template <Activation kAct, bool kFull, bool kCheckP, typename target_t>
void stream_dense_row(const float* x, const target_t* t, int64_t s_begin, int64_t s_end, double* chunk_acc,
                      RangeLanes& p_range_out, RangeLanes& t_range_out) {
  constexpr int kStats = StatSet<kFull>::kAccumulated;
  constexpr bool kCheckT = !std::is_same<target_t, bool>::value;  // a bool is always 0 or 1
  // Local copies, kept in registers (stores through the references could alias the input).
  RangeLanes p_range = p_range_out, t_range = t_range_out;
  for (int64_t s0 = s_begin; s0 < s_end; s0 += kTile) {
    const int64_t n = std::min(kTile, s_end - s0);
    // Two sets of partial sums: one set's adds form a dependency chain that
    // would bound the loop at one vector per add latency.
    Float8 acc0[kStats] = {}, acc1[kStats] = {};
    auto step = [&](Float8(&acc)[kStats], int64_t i) {
      Float8 xv;
      std::memcpy(&xv, x + s0 + i, sizeof(xv));
      const Float8 tv = load_target8(t + s0 + i);
      const Float8 p = activate8<kAct>(xv);
      if (kCheckP) p_range.add(p);
      if (kCheckT) t_range.add(tv);
      accumulate_element<kFull>(acc, p, tv);
    };
    int64_t i = 0;
    for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
      step(acc0, i);
      step(acc1, i + kLanes);
    }
    if (i + kLanes <= n) {
      step(acc0, i);
      i += kLanes;
    }
    if (i < n) {  // the tail: padding lanes are probability 0 and target 0, as in a tile
      float xs[kLanes] = {}, ts[kLanes] = {};
      int32_t live_lanes[kLanes] = {};
      for (int64_t j = 0; i + j < n; ++j) {
        xs[j] = x[s0 + i + j];
        ts[j] = static_cast<float>(t[s0 + i + j]);
        live_lanes[j] = -1;
      }
      Float8 xv, tv;
      Int8 live;
      std::memcpy(&xv, xs, sizeof(xv));
      std::memcpy(&tv, ts, sizeof(tv));
      std::memcpy(&live, live_lanes, sizeof(live));
      const Float8 p = live != 0 ? activate8<kAct>(xv) : Float8{};
      if (kCheckP) p_range.add(p);
      if (kCheckT) t_range.add(tv);
      accumulate_element<kFull>(acc1, p, tv);
    }
    for (int k = 0; k < kStats; ++k) {
      const Float8 sum = acc0[k] + acc1[k];
      float v = 0;
      for (int j = 0; j < kLanes; ++j) v += sum[j];
      chunk_acc[k] += static_cast<double>(v);
    }
  }
  p_range_out = p_range;
  t_range_out = t_range;
}

// The forward pass of a problem dense_streaming_applies to: partials[item][c][k]
// as forward_impl fills them; flags the chunk items with a target (or, when
// checked, a probability) outside [0, 1]. Each thread takes the class rows
// outermost over its range of chunks, so that it reads one row (and its
// target row) as one long stream rather than switching rows every chunk
// (16 KB): the hardware prefetchers then keep up. Each (chunk, class) sum is
// the same as in chunk order.
template <Activation kAct, bool kFull>
void forward_dense_streaming(const float* x, const DiceProblem& pr, std::vector<double>& partials,
                             std::vector<uint8_t>& target_outside, std::vector<uint8_t>& input_outside) {
  const int64_t C = pr.classes;
  const int64_t per_sample = chunks_per_sample(pr.spatial);
  const bool check_p = !input_outside.empty();
  visit_dense_dtype(pr.target, [&](const auto* target) {
    using target_t = std::remove_cv_t<std::remove_pointer_t<decltype(target)>>;
    if constexpr (std::is_same<target_t, float>::value || std::is_same<target_t, bool>::value ||
                  std::is_same<target_t, uint8_t>::value) {
      parallel_chunk_ranges(pr, [&](int64_t begin, int64_t end) {
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / per_sample;
            const int64_t s_begin = (item % per_sample) * kChunk;
            const int64_t s_end = std::min(s_begin + kChunk, pr.spatial);
            const float* xr = x + pr.input_offset(b, c, 0);
            const target_t* tr = target + pr.dense_target_offset(b, c, 0);
            double* row_acc = partials.data() + (item * C + c) * kNumStats;
            RangeLanes p_range, t_range;
            if (check_p) {
              stream_dense_row<kAct, kFull, true>(xr, tr, s_begin, s_end, row_acc, p_range, t_range);
            } else {
              stream_dense_row<kAct, kFull, false>(xr, tr, s_begin, s_end, row_acc, p_range, t_range);
            }
            if (kFull) row_acc[kValidCount] = static_cast<double>(s_end - s_begin);
            // A NaN anywhere in the row makes its sum NaN (and an infinity is outside the range).
            if (std::isnan(row_acc[kSumTarget]) || t_range.outside()) target_outside[item] = 1;
            if (check_p && (std::isnan(row_acc[kSumProb]) || p_range.outside())) input_outside[item] = 1;
          }
        }
      });
    }
  });
}

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
