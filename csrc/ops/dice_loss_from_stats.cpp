// Schema and autograd of fastdice::dice_loss_from_stats: the loss from the
// statistics [B, C, 11] of dice_stats in one op (one dispatcher call, one
// autograd node, one small kernel each way) instead of ~10 tensor ops and
// their backward nodes. Math: csrc/dice_epilogue.h; kernels: cpu/ and cuda/
// dice_loss_from_stats_kernel; fake kernels: fastdice/_ops.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <string>

#include "../dice_epilogue_host.h"

TORCH_LIBRARY_FRAGMENT(fastdice, m) {
  // The Dice-family loss lambda_dice * Dice + lambda_ce * CE of per-(sample,
  // class) statistics. Dice: pooling 'global' | 'batch' | 'sample', class 0
  // dropped unless include_background (when C > 1), form 'plain' (sum p + sum
  // t) | 'squared' (sum p^2 + sum t^2) | 'soft_label' (L1 form), Dice or
  // soft Jaccard score with smooth_nr / smooth_dr, 1 - score or
  // -log(max(score, log_eps)), class weight, reduction 'mean' | 'sum' |
  // 'none'. CE ('none' | 'cross_entropy' | 'binary_cross_entropy'): the
  // normalization of torch's CrossEntropyLoss / BCEWithLogitsLoss from sum l
  // and sum t*l (ce_positions = B * spatial size for dense targets).
  m.def(
      "dice_loss_from_stats(Tensor stats, Tensor? weight, Tensor? ce_weight, str pooling, "
      "bool include_background, str form, bool jaccard, float smooth_nr, float smooth_dr, bool log_loss, "
      "float log_eps, str reduction, float lambda_dice, float lambda_ce, str ce_family, bool ce_label_map, "
      "int ce_positions, float label_smoothing) -> Tensor");
  // d(loss)/d(stats) for grad = d(objective)/d(loss); weights are constants.
  m.def(
      "dice_loss_from_stats_backward(Tensor grad, Tensor stats, Tensor? weight, Tensor? ce_weight, str pooling, "
      "bool include_background, str form, bool jaccard, float smooth_nr, float smooth_dr, bool log_loss, "
      "float log_eps, str reduction, float lambda_dice, float lambda_ce, str ce_family, bool ce_label_map, "
      "int ce_positions, float label_smoothing) -> Tensor");
}

namespace fastdice {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = c10::optional<at::Tensor>;

at::Tensor call_forward(const at::Tensor& stats, const OptionalTensor& weight, const OptionalTensor& ce_weight,
                        FD_EPILOGUE_OPTION_PARAMS) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastdice::dice_loss_from_stats", "")
                       .typed<at::Tensor(const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                         FD_EPILOGUE_OPTION_PARAMS)>();
  return op.call(stats, weight, ce_weight, FD_EPILOGUE_OPTION_ARGS);
}

at::Tensor call_backward(const at::Tensor& grad, const at::Tensor& stats, const OptionalTensor& weight,
                         const OptionalTensor& ce_weight, FD_EPILOGUE_OPTION_PARAMS) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastdice::dice_loss_from_stats_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                         const OptionalTensor&, FD_EPILOGUE_OPTION_PARAMS)>();
  return op.call(grad, stats, weight, ce_weight, FD_EPILOGUE_OPTION_ARGS);
}

OptionalTensor optional_of(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : OptionalTensor(); }

class DiceLossFromStatsFunction : public torch::autograd::Function<DiceLossFromStatsFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& stats, const OptionalTensor& weight,
                            const OptionalTensor& ce_weight, FD_EPILOGUE_OPTION_PARAMS) {
    for (const OptionalTensor* w : {&weight, &ce_weight}) {
      TORCH_CHECK_VALUE(!w->has_value() || !(*w)->defined() || !(*w)->requires_grad(),
                        "fastdice: dice_loss_from_stats treats weight and ce_weight as constants; "
                        "pass them detached");
    }
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor none;
    ctx->save_for_backward({stats, weight.value_or(none), ce_weight.value_or(none)});
    auto& d = ctx->saved_data;
    d["pooling"] = std::string(pooling);
    d["include_background"] = include_background;
    d["form"] = std::string(form);
    d["jaccard"] = jaccard;
    d["smooth_nr"] = smooth_nr;
    d["smooth_dr"] = smooth_dr;
    d["log_loss"] = log_loss;
    d["log_eps"] = log_eps;
    d["reduction"] = std::string(reduction);
    d["lambda_dice"] = lambda_dice;
    d["lambda_ce"] = lambda_ce;
    d["ce_family"] = std::string(ce_family);
    d["ce_label_map"] = ce_label_map;
    d["ce_positions"] = ce_positions;
    d["label_smoothing"] = label_smoothing;
    return call_forward(stats, weight, ce_weight, FD_EPILOGUE_OPTION_ARGS);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    at::Tensor grad_stats;
    if (ctx->needs_input_grad(0) && grad_outputs[0].defined()) {
      auto& d = ctx->saved_data;
      grad_stats = call_backward(
          grad_outputs[0], saved[0], optional_of(saved[1]), optional_of(saved[2]), d["pooling"].toStringRef(),
          d["include_background"].toBool(), d["form"].toStringRef(), d["jaccard"].toBool(),
          d["smooth_nr"].toDouble(), d["smooth_dr"].toDouble(), d["log_loss"].toBool(), d["log_eps"].toDouble(),
          d["reduction"].toStringRef(), d["lambda_dice"].toDouble(), d["lambda_ce"].toDouble(),
          d["ce_family"].toStringRef(), d["ce_label_map"].toBool(), d["ce_positions"].toInt(),
          d["label_smoothing"].toDouble());
    }
    variable_list grads(18);  // one per forward argument; only stats is differentiable
    grads[0] = grad_stats;
    return grads;
  }
};

at::Tensor dice_loss_from_stats_autograd(const at::Tensor& stats, const OptionalTensor& weight,
                                         const OptionalTensor& ce_weight, FD_EPILOGUE_OPTION_PARAMS) {
  return DiceLossFromStatsFunction::apply(stats, weight, ce_weight, FD_EPILOGUE_OPTION_ARGS);
}

}  // namespace
}  // namespace fastdice

TORCH_LIBRARY_IMPL(fastdice, Autograd, m) {
  m.impl("dice_loss_from_stats", &fastdice::dice_loss_from_stats_autograd);
  m.impl("dice_loss_from_stats_backward", torch::autograd::autogradNotImplementedFallback());
}
