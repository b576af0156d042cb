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

// The per-element loss accumulated next to the Dice statistics in the same
// pass (stats kPixelLoss and kPixelLossTarget), computed from the logits:
// cross-entropy over the softmax of the classes (needs activation softmax),
// or binary cross-entropy per class; focal_gamma > 0 turns either into its
// focal version (MONAI's softmax_focal_loss / sigmoid_focal_loss).
enum class PixelLoss : int { kNone = 0, kCrossEntropy = 1, kBinaryCrossEntropy = 2 };

// Layout of the last dimension of stats[B, C, kNumStats]. The first
// kNumBasicStats are always computed; the rest only with full statistics
// (squared denominators, soft-label intersection, valid-element count).
// X(enumerator, name): the one list of them, in order; the extension exports
// the names (fastdice::constants, ops/constants.cpp), which Python reads.
#define FD_STATS(X)                                                            \
  X(kTruePositive, true_positive)         /* sum p*t */                        \
  X(kSumProb, sum_prob)                   /* sum p */                          \
  X(kSumTarget, sum_target)               /* sum t */                          \
  X(kSumProbSq, sum_prob_sq)              /* sum p^2 */                        \
  X(kSumTargetSq, sum_target_sq)          /* sum t^2 */                        \
  X(kSumAbsDiff, sum_abs_diff)            /* sum |p - t| */                    \
  X(kSumAbsProb, sum_abs_prob)            /* sum |p| */                        \
  X(kSumAbsTarget, sum_abs_target)        /* sum |t| */                        \
  X(kValidCount, valid_count)             /* elements that were not ignored */ \
  X(kPixelLoss, pixel_loss)               /* sum l, the per-element loss */    \
  X(kPixelLossTarget, pixel_loss_target)  /* sum t * l */

#define FD_STAT_ENUMERATOR_(enumerator, name) enumerator,
enum Stat : int { FD_STATS(FD_STAT_ENUMERATOR_) kNumStats };
#undef FD_STAT_ENUMERATOR_
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
  kCoefPixelLoss = 5,
  kCoefPixelLossTarget = 6,
  kNumGradCoefs = 7,
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
    case kCoefSumAbsProb:
      return kSumAbsProb;
    case kCoefPixelLoss:
      return kPixelLoss;
    default:
      return kPixelLossTarget;
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

