// Tile loading of the CPU kernels, shared by the Dice statistics (forward
// and backward) and the confusion counts: the chunk / tile geometry, the
// target dtype switches, label classification (dice_math.h's classify_label,
// as CUDA), input rows, and the Dice kernels' Tile with its loaders (labels,
// dense targets, activation).
//
// Structure of every CPU kernel: each sample is walked in fixed chunks of
// positions (one parallel work item each, independent of the thread count,
// so results are bitwise identical for any number of threads) and, inside a
// chunk, in tiles small enough to stay in L1. A tile is loaded once into
// class-major buffers; every loop over it is a branch-free loop over
// positions that the compiler vectorizes.
// Compiled once per instruction set: see isa_prologue.h.
#pragma once

#include "../bad_value.h"
#include "vector_math.h"

#ifndef FD_CPU_ISA_NS
#error "define FD_CPU_ISA_NS before including tile_loading.h"
#endif

namespace fastdice {
namespace cpu {
namespace FD_CPU_ISA_NS {

constexpr int64_t kTile = 512;          // positions per tile
constexpr int64_t kTilesPerChunk = 8;   // a chunk is one parallel work item
constexpr int64_t kChunk = kTile * kTilesPerChunk;

inline int64_t chunks_per_sample(int64_t spatial) { return (spatial + kChunk - 1) / kChunk; }

// Splits the chunk items of a problem (sample b, positions [s_begin, s_end))
// between the threads: body(begin, end) once per thread's range of items,
// for a pass that streams one row across all of its chunks before the next.
template <typename Body>
void parallel_chunk_ranges(const DiceProblem& pr, Body&& body) {
  at::parallel_for(0, pr.batch * chunks_per_sample(pr.spatial), 1, body);
}

// The same split item by item: per thread's range, state = make_state() once
// (tiles, scratch), then body(state, item, b, s_begin, s_end) for each item.
template <typename MakeState, typename Body>
void parallel_chunks(const DiceProblem& pr, MakeState&& make_state, Body&& body) {
  const int64_t per_sample = chunks_per_sample(pr.spatial);
  parallel_chunk_ranges(pr, [&](int64_t begin, int64_t end) {
    auto state = make_state();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s_begin = (item % per_sample) * kChunk;
      body(state, item, item / per_sample, s_begin, std::min(s_begin + kChunk, pr.spatial));
    }
  });
}

// No per-thread state.
struct NoState {};
inline NoState no_state() { return {}; }

// The storage type of each TargetDtype tag.
template <typename T>
constexpr TargetDtype dtype_tag();
template <> constexpr TargetDtype dtype_tag<c10::Half>() { return TargetDtype::kFloat16; }
template <> constexpr TargetDtype dtype_tag<c10::BFloat16>() { return TargetDtype::kBFloat16; }
template <> constexpr TargetDtype dtype_tag<float>() { return TargetDtype::kFloat32; }
template <> constexpr TargetDtype dtype_tag<double>() { return TargetDtype::kFloat64; }
template <> constexpr TargetDtype dtype_tag<bool>() { return TargetDtype::kBool; }
template <> constexpr TargetDtype dtype_tag<uint8_t>() { return TargetDtype::kUInt8; }
template <> constexpr TargetDtype dtype_tag<int8_t>() { return TargetDtype::kInt8; }
template <> constexpr TargetDtype dtype_tag<int16_t>() { return TargetDtype::kInt16; }
template <> constexpr TargetDtype dtype_tag<int32_t>() { return TargetDtype::kInt32; }
template <> constexpr TargetDtype dtype_tag<int64_t>() { return TargetDtype::kInt64; }

// f(data as const T*) for the T among Ts whose tag is `tag`; the last of Ts
// when none is (the host wrappers admit only the listed dtypes).
template <typename T, typename... Rest, typename F>
decltype(auto) visit_dtype(TargetDtype tag, const void* data, F&& f) {
  if constexpr (sizeof...(Rest) == 0) {
    return f(static_cast<const T*>(data));
  } else {
    if (tag == dtype_tag<T>()) return f(static_cast<const T*>(data));
    return visit_dtype<Rest...>(tag, data, std::forward<F>(f));
  }
}

// f(typed pointer to the label map's data), for each integer label dtype.
template <typename F>
decltype(auto) visit_label_dtype(const TargetView& tv, F&& f) {
  return visit_dtype<uint8_t, int8_t, int16_t, int32_t, int64_t>(tv.dtype, tv.data, std::forward<F>(f));
}

// f(typed pointer to a dense target's data), for each target dtype.
template <typename F>
decltype(auto) visit_dense_dtype(const TargetView& tv, F&& f) {
  return visit_dtype<c10::Half, c10::BFloat16, float, double, bool, uint8_t, int8_t, int16_t, int32_t, int64_t>(
      tv.dtype, tv.data, std::forward<F>(f));
}

// Classifies labels src[0..n) (stride apart) against [0, limit) with
// classify_label: codes[i] = label - shift where valid, else `skip`. Returns
// the number of valid labels; out_of_range is set when some label is neither
// valid nor ignore_index (the caller finds it with first_label_out_of_range).
template <bool kUnitStride, typename label_t>
int64_t classify_label_run(const label_t* src, int64_t stride, int64_t n, int64_t limit, int64_t shift,
                           bool has_ignore, int64_t ignore, int32_t skip, int32_t* codes, bool& out_of_range) {
  // Plain local accumulators and no lambda: with the sums captured by
  // reference GCC could not rule out that codes[] aliases them, and left
  // the loop scalar (2 ns per int64 label, half of a C = 2 softmax fwd+bwd).
  int64_t valid = 0;
  int32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(src[kUnitStride ? i : i * stride]);
    const LabelState state = classify_label(v, limit, has_ignore, ignore);
    const bool ok = state == LabelState::kValid;
    codes[i] = ok ? static_cast<int32_t>(v - shift) : skip;
    valid += ok;
    bad |= state == LabelState::kOutOfRange;
  }
  out_of_range = bad != 0;
  return valid;
}

template <typename label_t>
int64_t classify_labels(const label_t* src, int64_t stride, int64_t n, int64_t limit, int64_t shift,
                        bool has_ignore, int64_t ignore, int32_t skip, int32_t* codes, bool& out_of_range) {
  if (stride == 1) {
    return classify_label_run<true>(src, stride, n, limit, shift, has_ignore, ignore, skip, codes, out_of_range);
  }
  return classify_label_run<false>(src, stride, n, limit, shift, has_ignore, ignore, skip, codes, out_of_range);
}

// The first i in [0, n) whose label is out of range (and not ignore_index),
// with its value; n if none.
template <typename label_t>
int64_t first_label_out_of_range(const label_t* src, int64_t stride, int64_t n, int64_t limit, bool has_ignore,
                                 int64_t ignore, int64_t& value) {
  for (int64_t i = 0; i < n; ++i) {
    value = static_cast<int64_t>(src[i * stride]);
    if (classify_label(value, limit, has_ignore, ignore) == LabelState::kOutOfRange) return i;
  }
  return n;
}

// dst[0..n) = input[b, c, s0 : s0 + n] as acc_t.
template <typename scalar_t, typename acc_t>
inline void load_input_row(const scalar_t* input, const DiceProblem& pr, int64_t b, int64_t c, int64_t s0, int64_t n,
                           acc_t* dst) {
  const scalar_t* src = input + pr.input_offset(b, c, s0);
  const int64_t ss = pr.in_stride_s;
  if (ss == 1) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i * ss]);
  }
}

