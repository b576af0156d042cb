// Tile-level building blocks of the CPU kernels.
//
// The CPU kernels walk each sample in fixed chunks of positions (independent
// of the thread count, so results are bitwise identical for any number of
// threads) and, inside a chunk, in tiles small enough to stay in L1. A tile
// is loaded once into class-major buffers and every loop over it is a plain,
// branch-free loop over positions that the compiler vectorizes.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include <c10/util/Exception.h>

#include "../dice_math.h"
#include "../dice_problem.h"

namespace fastdice {
namespace cpu {

constexpr int64_t kTile = 256;          // positions per tile
constexpr int64_t kTilesPerChunk = 16;  // a chunk is one parallel work item
constexpr int64_t kChunk = kTile * kTilesPerChunk;
constexpr int kLanes = 8;  // independent partial sums per statistic (SIMD width)

// exp(x) for x <= 0, branch-free so that loops calling it vectorize
// (Cephes' single-precision polynomial, about 1 ulp). Arguments below the
// smallest normal result flush to 0; NaN stays NaN.
inline float exp_nonpositive(float x) {
  const float kLowest = -87.3365447504f;
  const bool underflow = x < kLowest;
  float xc = underflow ? kLowest : x;
  xc = xc > 0.f ? 0.f : xc;
  const float fx = xc * 1.44269504088896341f + 0.5f;
  int n = static_cast<int>(fx);
  n = static_cast<float>(n) > fx ? n - 1 : n;  // floor for negative fx
  const float nf = static_cast<float>(n);
  float r = xc - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  float result = y * scale;
  result = underflow ? 0.f : result;
  return x != x ? x : result;
}

inline double exp_nonpositive(double x) { return std::exp(x); }

// Loads input[b, :, s0:s0+n] as acc_t into buf[c * kTile + i]; pads to kTile with 0.
template <typename scalar_t, typename acc_t>
void load_input_tile(const scalar_t* input, const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                     acc_t* buf) {
  for (int64_t c = 0; c < pr.classes; ++c) {
    const scalar_t* src = input + pr.input_offset(b, c, s0);
    acc_t* dst = buf + c * kTile;
    if (pr.in_stride_s == 1) {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i * pr.in_stride_s]);
    }
    for (int64_t i = n; i < kTile; ++i) dst[i] = acc_t(0);
  }
}

// Replaces logits by probabilities in place. scratch holds 2 * kTile values.
template <Activation kAct, typename acc_t>
void activate_tile(acc_t* buf, int64_t classes, acc_t* scratch) {
  if (kAct == Activation::kSigmoid) {
    for (int64_t c = 0; c < classes; ++c) {
      acc_t* x = buf + c * kTile;
      for (int64_t i = 0; i < kTile; ++i) {
        const acc_t e = exp_nonpositive(-abs_of(x[i]));
        x[i] = sigmoid_from_exp_neg_abs(x[i], e);
      }
    }
  } else if (kAct == Activation::kSoftmax) {
    acc_t* row_max = scratch;
    acc_t* row_sum = scratch + kTile;
    for (int64_t i = 0; i < kTile; ++i) {
      row_max[i] = -std::numeric_limits<acc_t>::infinity();
      row_sum[i] = acc_t(0);
    }
    for (int64_t c = 0; c < classes; ++c) {
      const acc_t* x = buf + c * kTile;
      for (int64_t i = 0; i < kTile; ++i) row_max[i] = nan_max(row_max[i], x[i]);
    }
    for (int64_t c = 0; c < classes; ++c) {
      acc_t* x = buf + c * kTile;
      for (int64_t i = 0; i < kTile; ++i) {
        const acc_t e = exp_nonpositive(x[i] - row_max[i]);
        x[i] = e;
        row_sum[i] += e;
      }
    }
    for (int64_t i = 0; i < kTile; ++i) row_sum[i] = acc_t(1) / row_sum[i];
    for (int64_t c = 0; c < classes; ++c) {
      acc_t* x = buf + c * kTile;
      for (int64_t i = 0; i < kTile; ++i) x[i] *= row_sum[i];
    }
  }
}

template <typename label_t>
int64_t load_labels_typed(const label_t* src, int64_t stride, const DiceProblem& pr, int64_t b,
                          int64_t s0, int64_t n, int32_t* labels) {
  int64_t valid = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(src[i * stride]);
    const LabelState state = classify_label(v, pr.classes, pr.has_ignore, pr.ignore_index);
    TORCH_CHECK_VALUE(state != LabelState::kOutOfRange, "fastdice: target label ", v,
                      " (sample ", b, ", flat position ", s0 + i, ") is outside [0, ", pr.classes,
                      ")", pr.has_ignore ? " and is not ignore_index" : "");
    labels[i] = state == LabelState::kValid ? static_cast<int32_t>(v) : -1;
    valid += state == LabelState::kValid;
  }
  for (int64_t i = n; i < kTile; ++i) labels[i] = -1;
  return valid;
}

