// The forward CPU kernel of fastdice::dice_stats: per (sample, class) the
// statistics of every chunk (the softmax + label-map SIMD path, or the general
// tile code: load, activate, accumulate, pixel loss), then their fixed-order
// reduction. Compiled once per instruction set by dice_cpu_forward_<isa>.cpp
// (see isa_prologue.h); entry point dice_stats_forward (dice_cpu_isa.h).
#pragma once

#include "dense_streaming.h"
#include "pixel_terms.h"
#include "softmax_label_kernels.h"

#ifndef FD_CPU_ISA_NS
#error "define FD_CPU_ISA_NS before including forward_kernels.h"
#endif

namespace fastdice {
namespace cpu {
namespace FD_CPU_ISA_NS {

// acc[k][j]: lane j of statistic k, seen by accumulate_element as acc[k].
template <typename acc_t>
struct LaneView {
  acc_t (*lanes)[kLanes];
  int j;
  acc_t& operator[](int k) const { return lanes[k][j]; }
};

// Adds class c's statistics over the tile to chunk_acc[0..kNumStats).
template <Activation kAct, bool kFull, typename acc_t>
void accumulate_class(Tile<acc_t>& tile, int64_t c, bool is_label, double* chunk_acc) {
  constexpr int kStats = StatSet<kFull>::kAccumulated;
  acc_t lanes[kStats][kLanes] = {};
  const acc_t* x = tile.row(c);
  const acc_t* inv = tile.inv.data();
  if (is_label) {
    const int32_t* labels = tile.labels.data();
    const int32_t cls = static_cast<int32_t>(c);
    for (int64_t i = 0; i < kTile; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const int32_t l = labels[i + j];
        const acc_t p = l >= 0 ? prob<kAct>(x, inv, i + j) : acc_t(0);  // ignored: leaves every sum
        const acc_t t = l == cls ? acc_t(1) : acc_t(0);
        accumulate_element<kFull>(LaneView<acc_t>{lanes, j}, p, t);
      }
    }
  } else {
    const acc_t* target = tile.target_row(c);
    for (int64_t i = 0; i < kTile; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        accumulate_element<kFull>(LaneView<acc_t>{lanes, j}, prob<kAct>(x, inv, i + j), target[i + j]);
      }
    }
  }
  for (int k = 0; k < kStats; ++k) {
    acc_t s = 0;
    for (int j = 0; j < kLanes; ++j) s += lanes[k][j];
    chunk_acc[k] += static_cast<double>(s);
  }
}

// float: the same sums over explicit 8-wide SIMD vectors, since GCC does not
// vectorize the float reductions above by itself.

template <Activation kAct, bool kFull>
void accumulate_class(Tile<float>& tile, int64_t c, bool is_label, double* chunk_acc) {
  constexpr int kStats = StatSet<kFull>::kAccumulated;
  Float8 acc[kStats] = {};
  const float* x = tile.row(c);
  const float* inv = tile.inv.data();
  const Float8 zero = {};
  const Float8 one = zero + 1.f;
  auto load = [&](int64_t i) {
    Float8 p;
    std::memcpy(&p, x + i, sizeof(p));
    if (kAct == Activation::kSoftmax) {
      Float8 r;
      std::memcpy(&r, inv + i, sizeof(r));
      p *= r;
    }
    return p;
  };
  if (is_label) {
    const int32_t* labels = tile.labels.data();
    const Int8 cls = Int8{} + static_cast<int32_t>(c);
    for (int64_t i = 0; i < kTile; i += kLanes) {
      Int8 l;
      std::memcpy(&l, labels + i, sizeof(l));
      const Float8 p = l >= 0 ? load(i) : zero;  // ignored: leaves every sum
      const Float8 t = l == cls ? one : zero;
      accumulate_element<kFull>(acc, p, t);
    }
  } else {
    const float* target = tile.target_row(c);
    for (int64_t i = 0; i < kTile; i += kLanes) {
      Float8 t;
      std::memcpy(&t, target + i, sizeof(t));
      accumulate_element<kFull>(acc, load(i), t);
    }
  }
  for (int k = 0; k < kStats; ++k) {
    float s = 0;
    for (int j = 0; j < kLanes; ++j) s += acc[k][j];
    chunk_acc[k] += static_cast<double>(s);
  }
}

// Activation 'none': whether a probability the statistics use (not ignored or masked out)
// lies outside [0, 1] or is NaN, in the tile just loaded (its first n positions).
template <typename acc_t>
bool probabilities_outside_unit_interval(Tile<acc_t>& tile, const DiceProblem& pr, int64_t n) {
  int32_t outside = 0;
  const int32_t* valid = tile.labels.data();  // -1: ignored or masked out
  for (int64_t c = 0; c < pr.classes; ++c) {
    const acc_t* p = tile.row(c);
    for (int64_t i = 0; i < n; ++i) outside |= (valid[i] >= 0) & !(p[i] >= acc_t(0) && p[i] <= acc_t(1));
  }
  return outside != 0;
}

// After a chunk reported such a probability: finds the first one and raises
// (logits passed with activation 'none' give a plausible-looking loss otherwise).
template <typename scalar_t>
[[noreturn]] void throw_input_outside_unit_interval(const scalar_t* x, const DiceProblem& pr, int64_t b,
                                                    int64_t s_begin, int64_t s_end) {
  for (int64_t c = 0; c < pr.classes; ++c) {
    for (int64_t s = s_begin; s < s_end; ++s) {
      if (pr.mask_value(b, s) == 0.f) continue;
      if (pr.target.is_label) {
        const int64_t label = load_label(pr.target.data, pr.target.dtype, pr.label_offset(b, s));
        if (classify_label(label, pr.label_limit(), pr.has_ignore, pr.ignore_index) != LabelState::kValid) continue;
      }
      const double v = static_cast<double>(x[pr.input_offset(b, c, s)]);
      if (!(v >= 0.0 && v <= 1.0)) throw BadValue(BadValueKind::kProbability, v, b, c, s);
    }
  }
  TORCH_CHECK(false, "fastdice: internal error locating an input value outside [0, 1]");
}

// Calls raise(b, s_begin, s_end) for the first chunk item flagged, in order
// (raise throws): the CPU reports the first offender whatever the threads.
template <typename F>
void raise_at_first_flagged(const std::vector<uint8_t>& flags, const DiceProblem& pr, F&& raise) {
  const int64_t per_sample = chunks_per_sample(pr.spatial);
  for (int64_t item = 0; item < static_cast<int64_t>(flags.size()); ++item) {
    if (flags[item]) {
      const int64_t s_begin = (item % per_sample) * kChunk;
      raise(item / per_sample, s_begin, std::min(s_begin + kChunk, pr.spatial));
    }
  }
}

// The statistics set (pr.full_stats) is a run-time flag down to the per-class
// sums: a template parameter here would compile the whole chunk machinery twice.
template <typename scalar_t, typename acc_t, Activation kAct, bool kPixel>
void forward_impl(const at::Tensor& input, const DiceProblem& pr, at::Tensor& stats) {
  const int64_t C = pr.classes;
  const bool full = pr.full_stats;
  const int64_t per_sample = chunks_per_sample(pr.spatial);
  const int64_t items = pr.batch * per_sample;
  // partials[item][c][k], reduced below in a fixed order.
  std::vector<double> partials(static_cast<size_t>(items * C * kNumStats), 0.0);
  const scalar_t* x = input.data_ptr<scalar_t>();
  const bool is_label = pr.one_hot_labels();  // regions take the dense-target code
  std::vector<uint8_t> target_outside(pr.target.is_label ? 0 : items, 0);
  const bool check_probabilities = kAct == Activation::kNone && pr.check_probabilities;
  std::vector<uint8_t> input_outside(check_probabilities ? items : 0, 0);
  std::vector<uint8_t> mask_bad(pr.has_mask() ? items : 0, 0);

  auto raise_errors = [&] {
    raise_at_first_flagged(mask_bad, pr, [&](int64_t b, int64_t s0, int64_t s1) { throw_bad_mask_value(pr, b, s0, s1); });
    raise_at_first_flagged(target_outside, pr, [&](int64_t b, int64_t s0, int64_t s1) {
      throw_target_outside_unit_interval(pr, b, s0, s1);
    });
    raise_at_first_flagged(input_outside, pr, [&](int64_t b, int64_t s0, int64_t s1) {
      throw_input_outside_unit_interval(x, pr, b, s0, s1);
    });
  };
  if constexpr (std::is_same<scalar_t, float>::value && !kPixel && kAct != Activation::kSoftmax) {
    if (dense_streaming_applies(pr)) {
      if (full) {
        forward_dense_streaming<kAct, true>(x, pr, partials, target_outside, input_outside);
      } else {
        forward_dense_streaming<kAct, false>(x, pr, partials, target_outside, input_outside);
      }
      raise_errors();
      return reduce_chunk_partials(partials, pr.batch, per_sample, C * kNumStats, stats.data_ptr<acc_t>());
    }
  }

  const bool want_shift = kPixel && pr.pixel_loss == PixelLoss::kCrossEntropy;
  constexpr bool kSoftmaxLabel = kSoftmaxLabelCase<scalar_t, kAct, false>;
  constexpr bool kHalfInput = !std::is_same<scalar_t, float>::value;
  const bool softmax_label_path = kSoftmaxLabel && !full && softmax_label_path_applies(pr);
  auto make_state = [&] {
    // The softmax + label path uses only the tile's labels.
    return std::make_pair(Tile<acc_t>(softmax_label_path ? 0 : C, is_label, kPixel && !softmax_label_path),
                          SoftmaxLabelScratch(softmax_label_path ? C : 0, softmax_label_path, kHalfInput));
  };
  parallel_chunks(pr, make_state, [&](auto& state, int64_t item, int64_t b, int64_t s_begin, int64_t s_end) {
    Tile<acc_t>& tile = state.first;
    SoftmaxLabelScratch& scratch = state.second;
    double* acc = partials.data() + item * C * kNumStats;
    int64_t valid_count = 0;
    for (int64_t s0 = s_begin; s0 < s_end; s0 += kTile) {
      const int64_t n = std::min(kTile, s_end - s0);
      if constexpr (kSoftmaxLabel) {
        if (softmax_label_path) {
          valid_count += load_labels(pr, b, s0, n, tile);
          const float* xf;
          int64_t sc = pr.in_stride_c;
          if constexpr (kHalfInput) {
            tile_to_float(x + pr.input_offset(b, 0, s0), sc, C, n, scratch.tile_logits.data());
            xf = scratch.tile_logits.data();
            sc = kTile;
          } else {
            xf = x + pr.input_offset(b, 0, s0);
          }
          softmax_label_tile_stats<kPixel>(xf, sc, C, n, tile.labels.data(), scratch, acc);
          continue;
        }
      }
      if (is_label) {
        valid_count += load_labels(pr, b, s0, n, tile);
      } else if (pr.has_regions()) {
        valid_count += load_region_targets(pr, b, s0, n, tile);
      } else {
        if (load_dense(pr, b, s0, n, tile, valid_count)) target_outside[item] = 1;
      }
      load_activated<kAct>(x, pr, b, s0, n, tile, want_shift);
      if (check_probabilities && probabilities_outside_unit_interval(tile, pr, n)) input_outside[item] = 1;
      if (!is_label && (pr.has_mask() || pr.has_regions())) {
        // Masked-out (and, for regions, ignored) positions: probability 0
        // (selected, so a NaN logit there stays out).
        const int32_t* valid = tile.labels.data();
        zero_masked_rows(tile.x.data(), C, n, valid);
        for (int64_t i = 0; i < n; ++i) tile.inv[i] = valid[i] >= 0 ? tile.inv[i] : acc_t(0);
      }
      if (full) {
        for (int64_t c = 0; c < C; ++c) accumulate_class<kAct, true>(tile, c, is_label, acc + c * kNumStats);
      } else {
        for (int64_t c = 0; c < C; ++c) accumulate_class<kAct, false>(tile, c, is_label, acc + c * kNumStats);
      }
      if constexpr (kPixel) {
        for (int64_t c = 0; c < C; ++c) {
          pixel_terms_class<false, kAct>(x, pr, b, s0, n, tile, c, static_cast<const acc_t*>(nullptr));
          acc[c * kNumStats + kPixelLoss] += sum_tile_row(tile.pixel.data());
          acc[c * kNumStats + kPixelLossTarget] += sum_tile_row(tile.pixel.data() + kTile);
        }
      }
    }
    if (full) {
      for (int64_t c = 0; c < C; ++c) acc[c * kNumStats + kValidCount] = static_cast<double>(valid_count);
    }
    if (tile.bad_mask) {
      mask_bad[item] = 1;
      tile.bad_mask = false;
    }
  });

  raise_errors();
  reduce_chunk_partials(partials, pr.batch, per_sample, C * kNumStats, stats.data_ptr<acc_t>());
}

void dice_stats_forward(const at::Tensor& input, const DiceProblem& pr, at::Tensor& stats) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    FD_ACTIVATION_SWITCH(pr.activation, kAct, [&] {
      FD_PIXEL_SWITCH(kAct, pr.pixel_loss, kPixel,
                      [&] { forward_impl<scalar_t, acc_t, kAct, kPixel>(input, pr, stats); });
    });
  });
}

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
