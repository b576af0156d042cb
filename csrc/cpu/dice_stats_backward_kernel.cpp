// CPU host wrapper of fastdice::dice_stats_backward and its registration:
// validation, gradient allocation, the call into the instruction set's kernels.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "../bad_value.h"
#include "dice_cpu_isa.h"

namespace fastdice {
namespace cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> dice_stats_backward_cpu(const at::Tensor& grad_stats, const at::Tensor& input,
                                                            const at::Tensor& target, c10::string_view activation,
                                                            bool full_stats, c10::optional<int64_t> ignore_index,
                                                            c10::string_view pixel_loss, double focal_gamma,
                                                            bool target_grad, const c10::optional<at::Tensor>& mask,
    at::OptionalIntArrayRef regions) {
  TORCH_CHECK_VALUE(input.device().is_cpu(), "fastdice: expected a CPU input, got ", input.device());
  const PreparedProblem prepared = prepare_problem(input, target, std::string(activation), full_stats, ignore_index,
                                                   std::string(pixel_loss), focal_gamma, mask, regions);
  const at::Tensor grad_stats_c = check_grad_stats(grad_stats, prepared);
  at::Tensor grad_input = allocate_grad_input(input);
  at::Tensor grad_target = target_grad ? allocate_grad_target(prepared, target) : no_grad_target(input);
  if (grad_input.numel() > 0) {
    at::Tensor grad3 = view_bcs(grad_input);
    at::Tensor grad_target3 = target_grad ? view_bcs(grad_target) : at::Tensor();
    at::Tensor* grad_target_out = target_grad ? &grad_target3 : nullptr;
    with_complete_errors(input, target, [&] {
#ifdef FD_HAVE_AVX2_KERNELS
      if (use_avx2()) {
        return avx2::dice_stats_backward(grad_stats_c, prepared.input, prepared.problem, grad3, grad_target_out);
      }
#endif
      baseline::dice_stats_backward(grad_stats_c, prepared.input, prepared.problem, grad3, grad_target_out);
    });
  }
  if (target_grad) grad_target = grad_target_in_target_dtype(grad_target, target);
  return {grad_input, grad_target};
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(fastdice, CPU, m) { m.impl("dice_stats_backward", &cpu::dice_stats_backward_cpu); }

}  // namespace fastdice
