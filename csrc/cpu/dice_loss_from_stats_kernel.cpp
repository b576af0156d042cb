// CPU kernels of the loss-from-statistics op: plain loops over the rows of
// stats[B, C, K] around the shared math of dice_epilogue.h (the CUDA kernels
// run the same loops with threads).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <array>

#include "../dice_epilogue_host.h"

namespace fastdice {
namespace cpu {
namespace {

// Sums of the cross-entropy term over every row (all classes).
template <typename S>
CeSums ce_sums(const S* stats, const S* ce_weight, const EpilogueParams& p) {
  CeSums sums{0.0, 0.0};
  if (p.ce == CeFamily::kNone) return sums;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t c = 0; c < p.classes; ++c) {
      const CeSums r = ce_row_sums(stats + (b * p.classes + c) * kNumStats, weight_at(ce_weight, c), p);
      sums.total += r.total;
      sums.den += r.den;
    }
  }
  return sums;
}

// Weighted (I, D) pooled over every row of the Dice classes (global pooling).
template <typename S>
void global_terms(const S* stats, const S* weight, const EpilogueParams& p, double& I, double& D) {
  I = D = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t c = p.first_class; c < p.classes; ++c) {
      double i, d;
      dice_terms(stats + (b * p.classes + c) * kNumStats, p.form, i, d);
      const double w = weight_at(weight, c);
      I += w * i;
      D += w * d;
    }
  }
}

// (I, D) of class c pooled over the batch (batch pooling).
template <typename S>
void class_terms(const S* stats, const EpilogueParams& p, int64_t c, double& I, double& D) {
  I = D = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    double i, d;
    dice_terms(stats + (b * p.classes + c) * kNumStats, p.form, i, d);
    I += i;
    D += d;
  }
}

template <typename S>
void forward(const PreparedEpilogue& pe, S* out) {
  const EpilogueParams& p = pe.params;
  const S* stats = pe.stats.data_ptr<S>();
  const S* weight = data_or_null<S>(pe.weight);
  const bool none = p.reduction == Reduction::kNone;
  double dice = 0;  // sum over entries of weight * loss
  if (p.pooling == Pooling::kGlobal) {
    double I, D;
    global_terms(stats, weight, p, I, D);
    dice = entry_loss(I, D, p);
  } else if (p.pooling == Pooling::kBatch) {
    for (int64_t c = p.first_class; c < p.classes; ++c) {
      double I, D;
      class_terms(stats, p, c, I, D);
      const double l = weight_at(weight, c) * entry_loss(I, D, p);
      if (none) out[c - p.first_class] = S(p.lambda_dice * l);
      dice += l;
    }
  } else {
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t c = p.first_class; c < p.classes; ++c) {
        double I, D;
        dice_terms(stats + (b * p.classes + c) * kNumStats, p.form, I, D);
        const double l = weight_at(weight, c) * entry_loss(I, D, p);
        if (none) out[b * p.dice_classes() + c - p.first_class] = S(p.lambda_dice * l);
        dice += l;
      }
    }
  }
  if (none && p.pooling != Pooling::kGlobal) return;
  if (p.reduction == Reduction::kMean) dice /= double(p.entries());
  double loss = p.lambda_dice * dice;
  if (p.ce != CeFamily::kNone) {
    loss += p.lambda_ce * ce_value(ce_sums(stats, data_or_null<S>(pe.ce_weight), p), p);
  }
  out[0] = S(loss);
}

