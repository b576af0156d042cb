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
  Byte8 b;
  std::memcpy(&b, src, sizeof(b));
  return __builtin_convertvector(__builtin_convertvector(b, Int8), Float8);
}
inline Float8 load_target8(const bool* src) { return load_target8(reinterpret_cast<const uint8_t*>(src)); }

// Lanes where v lies outside [0, 1] or is NaN: all ones.
inline Int8 outside_unit8(Float8 v) { return ~((v >= 0.f) & (v <= 1.f)); }

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

// Class c of sample b over positions [s_begin, s_end): adds the statistics to
// chunk_acc[0..kAccumulated); ORs into *p_outside / *t_outside lanes with a
// probability (activation none, when checked) / target outside [0, 1].
template <Activation kAct, bool kFull, bool kCheckP, typename target_t>
void stream_dense_row(const float* x, const target_t* t, int64_t s_begin, int64_t s_end, double* chunk_acc,
                      Int8& p_outside, Int8& t_outside) {
  constexpr int kStats = StatSet<kFull>::kAccumulated;
  constexpr bool kCheckT = !std::is_same<target_t, bool>::value;  // a bool is always 0 or 1
  for (int64_t s0 = s_begin; s0 < s_end; s0 += kTile) {
    const int64_t n = std::min(kTile, s_end - s0);
    Float8 acc[kStats] = {};
    auto step = [&](Float8 xv, Float8 tv, Int8 live) {
      const Float8 p = activate8<kAct>(xv);
      if (kCheckP) p_outside |= outside_unit8(p) & live;
      if (kCheckT) t_outside |= outside_unit8(tv) & live;
      accumulate_element<kFull>(acc, p, tv);
    };
    const Int8 all = Int8{} - 1;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      Float8 xv;
      std::memcpy(&xv, x + s0 + i, sizeof(xv));
      step(xv, load_target8(t + s0 + i), all);
    }
    if (i < n) {  // the tail, zero-padded as a tile is (p = activation(0) is then masked out below)
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
      // Padding positions are probability 0 and target 0, as in a tile.
      const Float8 p = activate8<kAct>(xv);
      const Float8 p_live = live != 0 ? p : Float8{};
      if (kCheckP) p_outside |= outside_unit8(p) & live;
      if (kCheckT) t_outside |= outside_unit8(tv) & live;
      accumulate_element<kFull>(acc, p_live, tv);
    }
    for (int k = 0; k < kStats; ++k) {
      float s = 0;
      for (int j = 0; j < kLanes; ++j) s += acc[k][j];
      chunk_acc[k] += static_cast<double>(s);
    }
  }
}

// The forward pass of a problem dense_streaming_applies to: partials[item][c][k]
// as forward_impl fills them; flags the chunk items with a target (or, when
// checked, a probability) outside [0, 1].
template <Activation kAct, bool kFull>
void forward_dense_streaming(const float* x, const DiceProblem& pr, std::vector<double>& partials,
                             std::vector<uint8_t>& target_outside, std::vector<uint8_t>& input_outside) {
  const int64_t C = pr.classes;
  const int64_t per_sample = chunks_per_sample(pr.spatial);
  const int64_t items = pr.batch * per_sample;
  const bool check_p = !input_outside.empty();
  visit_dense_dtype(pr.target, [&](const auto* target) {
    using target_t = std::remove_cv_t<std::remove_pointer_t<decltype(target)>>;
    if constexpr (std::is_same<target_t, float>::value || std::is_same<target_t, bool>::value ||
                  std::is_same<target_t, uint8_t>::value) {
      at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t b = item / per_sample;
          const int64_t s_begin = (item % per_sample) * kChunk;
          const int64_t s_end = std::min(s_begin + kChunk, pr.spatial);
          double* acc = partials.data() + item * C * kNumStats;
          Int8 p_outside = {}, t_outside = {};
          for (int64_t c = 0; c < C; ++c) {
            const float* xr = x + pr.input_offset(b, c, 0);
            const target_t* tr = target + pr.dense_target_offset(b, c, 0);
            if (check_p) {
              stream_dense_row<kAct, kFull, true>(xr, tr, s_begin, s_end, acc + c * kNumStats, p_outside, t_outside);
            } else {
              stream_dense_row<kAct, kFull, false>(xr, tr, s_begin, s_end, acc + c * kNumStats, p_outside, t_outside);
            }
          }
          if (kFull) {
            for (int64_t c = 0; c < C; ++c) acc[c * kNumStats + kValidCount] = static_cast<double>(s_end - s_begin);
          }
          bool any_t = false, any_p = false;
          for (int j = 0; j < kLanes; ++j) {
            any_t |= t_outside[j] != 0;
            any_p |= p_outside[j] != 0;
          }
          if (any_t) target_outside[item] = 1;
          if (any_p) input_outside[item] = 1;
        }
      });
    }
  });
}

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
