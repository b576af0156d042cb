// CPU kernels of fastdice::dice_loss_from_stats(_backward), and their
// registration: plain loops over the rows of stats[B, C, K] around the shared
// math and routing of dice_epilogue.h (the CUDA kernels run the same loops
// with the threads of one block).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

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
      const CeSums r = ce_row_sums(stats_row(stats, p, b, c), weight_at(ce_weight, c), p);
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
      dice_terms(stats_row(stats, p, b, c), p.form, i, d);
      const double w = weight_at(weight, c);
      I += w * i;
      D += w * d;
    }
  }
}

template <typename S>
void forward(const PreparedEpilogue& pe, S* out) {
  const EpilogueParams& p = pe.params;
  const S* stats = pe.stats.data_ptr<S>();
  const S* weight = data_or_null<S>(pe.weight);
  double dice = 0;  // sum over entries of weight * loss
  if (p.pooling == Pooling::kGlobal) {
    double I, D;
    global_terms(stats, weight, p, I, D);
    dice = entry_loss(I, D, p);
  } else {
    for (int64_t e = 0; e < p.entries(); ++e) {
      const double l = weighted_entry_loss(stats, weight, p, e);
      if (p.reduction == Reduction::kNone) out[e] = S(p.lambda_dice * l);
      dice += l;
    }
    if (p.reduction == Reduction::kNone) return;
  }
  out[0] = S(total_loss(dice, ce_sums(stats, data_or_null<S>(pe.ce_weight), p), p));
}

template <typename S>
void backward(const PreparedEpilogue& pe, const S* grad, S* grad_stats) {
  const EpilogueParams& p = pe.params;
  const S* stats = pe.stats.data_ptr<S>();
  const S* weight = data_or_null<S>(pe.weight);
  const S* ce_weight = data_or_null<S>(pe.ce_weight);
  const CeSums ce = ce_sums(stats, ce_weight, p);
  const double g_ce = p.ce != CeFamily::kNone ? p.lambda_ce * double(grad[0]) : 0.0;  // CE: a reduced loss
  double global_dI = 0, global_dD = 0;
  if (p.pooling == Pooling::kGlobal) {
    double I, D;
    global_terms(stats, weight, p, I, D);
    entry_loss_grad(I, D, p, entry_output_grad(grad, p, 0), global_dI, global_dD);
  }
  for (int64_t c = 0; c < p.classes; ++c) {
    const bool dice_class = c >= p.first_class;
    double class_dI = 0, class_dD = 0;
    if (dice_class && p.pooling == Pooling::kBatch) {
      entry_dice_grad(stats, weight, grad, p, c - p.first_class, class_dI, class_dD);
    }
    for (int64_t b = 0; b < p.batch; ++b) {
      double dI = class_dI, dD = class_dD;
      if (dice_class && p.pooling != Pooling::kBatch) {
        row_dice_grad(stats, weight, grad, p, b, c, global_dI, global_dD, dI, dD);
      }
      write_row_grad(stats, ce_weight, ce, p, g_ce, b, c, dice_class, dI, dD, grad_stats);
    }
  }
}

at::Tensor dice_loss_from_stats_cpu(FD_EPILOGUE_PARAMS) {
  TORCH_CHECK_VALUE(stats.device().is_cpu(), "fastdice: expected CPU stats, got ", stats.device());
  const PreparedEpilogue pe = prepare_epilogue(FD_EPILOGUE_ARGS);
  at::Tensor out = at::empty(pe.out_shape, pe.stats.options());
  AT_DISPATCH_FLOATING_TYPES(pe.stats.scalar_type(), "dice_loss_from_stats_cpu",
                             [&] { forward<scalar_t>(pe, out.data_ptr<scalar_t>()); });
  return out;
}

at::Tensor dice_loss_from_stats_backward_cpu(const at::Tensor& grad, FD_EPILOGUE_PARAMS) {
  TORCH_CHECK_VALUE(stats.device().is_cpu(), "fastdice: expected CPU stats, got ", stats.device());
  const PreparedEpilogue pe = prepare_epilogue(FD_EPILOGUE_ARGS);
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
