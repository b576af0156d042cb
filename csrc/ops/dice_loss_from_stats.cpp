// Schema and autograd of fastdice::dice_loss_from_stats: the loss from the
// statistics [B, C, 11] of dice_stats in one op (one dispatcher call, one
// autograd node, one small kernel each way) instead of ~10 tensor ops and
// their backward nodes. The options are the list FD_EPILOGUE_OPTIONS
// (dice_epilogue_host.h), from which the schemas, signatures and saved_data
// below are generated. Math: csrc/dice_epilogue.h; kernels: cpu/ and cuda/
// dice_loss_from_stats_kernel; fake kernels: fastdice/_ops.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
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
  m.def("dice_loss_from_stats(" FD_EPILOGUE_SCHEMA_ARGS ") -> Tensor");
  // d(loss)/d(stats) for grad = d(objective)/d(loss); weights are constants.
  m.def("dice_loss_from_stats_backward(Tensor grad, " FD_EPILOGUE_SCHEMA_ARGS ") -> Tensor");
}

namespace fastdice {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = c10::optional<at::Tensor>;

at::Tensor call_forward(FD_EPILOGUE_PARAMS) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastdice::dice_loss_from_stats", "")
                       .typed<at::Tensor(FD_EPILOGUE_TYPES)>();
  return op.call(FD_EPILOGUE_ARGS);
}

at::Tensor call_backward(const at::Tensor& grad, FD_EPILOGUE_PARAMS) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastdice::dice_loss_from_stats_backward", "")
                       .typed<at::Tensor(const at::Tensor&, FD_EPILOGUE_TYPES)>();
  return op.call(grad, FD_EPILOGUE_ARGS);
}

OptionalTensor optional_of(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : OptionalTensor(); }

#define FD_SAVE_OPTION_(kind, name, default_) d[#name] = FD_EPILOGUE_SAVE_##kind(name);
#define FD_LOAD_OPTION_(kind, name, default_) , FD_EPILOGUE_LOAD_##kind(d[#name])

class DiceLossFromStatsFunction : public torch::autograd::Function<DiceLossFromStatsFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, FD_EPILOGUE_PARAMS) {
    for (const OptionalTensor* w : {&weight, &ce_weight}) {
      TORCH_CHECK_VALUE(!w->has_value() || !(*w)->defined() || !(*w)->requires_grad(),
                        "fastdice: dice_loss_from_stats treats weight and ce_weight as constants; "
                        "pass them detached");
    }
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor none;
    ctx->save_for_backward({stats, weight.value_or(none), ce_weight.value_or(none)});
    auto& d = ctx->saved_data;
    FD_EPILOGUE_OPTIONS(FD_SAVE_OPTION_)
    return call_forward(FD_EPILOGUE_ARGS);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    at::Tensor grad_stats;
    if (ctx->needs_input_grad(0) && grad_outputs[0].defined()) {
      auto& d = ctx->saved_data;
      grad_stats = call_backward(grad_outputs[0], saved[0], optional_of(saved[1]),
                                 optional_of(saved[2]) FD_EPILOGUE_OPTIONS(FD_LOAD_OPTION_));
    }
    variable_list grads(kEpilogueOpInputs);  // one per forward argument; only stats is differentiable
    grads[0] = grad_stats;
    return grads;
  }
};

#undef FD_SAVE_OPTION_
#undef FD_LOAD_OPTION_

at::Tensor dice_loss_from_stats_autograd(FD_EPILOGUE_PARAMS) {
  return DiceLossFromStatsFunction::apply(FD_EPILOGUE_ARGS);
}

}  // namespace
}  // namespace fastdice

TORCH_LIBRARY_IMPL(fastdice, Autograd, m) {
  m.impl("dice_loss_from_stats", &fastdice::dice_loss_from_stats_autograd);
  m.impl("dice_loss_from_stats_backward", torch::autograd::autogradNotImplementedFallback());
}
