// Per-element math shared by the CPU and CUDA kernels.
//
// Everything that decides a number (activation, which statistic an element
// adds to, the derivative of the loss with respect to an element) lives here,
// once, as __host__ __device__ inline functions. The CPU build executes this
// exact code in the test suite, so the CUDA kernels inherit its correctness.
#pragma once

#include <cmath>
#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FD_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// always_inline: the CPU kernels also call these with GCC vector types from
// code compiled for a wider instruction set, where a call would be costly.
#define FD_HOST_DEVICE inline __attribute__((always_inline))
#else
#define FD_HOST_DEVICE inline
#endif

namespace fastdice {

enum class Activation : int { kNone = 0, kSigmoid = 1, kSoftmax = 2 };

// Layout of the last dimension of stats[B, C, kNumStats]. The first
// kNumBasicStats are always computed; the rest only with full statistics
// (squared denominators, soft-label intersection, valid-element count).
enum Stat : int {
  kTruePositive = 0,  // sum p*t
  kSumProb = 1,       // sum p
  kSumTarget = 2,     // sum t
  kSumProbSq = 3,     // sum p^2
  kSumTargetSq = 4,   // sum t^2
  kSumAbsDiff = 5,    // sum |p - t|
  kSumAbsProb = 6,    // sum |p|
  kSumAbsTarget = 7,  // sum |t|
  kValidCount = 8,    // number of elements that were not ignored
  kNumStats = 9,
};
constexpr int kNumBasicStats = 3;

template <bool kFull>
struct StatSet {
  // Statistics a kernel accumulates per element; the valid count is added per
  // position, not per element, and is handled by the kernels directly.
  static constexpr int kAccumulated = kFull ? kValidCount : kNumBasicStats;
};

// Dtype tags for targets, read through a runtime switch so that the target's
// dtype does not multiply the number of compiled kernels.
enum class TargetDtype : int {
  kFloat16 = 0,
  kBFloat16,
  kFloat32,
  kFloat64,
  kBool,
  kUInt8,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
};

template <typename acc_t>
FD_HOST_DEVICE acc_t load_target_value(const void* data, TargetDtype dtype, int64_t offset) {
  switch (dtype) {
    case TargetDtype::kFloat16:
      return static_cast<acc_t>(static_cast<float>(static_cast<const c10::Half*>(data)[offset]));
    case TargetDtype::kBFloat16:
      return static_cast<acc_t>(static_cast<float>(static_cast<const c10::BFloat16*>(data)[offset]));
    case TargetDtype::kFloat32:
      return static_cast<acc_t>(static_cast<const float*>(data)[offset]);
    case TargetDtype::kFloat64:
      return static_cast<acc_t>(static_cast<const double*>(data)[offset]);
    case TargetDtype::kBool:
      return static_cast<const bool*>(data)[offset] ? acc_t(1) : acc_t(0);
    case TargetDtype::kUInt8:
      return static_cast<acc_t>(static_cast<const uint8_t*>(data)[offset]);
    case TargetDtype::kInt8:
      return static_cast<acc_t>(static_cast<const int8_t*>(data)[offset]);
    case TargetDtype::kInt16:
      return static_cast<acc_t>(static_cast<const int16_t*>(data)[offset]);
    case TargetDtype::kInt32:
      return static_cast<acc_t>(static_cast<const int32_t*>(data)[offset]);
    case TargetDtype::kInt64:
      return static_cast<acc_t>(static_cast<const int64_t*>(data)[offset]);
  }
  return acc_t(0);
}

FD_HOST_DEVICE int64_t load_label(const void* data, TargetDtype dtype, int64_t offset) {
  switch (dtype) {
    case TargetDtype::kUInt8:
      return static_cast<const uint8_t*>(data)[offset];
    case TargetDtype::kInt8:
      return static_cast<const int8_t*>(data)[offset];
    case TargetDtype::kInt16:
      return static_cast<const int16_t*>(data)[offset];
    case TargetDtype::kInt32:
      return static_cast<const int32_t*>(data)[offset];
    case TargetDtype::kInt64:
      return static_cast<const int64_t*>(data)[offset];
    default:
      return -1;
  }
}

// What a label means at one position.
enum class LabelState : int { kValid = 0, kIgnored = 1, kOutOfRange = 2 };

FD_HOST_DEVICE LabelState classify_label(int64_t label, int64_t num_classes, bool has_ignore,
                                         int64_t ignore_index) {
  if (has_ignore && label == ignore_index) return LabelState::kIgnored;
  if (label < 0 || label >= num_classes) return LabelState::kOutOfRange;
  return LabelState::kValid;
}

// Hard confusion counts (fastdice::confusion_counts): layout of the last
// dimension of counts[B, C, kNumCounts], and how predictions are made.
enum Count : int {
  kCountTruePositive = 0,   // predicted c, target c
  kCountFalsePositive = 1,  // predicted c, target not c
  kCountFalseNegative = 2,  // not predicted c, target c
  kNumCounts = 3,
};

enum class CountsMode : int {
  kMulticlass = 0,  // prediction: argmax over the classes (one class per position)
  kMultilabel = 1,  // prediction: input > threshold, per class
  kBinary = 2,      // one channel, input > threshold; a label map holds 0 / 1
};

// Whether the running argmax (value best) moves to v, a later class: the rule
// of torch.argmax (the first index of the maximum; NaN is larger than
// everything, and the first NaN wins).
template <typename acc_t>
FD_HOST_DEVICE bool argmax_takes(acc_t best, acc_t v) {
  return best == best && (v > best || v != v);
}

// Dense targets of the counts must be hard: exactly 0 or 1.
FD_HOST_DEVICE bool is_binary_value(double v) { return v == 0.0 || v == 1.0; }

// NaN-propagating max: a NaN logit must make the softmax NaN, as torch.softmax does.
template <typename acc_t>
FD_HOST_DEVICE acc_t nan_max(acc_t a, acc_t b) {
  return (b > a || b != b) ? b : a;
}

template <typename acc_t>
FD_HOST_DEVICE acc_t sign_of(acc_t v) {
  // sign(0) = 0, the subgradient torch.abs uses.
  return static_cast<acc_t>((v > acc_t(0)) - (v < acc_t(0)));
}

template <typename acc_t>
FD_HOST_DEVICE acc_t abs_of(acc_t v) {
  return v < acc_t{} ? -v : v;  // NaN stays NaN; acc_t{} is zero for scalars and SIMD vectors
}

// Adds one element's contribution to the running statistics acc[0..kAccumulated).
// Acc is anything indexable by a Stat: a pointer, or a view of SIMD lanes.
template <bool kFull, typename Acc, typename acc_t>
FD_HOST_DEVICE void accumulate_element(Acc&& acc, acc_t p, acc_t t) {
  acc[kTruePositive] += p * t;
  acc[kSumProb] += p;
  acc[kSumTarget] += t;
  if (kFull) {
    acc[kSumProbSq] += p * p;
    acc[kSumTargetSq] += t * t;
    acc[kSumAbsDiff] += abs_of(p - t);
    acc[kSumAbsProb] += abs_of(p);
    acc[kSumAbsTarget] += abs_of(t);
  }
}

// Coefficients of d(loss)/d(stat) that depend on p, gathered per (sample, class).
enum GradCoef : int {
  kCoefTruePositive = 0,
  kCoefSumProb = 1,
  kCoefSumProbSq = 2,
  kCoefSumAbsDiff = 3,
  kCoefSumAbsProb = 4,
  kNumGradCoefs = 5,
};

template <bool kFull>
struct GradCoefSet {
  static constexpr int kUsed = kFull ? kNumGradCoefs : 2;
};

// The index into grad_stats[b, c, :] that each gradient coefficient comes from.
FD_HOST_DEVICE int grad_coef_source(int coef) {
  switch (coef) {
    case kCoefTruePositive:
      return kTruePositive;
    case kCoefSumProb:
      return kSumProb;
    case kCoefSumProbSq:
      return kSumProbSq;
    case kCoefSumAbsDiff:
      return kSumAbsDiff;
    default:
      return kSumAbsProb;
  }
}

// d(loss)/dp for one element, given the gradient coefficients of its (sample, class).
template <bool kFull, typename acc_t>
FD_HOST_DEVICE acc_t grad_wrt_prob(const acc_t* coef, acc_t p, acc_t t) {
  acc_t g = coef[kCoefTruePositive] * t + coef[kCoefSumProb];
  if (kFull) {
    g += coef[kCoefSumProbSq] * (acc_t(2) * p) + coef[kCoefSumAbsDiff] * sign_of(p - t) +
         coef[kCoefSumAbsProb] * sign_of(p);
  }
  return g;
}

// Sigmoid written so that large |x| neither overflows nor loses the small tail.
template <typename acc_t>
FD_HOST_DEVICE acc_t sigmoid_from_exp_neg_abs(acc_t x, acc_t e /* exp(-|x|) */) {
  const acc_t r = acc_t(1) / (acc_t(1) + e);
  return x >= acc_t(0) ? r : e * r;
}

template <typename acc_t>
FD_HOST_DEVICE acc_t sigmoid_backward(acc_t grad_p, acc_t p) {
  return grad_p * p * (acc_t(1) - p);
}

// d(loss)/dx_c for softmax, given grad_p_c and sum_k p_k * grad_p_k.
template <typename acc_t>
FD_HOST_DEVICE acc_t softmax_backward(acc_t grad_p, acc_t p, acc_t dot) {
  return p * (grad_p - dot);
}

}  // namespace fastdice