// ---- The Dice kernels' tile ------------------------------------------------

// One tile: positions [s0, s0 + n) of sample b, in class-major buffers.
template <typename acc_t>
struct Tile {
  std::vector<acc_t> x;       // [C][kTile]: logits, then activation values
  std::vector<acc_t> inv;     // [kTile]: softmax 1 / sum exp
  std::vector<acc_t> target;  // [C][kTile]: dense targets
  // [kTile]: the label (label maps) or 0 (dense targets); -1 where ignored,
  // masked out or padding.
  std::vector<int32_t> labels;
  // Pixel losses only:
  std::vector<acc_t> shift;   // [kTile]: softmax max + log(sum exp), so log p = x - shift
  std::vector<acc_t> logits;  // [kTile]: one class's logits
  std::vector<acc_t> pixel;   // [2][kTile] (forward): l and t*l of one class
  std::vector<acc_t> direct;  // [C][kTile] (backward): the pixel loss's gradient per class
  bool bad_mask = false;      // a loss-mask value other than 0 / 1 was read (see apply_mask)

  Tile(int64_t c, bool is_label, bool has_pixel = false)
      : x(c * kTile),
        inv(kTile),
        target(is_label ? 0 : c * kTile),
        labels(kTile),
        shift(has_pixel ? kTile : 0),
        logits(has_pixel ? kTile : 0),
        pixel(has_pixel ? 2 * kTile : 0),
        direct(has_pixel ? c * kTile : 0) {}
  acc_t* row(int64_t c) { return x.data() + c * kTile; }
  acc_t* target_row(int64_t c) { return target.data() + c * kTile; }
  acc_t* direct_row(int64_t c) { return direct.data() + c * kTile; }
};

