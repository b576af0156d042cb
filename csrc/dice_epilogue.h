// The loss from the statistics: the O(B*C) epilogue of the Dice losses (Dice,
// soft Jaccard, squared / soft-label forms, log loss, class weights, pooling,
// reduction) and of the cross-entropy term of Dice + CE, with its gradient
// with respect to every statistic.
//
// Why an op rather than a dozen tensor ops in Python: each of those is a
// dispatcher call and an autograd node on the host and, on CUDA, a kernel
// launch of a few microseconds; together about 20 forward + backward per
// step, as much as the fused statistics kernels take at common sizes. The
// math is here once, as __host__ __device__ functions; the CPU and CUDA
// kernels only loop over rows (the routing of rows to loss entries and of the
// gradient back is here too). Everything is accumulated in double.
#pragma once

#include <cmath>
#include <cstdint>

#include "dice_math.h"

namespace fastdice {

enum class Pooling : int { kGlobal = 0, kBatch = 1, kSample = 2 };
enum class DiceForm : int { kPlain = 0, kSquared = 1, kSoftLabel = 2 };
enum class Reduction : int { kMean = 0, kSum = 1, kNone = 2 };
enum class CeFamily : int { kNone = 0, kCrossEntropy = 1, kBinary = 2 };

// Plain data, passed by value to CUDA kernels as to CPU loops.
struct EpilogueParams {
  int64_t batch;
  int64_t classes;
  int64_t first_class;  // 1 drops the background class from the Dice term
  Pooling pooling;
  DiceForm form;
  bool jaccard;
  double smooth_nr;
  double smooth_dr;
  bool log_loss;
  double log_eps;
  Reduction reduction;
  double lambda_dice;
  double lambda_ce;
  CeFamily ce;
  bool ce_label_map;
  double ce_positions;     // B * spatial size: the dense-target denominators
  double label_smoothing;  // cross-entropy only
  double tiny;             // smallest normal number of the statistics' dtype (the CE denominator's floor)

