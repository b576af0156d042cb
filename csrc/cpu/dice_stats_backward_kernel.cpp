// CPU host wrapper of fastdice::dice_stats_backward and its registration:
// validation, gradient allocation, the call into the instruction set's kernels.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "dice_cpu_isa.h"

namespace fastdice {
namespace cpu {
namespace {

at::Tensor dice_stats_backward_cpu(const at::Tensor& grad_stats, const at::Tensor& input, const at::Tensor& target,
                                   c10::string_view activation, bool full_stats, c10::optional<int64_t> ignore_index,
                                   c10::string_view pixel_loss, double focal_gamma) {
  TORCH_CHECK_VALUE(input.device().is_cpu(), "fastdice: expected a CPU input, got ", input.device());
  const PreparedProblem prepared = prepare_problem(input, target, std::string(activation), full_stats, ignore_index,
                                                   std::string(pixel_loss), focal_gamma);
  const at::Tensor grad_stats_c = check_grad_stats(grad_stats, prepared);
  at::Tensor grad_input = allocate_grad_input(input);
  if (grad_input.numel() == 0) return grad_input;
  at::Tensor grad3 = grad_input.dim() == 2 ? grad_input.unsqueeze(-1) : grad_input.flatten(2);
#ifdef FD_HAVE_AVX2_KERNELS
  if (use_avx2()) {
    avx2::dice_stats_backward(grad_stats_c, prepared.input, prepared.problem, grad3);
    return grad_input;
  }
#endif
  baseline::dice_stats_backward(grad_stats_c, prepared.input, prepared.problem, grad3);
  return grad_input;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(fastdice, CPU, m) { m.impl("dice_stats_backward", &cpu::dice_stats_backward_cpu); }

}  // namespace fastdice