// Reads input[b, :, s0:s0+n] and leaves activation values in the tile:
// probabilities for none/sigmoid; for softmax exp(x - max) in the rows and
// 1 / sum in tile.inv (prob() multiplies them). Padding positions (i >= n)
// end as probability 0. The logits are read straight from the input (twice
// for softmax, from L1), never copied into the tile first.
template <Activation kAct, typename scalar_t, typename acc_t>
void load_activated(const scalar_t* input, const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                    Tile<acc_t>& tile, bool want_shift = false) {
  const int64_t C = pr.classes;
  const int64_t ss = pr.in_stride_s;
  // f(i, v) for the n logits v of row c, contiguous or strided.
  auto for_row = [&](int64_t c, auto&& f) {
    const scalar_t* src = input + pr.input_offset(b, c, s0);
    if (ss == 1) {
      for (int64_t i = 0; i < n; ++i) f(i, static_cast<acc_t>(src[i]));
    } else {
      for (int64_t i = 0; i < n; ++i) f(i, static_cast<acc_t>(src[i * ss]));
    }
  };
  if (kAct == Activation::kSoftmax) {
    acc_t row_max[kTile], row_sum[kTile];
    for (int64_t i = 0; i < kTile; ++i) {
      row_max[i] = -std::numeric_limits<acc_t>::infinity();
      row_sum[i] = acc_t(0);
    }
    for (int64_t c = 0; c < C; ++c) for_row(c, [&](int64_t i, acc_t v) { row_max[i] = nan_max(row_max[i], v); });
    for (int64_t c = 0; c < C; ++c) {
      acc_t* dst = tile.row(c);
      for_row(c, [&](int64_t i, acc_t v) {
        const acc_t e = exp_nonpositive(v - row_max[i]);
        dst[i] = e;
        row_sum[i] += e;
      });
    }
    for (int64_t i = 0; i < n; ++i) tile.inv[i] = acc_t(1) / row_sum[i];
    for (int64_t i = n; i < kTile; ++i) tile.inv[i] = acc_t(0);
    if (want_shift) {
      for (int64_t i = 0; i < n; ++i) tile.shift[i] = row_max[i] + CpuMath<acc_t>::log(row_sum[i]);
      for (int64_t i = n; i < kTile; ++i) tile.shift[i] = acc_t(0);
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      acc_t* dst = tile.row(c);
      if (kAct == Activation::kSigmoid) {
        for_row(c, [&](int64_t i, acc_t v) { dst[i] = sigmoid_from_exp_neg_abs(v, exp_nonpositive(-abs_of(v))); });
      } else {
        for_row(c, [&](int64_t i, acc_t v) { dst[i] = v; });
      }
    }
  }
  if (n < kTile) {
    for (int64_t c = 0; c < C; ++c) {
      acc_t* dst = tile.row(c);
      for (int64_t i = n; i < kTile; ++i) dst[i] = acc_t(0);
    }
  }
}

template <Activation kAct, typename acc_t>
inline acc_t prob(const acc_t* x, const acc_t* inv, int64_t i) {
  return kAct == Activation::kSoftmax ? x[i] * inv[i] : x[i];
}

// f(typed pointer to the loss mask's data), for each mask dtype.
template <typename F>
decltype(auto) visit_mask_dtype(const MaskView& mv, F&& f) {
  return visit_dtype<uint8_t, c10::Half, c10::BFloat16, float, double, bool>(mv.dtype, mv.data, std::forward<F>(f));
}