  // Number of per-(entry) Dice losses: 1 (global), C' (batch), B * C' (sample).
  FD_HOST_DEVICE int64_t dice_classes() const { return classes - first_class; }
  FD_HOST_DEVICE int64_t entries() const {
    return pooling == Pooling::kGlobal ? 1 : pooling == Pooling::kBatch ? dice_classes() : batch * dice_classes();
  }
};

// Intersection I and denominator D of one statistics row. Every form is
// linear in the statistics, so pooled rows can be pooled as (I, D) pairs.
template <typename S>
FD_HOST_DEVICE void dice_terms(const S* row, DiceForm form, double& I, double& D) {
  if (form == DiceForm::kSquared) {
    I = double(row[kTruePositive]);
    D = double(row[kSumProbSq]) + double(row[kSumTargetSq]);
  } else if (form == DiceForm::kSoftLabel) {
    // (|p|_1 + |t|_1 - |p - t|_1) / 2: sum p*t for hard labels, exact for soft ones.
    const double abs_p = double(row[kSumAbsProb]);
    const double abs_t = double(row[kSumAbsTarget]);
    I = 0.5 * (abs_p + abs_t - double(row[kSumAbsDiff]));
    D = abs_p + abs_t;
  } else {
    I = double(row[kTruePositive]);
    D = double(row[kSumProb]) + double(row[kSumTarget]);
  }
}

// The transpose of dice_terms: adds dI * dI/ds + dD * dD/ds to grad_row.
template <typename T>
FD_HOST_DEVICE void add_dice_terms_grad(double dI, double dD, DiceForm form, T* grad_row) {
  if (form == DiceForm::kSquared) {
    grad_row[kTruePositive] += dI;
    grad_row[kSumProbSq] += dD;
    grad_row[kSumTargetSq] += dD;
  } else if (form == DiceForm::kSoftLabel) {
    grad_row[kSumAbsProb] += 0.5 * dI + dD;
    grad_row[kSumAbsTarget] += 0.5 * dI + dD;
    grad_row[kSumAbsDiff] += -0.5 * dI;
  } else {
    grad_row[kTruePositive] += dI;
    grad_row[kSumProb] += dD;
    grad_row[kSumTarget] += dD;
  }
}

// Score: Dice (2I + nr) / (D + dr) or Jaccard (I + nr) / (D - I + dr).
FD_HOST_DEVICE double dice_score(double I, double D, const EpilogueParams& p) {
  return p.jaccard ? (I + p.smooth_nr) / (D - I + p.smooth_dr) : (2 * I + p.smooth_nr) / (D + p.smooth_dr);
}

// Loss of one entry: 1 - score, or -log(max(score, log_eps)).
FD_HOST_DEVICE double entry_loss(double I, double D, const EpilogueParams& p) {
  const double score = dice_score(I, D, p);
  if (!p.log_loss) return 1 - score;
  return -::log(score >= p.log_eps || score != score ? score : p.log_eps);
}

// d(entry_loss)/dI and d(entry_loss)/dD, times g.
FD_HOST_DEVICE void entry_loss_grad(double I, double D, const EpilogueParams& p, double g, double& dI, double& dD) {
  const double den = p.jaccard ? D - I + p.smooth_dr : D + p.smooth_dr;
  const double score = dice_score(I, D, p);
  // d loss / d score: -1, or -1/score where the clamp passes: score > eps
  // strictly, as torch's clamp_min backward (where(self > min, grad, 0)).
  double g_score = -g;
  if (p.log_loss) g_score = score > p.log_eps ? -g / score : 0.0 * g;
  // Quotient rule on n / den with d n/dI = (jaccard ? 1 : 2), d den/dI = (jaccard ? -1 : 0), d den/dD = 1.
  const double inv_den = 1 / den;
  dI = g_score * (p.jaccard ? inv_den * (1 + score) : 2 * inv_den);
  dD = -g_score * score * inv_den;
}

// The class weight of the Dice entry (1 without weight).
template <typename S>
FD_HOST_DEVICE double weight_at(const S* weight, int64_t c) {
  return weight ? double(weight[c]) : 1.0;
}

// ---- The cross-entropy term ----------------------------------------------
// total = sum_{b,c} w_c * [CE: (1 - eps) * sum t*l + eps / C * sum l; BCE: sum l]
// mean: total / max(den, tiny) with den = CE label map: sum_{b,c} w_c * sum t
// (the weighted count of valid positions); CE dense: B * spatial; BCE: C *
// (label map: sum_{b,c} sum t; dense: B * spatial). As torch's
// CrossEntropyLoss / BCEWithLogitsLoss.

struct CeSums {
  double total;
  double den;
};

template <typename S>
FD_HOST_DEVICE CeSums ce_row_sums(const S* row, double w, const EpilogueParams& p) {
  CeSums s{0.0, 0.0};
  if (p.ce == CeFamily::kCrossEntropy) {
    s.total = w * ((1 - p.label_smoothing) * double(row[kPixelLossTarget]) +
                   p.label_smoothing / double(p.classes) * double(row[kPixelLoss]));
    if (p.ce_label_map) s.den = w * double(row[kSumTarget]);
  } else if (p.ce == CeFamily::kBinary) {
    s.total = w * double(row[kPixelLoss]);
    if (p.ce_label_map) s.den = double(p.classes) * double(row[kSumTarget]);
  }
  return s;
}

// The CE denominator from the summed row contributions.
FD_HOST_DEVICE double ce_denominator(double row_den_sum, const EpilogueParams& p) {
  if (p.ce_label_map) return row_den_sum;
  return p.ce == CeFamily::kBinary ? p.ce_positions * double(p.classes) : p.ce_positions;
}

FD_HOST_DEVICE double ce_value(CeSums sums, const EpilogueParams& p) {
  if (p.reduction == Reduction::kSum) return sums.total;
  const double den = ce_denominator(sums.den, p);
  // No valid position: the sum is 0 too, and the term is a differentiable 0.
  return sums.total / (den >= p.tiny ? den : p.tiny);
}

// Gradient of g * ce_value with respect to one row of statistics (added).
template <typename S, typename T>
FD_HOST_DEVICE void add_ce_row_grad(const S* row, double w, CeSums sums, const EpilogueParams& p, double g,
                                    T* grad_row) {
  (void)row;
  double d_total = g;
  double d_den = 0.0;
  if (p.reduction != Reduction::kSum) {
    const double den = ce_denominator(sums.den, p);
    const bool passes = den > p.tiny;  // torch's clamp_min backward: strictly above the floor
    const double den_c = passes ? den : p.tiny;
    d_total = g / den_c;
    d_den = passes ? -g * sums.total / (den_c * den_c) : 0.0 * g;
  }
  if (p.ce == CeFamily::kCrossEntropy) {
    grad_row[kPixelLossTarget] += d_total * w * (1 - p.label_smoothing);
    grad_row[kPixelLoss] += d_total * w * p.label_smoothing / double(p.classes);
    if (p.ce_label_map) grad_row[kSumTarget] += d_den * w;
  } else if (p.ce == CeFamily::kBinary) {
    grad_row[kPixelLoss] += d_total * w;
    if (p.ce_label_map) grad_row[kSumTarget] += d_den * double(p.classes);
  }
}

// ---- Routing: which rows feed which loss entry, and the gradient back ----
// Shared by the CPU loops and the CUDA block; each backend supplies only its
// loops (and, for global pooling, its sum over the rows).

template <typename S>
FD_HOST_DEVICE const S* stats_row(const S* stats, const EpilogueParams& p, int64_t b, int64_t c) {
  return stats + (b * p.classes + c) * kNumStats;
}

// (I, D) of class c pooled over the batch (batch pooling).
template <typename S>
FD_HOST_DEVICE void class_terms(const S* stats, const EpilogueParams& p, int64_t c, double& I, double& D) {
  I = D = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    double i, d;
    dice_terms(stats_row(stats, p, b, c), p.form, i, d);
    I += i;
    D += d;
  }
}

