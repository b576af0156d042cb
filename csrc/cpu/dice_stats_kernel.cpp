// CPU host wrapper of fastdice::dice_stats and its registration: validation,
// output allocation, the choice of instruction set (use_avx2) and the call
// into that set's kernels (dice_cpu_isa.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "../bad_value.h"
#include "dice_cpu_isa.h"

namespace fastdice {
namespace cpu {

bool use_avx2() {
#ifdef FD_HAVE_AVX2_KERNELS
  static const bool value = [] {
    const char* forced = std::getenv("FASTDICE_CPU_ISA");
    if (forced && std::string(forced) == "baseline") return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return value;
#else
  return false;
#endif
}

namespace {

at::Tensor dice_stats_cpu(const at::Tensor& input, const at::Tensor& target, c10::string_view activation,
                          bool full_stats, c10::optional<int64_t> ignore_index, c10::string_view pixel_loss,
                          double focal_gamma, const c10::optional<at::Tensor>& mask,
                          at::OptionalIntArrayRef regions) {
  TORCH_CHECK_VALUE(input.device().is_cpu(), "fastdice: expected a CPU input, got ", input.device());
  const PreparedProblem prepared = prepare_problem(input, target, std::string(activation), full_stats, ignore_index,
                                                   std::string(pixel_loss), focal_gamma, mask, regions);
  const DiceProblem& pr = prepared.problem;
  at::Tensor stats =
      at::zeros({pr.batch, pr.classes, kNumStats}, input.options().dtype(stats_dtype_for(input.scalar_type())));
  if (pr.batch == 0 || pr.classes == 0 || pr.spatial == 0) return stats;
  with_complete_errors(input, target, [&] {
#ifdef FD_HAVE_AVX2_KERNELS
    if (use_avx2()) return avx2::dice_stats_forward(prepared.input, pr, stats);
#endif
    baseline::dice_stats_forward(prepared.input, pr, stats);
  });
  return stats;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(fastdice, CPU, m) { m.impl("dice_stats", &cpu::dice_stats_cpu); }

}  // namespace fastdice