// Loads target[b, s0:s0+n] into labels (-1 marks ignored and padding
// positions); returns the number of valid positions. Throws on labels outside
// [0, C) that are not ignore_index.
inline int64_t load_label_tile(const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                               int32_t* labels) {
  const TargetView& tv = pr.target;
  const int64_t off = pr.label_offset(b, s0);
  switch (tv.dtype) {
    case TargetDtype::kUInt8:
      return load_labels_typed(static_cast<const uint8_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, labels);
    case TargetDtype::kInt8:
      return load_labels_typed(static_cast<const int8_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, labels);
    case TargetDtype::kInt16:
      return load_labels_typed(static_cast<const int16_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, labels);
    case TargetDtype::kInt32:
      return load_labels_typed(static_cast<const int32_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, labels);
    default:
      return load_labels_typed(static_cast<const int64_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, labels);
  }
}

template <typename target_t, typename acc_t>
void load_dense_typed(const target_t* base, const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                      acc_t* buf) {
  const TargetView& tv = pr.target;
  for (int64_t c = 0; c < pr.classes; ++c) {
    const target_t* src = base + pr.dense_target_offset(b, c, s0);
    acc_t* dst = buf + c * kTile;
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(static_cast<float>(src[i * tv.stride_s]));
    for (int64_t i = n; i < kTile; ++i) dst[i] = acc_t(0);
  }
}

// Loads dense target[b, :, s0:s0+n] as acc_t into buf[c * kTile + i], zero-padded.
template <typename acc_t>
void load_dense_tile(const DiceProblem& pr, int64_t b, int64_t s0, int64_t n, acc_t* buf) {
  const void* d = pr.target.data;
  switch (pr.target.dtype) {
    case TargetDtype::kFloat16:
      return load_dense_typed(static_cast<const c10::Half*>(d), pr, b, s0, n, buf);
    case TargetDtype::kBFloat16:
      return load_dense_typed(static_cast<const c10::BFloat16*>(d), pr, b, s0, n, buf);
    case TargetDtype::kFloat32:
      return load_dense_typed(static_cast<const float*>(d), pr, b, s0, n, buf);
    case TargetDtype::kFloat64: {
      // Not through float: keep float64 targets exact for float64 inputs.
      const TargetView& tv = pr.target;
      for (int64_t c = 0; c < pr.classes; ++c) {
        const double* src = static_cast<const double*>(d) + pr.dense_target_offset(b, c, s0);
        acc_t* dst = buf + c * kTile;
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i * tv.stride_s]);
        for (int64_t i = n; i < kTile; ++i) dst[i] = acc_t(0);
      }
      return;
    }
    case TargetDtype::kBool:
      return load_dense_typed(static_cast<const bool*>(d), pr, b, s0, n, buf);
    case TargetDtype::kUInt8:
      return load_dense_typed(static_cast<const uint8_t*>(d), pr, b, s0, n, buf);
    case TargetDtype::kInt8:
      return load_dense_typed(static_cast<const int8_t*>(d), pr, b, s0, n, buf);
    case TargetDtype::kInt16:
      return load_dense_typed(static_cast<const int16_t*>(d), pr, b, s0, n, buf);
    case TargetDtype::kInt32:
      return load_dense_typed(static_cast<const int32_t*>(d), pr, b, s0, n, buf);
    case TargetDtype::kInt64:
      return load_dense_typed(static_cast<const int64_t*>(d), pr, b, s0, n, buf);
  }
}

// One chunk's worth of work: sample b, positions [s_begin, s_end).
struct ChunkRange {
  int64_t b;
  int64_t s_begin;
  int64_t s_end;
};

inline int64_t chunks_per_sample(int64_t spatial) { return (spatial + kChunk - 1) / kChunk; }

inline ChunkRange chunk_range(int64_t item, int64_t spatial) {
  const int64_t per_sample = chunks_per_sample(spatial);
  const int64_t b = item / per_sample;
  const int64_t s_begin = (item % per_sample) * kChunk;
  const int64_t s_end = s_begin + kChunk < spatial ? s_begin + kChunk : spatial;
  return {b, s_begin, s_end};
}

}  // namespace cpu
}  // namespace fastdice