// With a loss mask: codes[i] = -1 where mask[b, s0 + i] is 0 (i < n); returns
// how many valid codes that removed. Sets bad when a mask value is not 0 / 1
// (the caller raises after its parallel loop, for the first offender in order).
inline int64_t apply_mask(const DiceProblem& pr, int64_t b, int64_t s0, int64_t n, int32_t* codes, bool& bad_mask) {
  const MaskView& mv = pr.mask;
  int64_t removed = 0;
  int32_t bad = 0;
  visit_mask_dtype(mv, [&](const auto* data) {
    const auto* src = data + b * mv.stride_b + s0 * mv.stride_s;
    for (int64_t i = 0; i < n; ++i) {
      const float m = static_cast<float>(src[i * mv.stride_s]);
      const bool keep = m != 0.f;
      removed += (!keep) & (codes[i] >= 0);
      codes[i] = keep ? codes[i] : -1;
      bad |= !(m == 0.f || m == 1.f);
    }
  });
  bad_mask = bad_mask || bad != 0;
  return removed;
}

// After a chunk reported a mask value other than 0 / 1: finds the first one and raises.
[[noreturn]] inline void throw_bad_mask_value(const DiceProblem& pr, int64_t b, int64_t s_begin, int64_t s_end) {
  for (int64_t s = s_begin; s < s_end; ++s) {
    const float m = pr.mask_value(b, s);
    if (!(m == 0.f || m == 1.f)) throw BadValue(BadValueKind::kMask, m, b, -1, s);
  }
  TORCH_CHECK(false, "fastdice: internal error locating a mask value other than 0 / 1");
}

// Fills tile.labels from target[b, s0:s0+n] (-1 where ignored or masked out
// and for the padding up to kTile); returns the number of valid positions.
// Throws on a label outside [0, C) that is not ignore_index, unless the loss
// mask drops its position (unannotated regions may hold any value).
template <typename acc_t>
int64_t load_labels(const DiceProblem& pr, int64_t b, int64_t s0, int64_t n, Tile<acc_t>& tile) {
  const TargetView& tv = pr.target;
  int32_t* labels = tile.labels.data();
  const int64_t valid = visit_label_dtype(tv, [&](const auto* data) {
    const auto* src = data + pr.label_offset(b, s0);
    bool out_of_range;
    const int64_t limit = pr.label_limit();
    const int64_t count = classify_labels(src, tv.stride_s, n, limit, 0, pr.has_ignore, pr.ignore_index, -1,
                                          labels, out_of_range);
    if (out_of_range) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t v = static_cast<int64_t>(src[i * tv.stride_s]);
        if (classify_label(v, limit, pr.has_ignore, pr.ignore_index) != LabelState::kOutOfRange) continue;
        if (pr.has_mask() && pr.mask_value(b, s0 + i) == 0.f) continue;
        throw BadValue(BadValueKind::kLabel, static_cast<double>(v), b, -1, s0 + i, limit, pr.has_ignore,
                       pr.has_regions());
      }
    }
    return count;
  });
  for (int64_t i = n; i < kTile; ++i) labels[i] = -1;
  return pr.has_mask() ? valid - apply_mask(pr, b, s0, n, labels, tile.bad_mask) : valid;
}

// Region targets (pr.has_regions()): reads the label map at target[b, s0:s0+n]
// as load_labels does, then fills tile.target's C rows with region
// membership (0 where ignored, masked out or padding) and leaves tile.labels
// as a dense target's (0 valid, -1 dropped), so that the dense-target code
// runs unchanged; the caller zeroes the probabilities at dropped positions,
// as with a loss mask. Returns the number of valid positions.
template <typename acc_t>
int64_t load_region_targets(const DiceProblem& pr, int64_t b, int64_t s0, int64_t n, Tile<acc_t>& tile) {
  const int64_t valid = load_labels(pr, b, s0, n, tile);
  int32_t* labels = tile.labels.data();
  for (int64_t c = 0; c < pr.classes; ++c) {
    const uint64_t bits = pr.regions.bits[c];
    acc_t* dst = tile.target_row(c);
    for (int64_t i = 0; i < kTile; ++i) {
      const int32_t l = labels[i];
      dst[i] = l >= 0 ? static_cast<acc_t>((bits >> l) & 1u) : acc_t(0);
    }
  }
  for (int64_t i = 0; i < kTile; ++i) labels[i] = labels[i] >= 0 ? 0 : -1;
  return valid;
}