// d(loss)/dt for one element of a dense target, from the gradient of its
// (sample, class) statistics gs[0..kNumStats) (the Dice part; the pixel
// loss adds gs[kPixelLoss] * dl/dt + gs[kPixelLossTarget] * (l + t dl/dt)).
// The target is not activated: each statistic is a plain function of t.
template <bool kFull, typename acc_t>
FD_HOST_DEVICE acc_t grad_wrt_target(const acc_t* gs, acc_t p, acc_t t) {
  acc_t g = gs[kTruePositive] * p + gs[kSumTarget];
  if (kFull) {
    g += gs[kSumTargetSq] * (acc_t(2) * t) - gs[kSumAbsDiff] * sign_of(p - t) + gs[kSumAbsTarget] * sign_of(t);
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

// ---- The per-element (pixel) losses fused next to the Dice statistics ----
//
// The formulas are shared; the transcendental functions come from the backend
// through a policy M with static members exp_nonpositive(x) (x <= 0, -inf -> 0),
// log(x) (x >= 0, 0 -> -inf) and log1p_unit(x) (x in [0, 1]), so that the CPU
// can use vectorizable polynomials and CUDA its libdevice functions.

// One element's loss l, the coefficient of its gradient in the logits (see
// below) and its derivative dl/dt in a dense target (0 where l does not
// depend on t). Unused members cost nothing: every caller inlines the terms.
template <typename acc_t>
struct PixelTerm {
  acc_t loss;
  acc_t grad;
  acc_t grad_target;
};

// Cross-entropy / softmax focal loss of class c at one position, from
// lp = log p_c (the log-softmax, from the logits, exact for tiny p) and p = p_c:
//   l = (1 - p)^gamma * (-lp)                 (gamma = 0: -log p_c)
// and q with dl/dz_j = q * (delta_cj - p_j) for every logit z_j of the position:
//   q = -(1 - p)^gamma * (1 + gamma * p * (-lp) / (1 - p)),
// the ratio -lp / (1 - p) taken as its limit 1 at p = 1.
// kFocal = false is gamma = 0, a compile-time case so that the plain
// cross-entropy loops carry no focal code.
template <bool kFocal, typename M, typename acc_t>
FD_HOST_DEVICE PixelTerm<acc_t> softmax_pixel_term(acc_t lp, acc_t p, acc_t gamma) {
  const acc_t nll = -lp;
  if constexpr (!kFocal) return {nll, acc_t(-1), acc_t(0)};
  const acc_t one_minus_p = acc_t(1) - p;
  const acc_t modulator = M::exp_nonpositive(gamma * M::log(one_minus_p));
  // Both sides computed, then selected: branch-free for vectorizers. At
  // p = 0 (a logit of -inf) the product's limit 0 replaces 0 * inf.
  const acc_t raw_ratio = nll / one_minus_p;
  const acc_t ratio = one_minus_p > acc_t(0) ? raw_ratio : acc_t(1);
  const acc_t raw_focal = gamma * p * ratio;
  const acc_t focal = p > acc_t(0) ? raw_focal : acc_t(0);
  return {modulator * nll, -modulator * (acc_t(1) + focal), acc_t(0)};
}

// Binary cross-entropy / sigmoid focal loss of one logit z with target t
// (MONAI's sigmoid_focal_loss, which is BCE-with-logits for gamma = 0):
//   bce = max(z, 0) - z t + log(1 + exp(-|z|))
//   l = exp(gamma * logsigmoid(-z (2t - 1))) * bce
// and grad = dl/dz = m * ((sigmoid(z) - t) - gamma * s * sigmoid(z s) * bce)
// with s = 2t - 1 and m the modulator; in the target,
//   dl/dt = -z * m * (1 + 2 gamma sigmoid(z s) bce)   (gamma = 0: -z).
// kHardTarget: t is 0 or 1 (label maps), so |z s| = |z| and the modulator
// reuses exp(-|z|) and its log1p instead of computing them again.
template <bool kFocal, bool kHardTarget, typename M, typename acc_t>
FD_HOST_DEVICE PixelTerm<acc_t> sigmoid_pixel_term(acc_t z, acc_t t, acc_t gamma) {
  const acc_t e = M::exp_nonpositive(-abs_of(z));
  const acc_t log1p_e = M::log1p_unit(e);
  const acc_t bce = (z > acc_t(0) ? z : acc_t(0)) - z * t + log1p_e;
  const acc_t d_bce = sigmoid_from_exp_neg_abs(z, e) - t;
  if constexpr (!kFocal) return {bce, d_bce, -z};
  const acc_t s = acc_t(2) * t - acc_t(1);
  const acc_t zs = z * s;  // the modulator's argument is logsigmoid(-zs)
  const acc_t e_s = kHardTarget ? e : M::exp_nonpositive(-abs_of(zs));
  const acc_t log1p_e_s = kHardTarget ? log1p_e : M::log1p_unit(e_s);
  const acc_t log_sigmoid = (zs < acc_t(0) ? acc_t(0) : -zs) - log1p_e_s;
  const acc_t modulator = M::exp_nonpositive(gamma * log_sigmoid);
  const acc_t sigmoid_zs = sigmoid_from_exp_neg_abs(zs, e_s);
  return {modulator * bce, modulator * (d_bce - gamma * s * sigmoid_zs * bce),
          -z * modulator * (acc_t(1) + acc_t(2) * gamma * sigmoid_zs * bce)};
}

// The pixel loss's part of d(loss)/dt, given its term at the element.
template <typename acc_t>
FD_HOST_DEVICE acc_t pixel_grad_wrt_target(const acc_t* gs, const PixelTerm<acc_t>& term, acc_t t) {
  return gs[kPixelLoss] * term.grad_target + gs[kPixelLossTarget] * (term.loss + t * term.grad_target);
}

}  // namespace fastdice