// The pooled (I, D) of entry e for batch pooling (class first_class + e over
// the batch) or sample pooling (row (e / C', first_class + e % C')), and its class.
template <typename S>
FD_HOST_DEVICE int64_t entry_terms(const S* stats, const EpilogueParams& p, int64_t e, double& I, double& D) {
  if (p.pooling == Pooling::kBatch) {
    const int64_t c = p.first_class + e;
    class_terms(stats, p, c, I, D);
    return c;
  }
  const int64_t b = e / p.dice_classes();
  const int64_t c = p.first_class + e % p.dice_classes();
  dice_terms(stats_row(stats, p, b, c), p.form, I, D);
  return c;
}

// weight_c * loss of entry e (batch or sample pooling).
template <typename S>
FD_HOST_DEVICE double weighted_entry_loss(const S* stats, const S* weight, const EpilogueParams& p, int64_t e) {
  double I, D;
  const int64_t c = entry_terms(stats, p, e, I, D);
  return weight_at(weight, c) * entry_loss(I, D, p);
}

// The output from the sum over entries of weight * loss and the CE sums.
FD_HOST_DEVICE double total_loss(double dice, CeSums ce, const EpilogueParams& p) {
  if (p.reduction == Reduction::kMean) dice /= double(p.entries());
  double loss = p.lambda_dice * dice;
  if (p.ce != CeFamily::kNone) loss += p.lambda_ce * ce_value(ce, p);
  return loss;
}

// d(output)/d(loss of entry e), lambda_dice included: grad[e] for reduction
// 'none' (batch / sample pooling), else grad[0] times the reduction's share.
template <typename S>
FD_HOST_DEVICE double entry_output_grad(const S* grad, const EpilogueParams& p, int64_t e) {
  const bool per_entry = p.reduction == Reduction::kNone && p.pooling != Pooling::kGlobal;
  const double entry_scale = p.reduction == Reduction::kMean ? 1.0 / double(p.entries()) : 1.0;
  return p.lambda_dice * (per_entry ? double(grad[e]) : double(grad[0]) * entry_scale);
}

// (dI, dD) of entry e's pooled (I, D), weight and output gradient included
// (batch or sample pooling).
template <typename S>
FD_HOST_DEVICE void entry_dice_grad(const S* stats, const S* weight, const S* grad, const EpilogueParams& p,
                                    int64_t e, double& dI, double& dD) {
  double I, D;
  const int64_t c = entry_terms(stats, p, e, I, D);
  entry_loss_grad(I, D, p, entry_output_grad(grad, p, e) * weight_at(weight, c), dI, dD);
}

// (dI, dD) of row (b, c) of a Dice class for global pooling (from the one
// entry's (global_dI, global_dD)) or sample pooling. Batch pooling: the
// caller computes entry_dice_grad once per class for all its rows.
template <typename S>
FD_HOST_DEVICE void row_dice_grad(const S* stats, const S* weight, const S* grad, const EpilogueParams& p, int64_t b,
                                  int64_t c, double global_dI, double global_dD, double& dI, double& dD) {
  if (p.pooling == Pooling::kGlobal) {
    dI = weight_at(weight, c) * global_dI;
    dD = weight_at(weight, c) * global_dD;
  } else {
    entry_dice_grad(stats, weight, grad, p, b * p.dice_classes() + c - p.first_class, dI, dD);
  }
}

// Writes grad_stats' row (b, c): the Dice coefficients (dI, dD) through the
// row's terms (Dice classes only) plus the CE term's gradient (g_ce = lambda_ce * grad).
template <typename S>
FD_HOST_DEVICE void write_row_grad(const S* stats, const S* ce_weight, CeSums ce, const EpilogueParams& p,
                                   double g_ce, int64_t b, int64_t c, bool dice_class, double dI, double dD,
                                   S* grad_stats) {
  double g[kNumStats];
  for (int k = 0; k < kNumStats; ++k) g[k] = 0.0;
  if (dice_class) add_dice_terms_grad(dI, dD, p.form, g);
  if (p.ce != CeFamily::kNone) add_ce_row_grad(stats_row(stats, p, b, c), weight_at(ce_weight, c), ce, p, g_ce, g);
  S* out = grad_stats + (b * p.classes + c) * kNumStats;
  for (int k = 0; k < kNumStats; ++k) out[k] = S(g[k]);
}

}  // namespace fastdice
