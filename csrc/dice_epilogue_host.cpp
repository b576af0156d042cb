// The epilogue op's host side: validation of its arguments and the
// EpilogueParams its CPU and CUDA kernels run on.
#include "dice_epilogue_host.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <limits>
#include <string>

#include "parse_choice.h"

namespace fastdice {
namespace {

at::Tensor checked_weight(const c10::optional<at::Tensor>& weight, const char* name, const at::Tensor& stats) {
  if (!weight.has_value() || !weight->defined()) return at::Tensor();
  const at::Tensor& w = *weight;
  TORCH_CHECK_VALUE(w.device() == stats.device(), "fastdice: ", name, " is on ", w.device(), " but stats on ",
                    stats.device());
  TORCH_CHECK_VALUE(w.dim() == 1 && w.size(0) == stats.size(1), "fastdice: ", name, " must have shape (",
                    stats.size(1), ",) (one entry per class), got ", w.sizes());
  TORCH_CHECK_TYPE(w.is_floating_point(), "fastdice: ", name, " must be a float tensor, got ", w.scalar_type());
  return w.to(stats.scalar_type()).contiguous();
}

void check_finite_nonnegative(double v, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(v) && v >= 0, "fastdice: ", name, " must be a finite number >= 0, got ", v);
}

}  // namespace

PreparedEpilogue prepare_epilogue(FD_EPILOGUE_PARAMS) {
  TORCH_CHECK_VALUE(stats.dim() == 3 && stats.size(2) == kNumStats, "fastdice: stats must have shape (B, C, ",
                    int(kNumStats), "), got ", stats.sizes());
  TORCH_CHECK_TYPE(stats.scalar_type() == at::kFloat || stats.scalar_type() == at::kDouble,
                   "fastdice: stats must be float32 or float64, got ", stats.scalar_type());
  PreparedEpilogue out;
  out.stats = stats.contiguous();
  out.weight = checked_weight(weight, "weight", stats);
  out.ce_weight = checked_weight(ce_weight, "ce_weight", stats);
  check_finite_nonnegative(smooth_nr, "smooth_nr");
  check_finite_nonnegative(smooth_dr, "smooth_dr");
  check_finite_nonnegative(lambda_dice, "lambda_dice");
  check_finite_nonnegative(lambda_ce, "lambda_ce");
  TORCH_CHECK_VALUE(std::isfinite(log_eps) && log_eps > 0, "fastdice: log_eps must be a finite number > 0, got ",
                    log_eps);
  TORCH_CHECK_VALUE(label_smoothing >= 0 && label_smoothing <= 1,
                    "fastdice: label_smoothing must be in [0, 1], got ", label_smoothing);
  TORCH_CHECK_VALUE(ce_positions >= 0, "fastdice: ce_positions must be >= 0, got ", ce_positions);

  EpilogueParams& p = out.params;
  p.batch = stats.size(0);
  p.classes = stats.size(1);
  p.first_class = !include_background && p.classes > 1 ? 1 : 0;
  p.pooling = parse_choice<Pooling>(
      pooling, "pooling", {{"global", Pooling::kGlobal}, {"batch", Pooling::kBatch}, {"sample", Pooling::kSample}});
  p.form = parse_choice<DiceForm>(
      form, "form", {{"plain", DiceForm::kPlain}, {"squared", DiceForm::kSquared}, {"soft_label", DiceForm::kSoftLabel}});
  p.jaccard = jaccard;
  p.smooth_nr = smooth_nr;
  p.smooth_dr = smooth_dr;
  p.log_loss = log_loss;
  p.log_eps = log_eps;
  p.reduction = parse_choice<Reduction>(
      reduction, "reduction", {{"mean", Reduction::kMean}, {"sum", Reduction::kSum}, {"none", Reduction::kNone}});
  p.lambda_dice = lambda_dice;
  p.lambda_ce = lambda_ce;
  p.ce = parse_choice<CeFamily>(ce_family, "ce_family",
                                {{"none", CeFamily::kNone},
                                 {"cross_entropy", CeFamily::kCrossEntropy},
                                 {"binary_cross_entropy", CeFamily::kBinary}});
  p.ce_label_map = ce_label_map;
  p.ce_positions = double(ce_positions);
  p.label_smoothing = label_smoothing;
  p.tiny = stats.scalar_type() == at::kDouble ? std::numeric_limits<double>::min()
                                               : double(std::numeric_limits<float>::min());
  TORCH_CHECK_VALUE(p.ce == CeFamily::kNone || p.reduction != Reduction::kNone,
                    "fastdice: reduction 'none' is not available with a cross-entropy term");
  TORCH_CHECK_VALUE(p.ce == CeFamily::kCrossEntropy || label_smoothing == 0,
                    "fastdice: label_smoothing needs ce_family='cross_entropy'");
  if (p.reduction == Reduction::kNone && p.pooling == Pooling::kSample) {
    out.out_shape = {p.batch, p.dice_classes()};
  } else if (p.reduction == Reduction::kNone && p.pooling == Pooling::kBatch) {
    out.out_shape = {p.dice_classes()};
  }
  return out;
}

at::Tensor check_epilogue_grad(const at::Tensor& grad, const PreparedEpilogue& prepared) {
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(prepared.out_shape), "fastdice: grad must have shape ",
                    at::IntArrayRef(prepared.out_shape), " (the loss'), got ", grad.sizes());
  TORCH_CHECK_VALUE(grad.device() == prepared.stats.device(), "fastdice: grad is on ", grad.device(),
                    " but stats on ", prepared.stats.device());
  return grad.to(prepared.stats.scalar_type()).contiguous();
}

}  // namespace fastdice