// rows[c * kTile + i] = 0 where labels[i] < 0, for the C rows of a tile.
template <typename acc_t>
void zero_masked_rows(acc_t* rows, int64_t classes, int64_t n, const int32_t* labels) {
  for (int64_t c = 0; c < classes; ++c) {
    acc_t* r = rows + c * kTile;
    for (int64_t i = 0; i < n; ++i) r[i] = labels[i] >= 0 ? r[i] : acc_t(0);
  }
}

// Returns true when some loaded value lies outside [0, 1] (or is NaN).
template <typename target_t, typename acc_t>
bool load_dense_typed(const target_t* base, const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                      Tile<acc_t>& tile) {
  const int64_t stride = pr.target.stride_s;
  int32_t outside = 0;
  for (int64_t c = 0; c < pr.classes; ++c) {
    const target_t* src = base + pr.dense_target_offset(b, c, s0);
    acc_t* dst = tile.target_row(c);
    if (stride == 1) {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i * stride]);
    }
    for (int64_t i = 0; i < n; ++i) outside |= !(dst[i] >= acc_t(0) && dst[i] <= acc_t(1));
    for (int64_t i = n; i < kTile; ++i) dst[i] = acc_t(0);
  }
  return outside != 0;
}

// Loads dense target[b, :, s0:s0+n] into tile.target, zero-padded, and marks
// the valid positions in tile.labels (0; -1 for padding and, with a loss
// mask, where it is 0: there the target is zeroed too, and the caller zeroes
// the probabilities, so that the position adds nothing to any sum). Adds the
// number of valid positions to valid; returns true when a value lies outside
// [0, 1].
template <typename acc_t>
bool load_dense(const DiceProblem& pr, int64_t b, int64_t s0, int64_t n, Tile<acc_t>& tile, int64_t& valid) {
  bool outside =
      visit_dense_dtype(pr.target, [&](const auto* data) { return load_dense_typed(data, pr, b, s0, n, tile); });
  int32_t* labels = tile.labels.data();
  for (int64_t i = 0; i < kTile; ++i) labels[i] = i < n ? 0 : -1;
  valid += n;
  if (pr.has_mask()) {
    valid -= apply_mask(pr, b, s0, n, labels, tile.bad_mask);
    // Masked-out positions are exempt from the [0, 1] rule (unannotated
    // regions often hold a fill value such as 255).
    zero_masked_rows(tile.target.data(), pr.classes, n, labels);
    if (outside) {
      int32_t bad = 0;
      for (int64_t c = 0; c < pr.classes; ++c) {
        const acc_t* t = tile.target_row(c);
        for (int64_t i = 0; i < n; ++i) bad |= !(t[i] >= acc_t(0) && t[i] <= acc_t(1));
      }
      outside = bad != 0;
    }
  }
  return outside;
}

// After a chunk reported a target value outside [0, 1]: finds the first one
// and raises (a 0/255 mask silently gives a wrong loss otherwise).
[[noreturn]] inline void throw_target_outside_unit_interval(const DiceProblem& pr, int64_t b, int64_t s_begin,
                                                           int64_t s_end) {
  for (int64_t c = 0; c < pr.classes; ++c) {
    for (int64_t s = s_begin; s < s_end; ++s) {
      if (pr.mask_value(b, s) == 0.f) continue;
      const double v = load_target_value<double>(pr.target.data, pr.target.dtype, pr.dense_target_offset(b, c, s));
      if (!(v >= 0.0 && v <= 1.0)) throw BadValue(BadValueKind::kDenseTarget, v, b, c, s);
    }
  }
  TORCH_CHECK(false, "fastdice: internal error locating a target value outside [0, 1]");
}

// Sum of a tile row in a fixed order (kLanes partial sums), in double.
template <typename acc_t>
double sum_tile_row(const acc_t* v) {
  acc_t lanes[kLanes] = {};
  for (int64_t i = 0; i < kTile; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += v[i + j];
  }
  acc_t s = 0;
  for (int j = 0; j < kLanes; ++j) s += lanes[j];
  return static_cast<double>(s);
}

// float: the same order over one explicit 8-wide vector.
inline double sum_tile_row(const float* v) {
  typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
  Lanes acc = {};
  for (int64_t i = 0; i < kTile; i += kLanes) {
    Lanes x;
    std::memcpy(&x, v + i, sizeof(x));
    acc += x;
  }
  float s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return static_cast<double>(s);
}

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
