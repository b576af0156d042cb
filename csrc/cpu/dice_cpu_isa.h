// The CPU kernels exist once per instruction set (dice_cpu_forward_<isa>.cpp,
// dice_cpu_backward_<isa>.cpp, see isa_prologue.h); this header declares their
// entry points, and use_avx2 (dice_stats_kernel.cpp) picks the best set the
// processor supports.
#pragma once

#include <ATen/core/Tensor.h>

#include "../dice_problem.h"

namespace fastdice {
namespace cpu {

#define FD_DECLARE_CPU_KERNELS(ns)                                                                    \
  namespace ns {                                                                                      \
  void dice_stats_forward(const at::Tensor& input, const DiceProblem& pr, at::Tensor& stats);         \
  void dice_stats_backward(const at::Tensor& grad_stats, const at::Tensor& input, const DiceProblem& pr, \
                           at::Tensor& grad3, at::Tensor* grad_target3);                              \
  }

FD_DECLARE_CPU_KERNELS(baseline)
#if defined(__x86_64__) && defined(__GNUC__)
FD_DECLARE_CPU_KERNELS(avx2)
#define FD_HAVE_AVX2_KERNELS 1
#endif

// AVX2 + FMA when the running processor has them (and FASTDICE_CPU_ISA is not "baseline").
bool use_avx2();

}  // namespace cpu
}  // namespace fastdice