template <typename S>
void backward(const PreparedEpilogue& pe, const S* grad, S* grad_stats) {
  const EpilogueParams& p = pe.params;
  const S* stats = pe.stats.data_ptr<S>();
  const S* weight = data_or_null<S>(pe.weight);
  const S* ce_weight = data_or_null<S>(pe.ce_weight);
  const bool none = p.reduction == Reduction::kNone;
  // d(output)/d(entry loss) for entry e: the reduction's share times lambda.
  const double entry_scale = p.reduction == Reduction::kMean ? 1.0 / double(p.entries()) : 1.0;
  auto grad_of_entry = [&](int64_t e) {
    return p.lambda_dice * (none && p.pooling != Pooling::kGlobal ? double(grad[e]) : double(grad[0]) * entry_scale);
  };
  const CeSums ce = ce_sums(stats, ce_weight, p);
  double global_dI = 0, global_dD = 0;
  if (p.pooling == Pooling::kGlobal) {
    double I, D;
    global_terms(stats, weight, p, I, D);
    entry_loss_grad(I, D, p, grad_of_entry(0), global_dI, global_dD);
  }
  for (int64_t c = 0; c < p.classes; ++c) {
    const bool dice_class = c >= p.first_class;
    double class_dI = 0, class_dD = 0;
    if (dice_class && p.pooling == Pooling::kBatch) {
      double I, D;
      class_terms(stats, p, c, I, D);
      entry_loss_grad(I, D, p, grad_of_entry(c - p.first_class) * weight_at(weight, c), class_dI, class_dD);
    }
    for (int64_t b = 0; b < p.batch; ++b) {
      const S* row = stats + (b * p.classes + c) * kNumStats;
      std::array<double, kNumStats> g{};
      if (dice_class) {
        double dI = class_dI, dD = class_dD;
        if (p.pooling == Pooling::kGlobal) {
          dI = weight_at(weight, c) * global_dI;
          dD = weight_at(weight, c) * global_dD;
        } else if (p.pooling == Pooling::kSample) {
          double I, D;
          dice_terms(row, p.form, I, D);
          entry_loss_grad(I, D, p, grad_of_entry(b * p.dice_classes() + c - p.first_class) * weight_at(weight, c),
                          dI, dD);
        }
        add_dice_terms_grad(dI, dD, p.form, g.data());
      }
      if (p.ce != CeFamily::kNone) {
        add_ce_row_grad(row, weight_at(ce_weight, c), ce, p, p.lambda_ce * double(grad[0]), g.data());
      }
      S* out = grad_stats + (b * p.classes + c) * kNumStats;
      for (int k = 0; k < kNumStats; ++k) out[k] = S(g[k]);
    }
  }
}

at::Tensor dice_loss_from_stats_cpu(const at::Tensor& stats, const c10::optional<at::Tensor>& weight,
                                    const c10::optional<at::Tensor>& ce_weight, FD_EPILOGUE_OPTION_PARAMS) {
  TORCH_CHECK_VALUE(stats.device().is_cpu(), "fastdice: expected CPU stats, got ", stats.device());
  const PreparedEpilogue pe = prepare_epilogue(stats, weight, ce_weight, FD_EPILOGUE_OPTION_ARGS);
  at::Tensor out = at::empty(pe.out_shape, pe.stats.options());
  AT_DISPATCH_FLOATING_TYPES(pe.stats.scalar_type(), "dice_loss_from_stats_cpu",
                             [&] { forward<scalar_t>(pe, out.data_ptr<scalar_t>()); });
  return out;
}

at::Tensor dice_loss_from_stats_backward_cpu(const at::Tensor& grad, const at::Tensor& stats,
                                             const c10::optional<at::Tensor>& weight,
                                             const c10::optional<at::Tensor>& ce_weight, FD_EPILOGUE_OPTION_PARAMS) {
  TORCH_CHECK_VALUE(stats.device().is_cpu(), "fastdice: expected CPU stats, got ", stats.device());
  const PreparedEpilogue pe = prepare_epilogue(stats, weight, ce_weight, FD_EPILOGUE_OPTION_ARGS);
  const at::Tensor g = check_epilogue_grad(grad, pe);
  at::Tensor grad_stats = at::empty_like(pe.stats);
  AT_DISPATCH_FLOATING_TYPES(pe.stats.scalar_type(), "dice_loss_from_stats_backward_cpu", [&] {
    backward<scalar_t>(pe, g.data_ptr<scalar_t>(), grad_stats.data_ptr<scalar_t>());
  });
  return grad_stats;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(fastdice, CPU, m) {
  m.impl("dice_loss_from_stats", &cpu::dice_loss_from_stats_cpu);
  m.impl("dice_loss_from_stats_backward", &cpu::dice_loss_from_stats_backward_cpu);
}

}  // namespace fastdice
