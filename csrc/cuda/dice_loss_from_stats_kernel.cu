// CUDA kernels of fastdice::dice_loss_from_stats(_backward), and their
// registration: the loops of the CPU kernels (cpu/dice_loss_from_stats_kernel.cpp)
// run by the 256 threads of ONE block, around the same math and routing
// (dice_epilogue.h). The work is O(B * C): one launch
// of a few microseconds, instead of ~10 launches of tensor ops each way.
// Sums are block reductions in a fixed order (deterministic, no atomics).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Dispatch.h>

#include "../dice_epilogue_host.h"
#include "cuda_utils.cuh"

namespace fastdice {
namespace cuda {
namespace {

using BlockReduce = cub::BlockReduce<double, kThreads>;

// Sum over the block of every thread's v; the result is returned to all threads.
__device__ double block_sum(double v, typename BlockReduce::TempStorage& tmp, double* broadcast) {
  const double total = BlockReduce(tmp).Sum(v);
  if (threadIdx.x == 0) *broadcast = total;
  __syncthreads();
  const double out = *broadcast;
  __syncthreads();  // tmp and broadcast are reused by the next call
  return out;
}

// Block-wide CE sums over every row (all classes).
template <typename S>
__device__ CeSums block_ce_sums(const S* stats, const S* ce_weight, const EpilogueParams& p,
                                typename BlockReduce::TempStorage& tmp, double* broadcast) {
  CeSums local{0.0, 0.0};
  if (p.ce == CeFamily::kNone) return local;
  for (int64_t r = threadIdx.x; r < p.batch * p.classes; r += kThreads) {
    const int64_t c = r % p.classes;
    const CeSums s = ce_row_sums(stats + r * kNumStats, weight_at(ce_weight, c), p);
    local.total += s.total;
    local.den += s.den;
  }
  return CeSums{block_sum(local.total, tmp, broadcast), block_sum(local.den, tmp, broadcast)};
}

// Block-wide weighted (I, D) over every row of the Dice classes (global pooling).
template <typename S>
__device__ void block_global_terms(const S* stats, const S* weight, const EpilogueParams& p,
                                   typename BlockReduce::TempStorage& tmp, double* broadcast, double& I, double& D) {
  double li = 0, ld = 0;
  for (int64_t r = threadIdx.x; r < p.batch * p.classes; r += kThreads) {
    const int64_t c = r % p.classes;
    if (c < p.first_class) continue;
    double i, d;
    dice_terms(stats + r * kNumStats, p.form, i, d);
    const double w = weight_at(weight, c);
    li += w * i;
    ld += w * d;
  }
  I = block_sum(li, tmp, broadcast);
  D = block_sum(ld, tmp, broadcast);
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    dice_loss_from_stats_kernel(const S* __restrict__ stats, const S* __restrict__ weight,
                                const S* __restrict__ ce_weight, const EpilogueParams p, S* __restrict__ out) {
  FD_STATIC_SHARED(typename BlockReduce::TempStorage, tmp);
  FD_STATIC_SHARED(double, broadcast);
  double dice = 0;  // this thread's share of sum over entries of weight * loss
  if (p.pooling == Pooling::kGlobal) {
    double I, D;
    block_global_terms(stats, weight, p, tmp, &broadcast, I, D);
    dice = threadIdx.x == 0 ? entry_loss(I, D, p) : 0.0;
  } else {
    for (int64_t e = threadIdx.x; e < p.entries(); e += kThreads) {
      const double l = weighted_entry_loss(stats, weight, p, e);
      if (p.reduction == Reduction::kNone) out[e] = S(p.lambda_dice * l);
      dice += l;
    }
    if (p.reduction == Reduction::kNone) return;  // uniform over the block: no barrier skipped by some
  }
  dice = block_sum(dice, tmp, &broadcast);
  const CeSums ce = block_ce_sums(stats, ce_weight, p, tmp, &broadcast);
  if (threadIdx.x == 0) out[0] = S(total_loss(dice, ce, p));
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    dice_loss_from_stats_backward_kernel(const S* __restrict__ grad, const S* __restrict__ stats,
                                         const S* __restrict__ weight, const S* __restrict__ ce_weight,
                                         const EpilogueParams p, S* __restrict__ grad_stats) {
  FD_STATIC_SHARED(typename BlockReduce::TempStorage, tmp);
  FD_STATIC_SHARED(double, broadcast);
  const CeSums ce = block_ce_sums(stats, ce_weight, p, tmp, &broadcast);
  // A CE term implies a reduced loss: grad has one element then.
  const double g_ce = p.ce != CeFamily::kNone ? p.lambda_ce * double(grad[0]) : 0.0;
  double global_dI = 0, global_dD = 0;
  if (p.pooling == Pooling::kGlobal) {
    double I, D;
    block_global_terms(stats, weight, p, tmp, &broadcast, I, D);
    entry_loss_grad(I, D, p, entry_output_grad(grad, p, 0), global_dI, global_dD);
  }
  if (p.pooling == Pooling::kBatch) {
    // One thread per class: pool over the batch, then write the class's rows.
    for (int64_t c = threadIdx.x; c < p.classes; c += kThreads) {
      const bool dice_class = c >= p.first_class;
      double dI = 0, dD = 0;
      if (dice_class) entry_dice_grad(stats, weight, grad, p, c - p.first_class, dI, dD);
      for (int64_t b = 0; b < p.batch; ++b) {
        write_row_grad(stats, ce_weight, ce, p, g_ce, b, c, dice_class, dI, dD, grad_stats);
      }
    }
    return;
  }
  for (int64_t r = threadIdx.x; r < p.batch * p.classes; r += kThreads) {
    const int64_t b = r / p.classes;
    const int64_t c = r % p.classes;
    const bool dice_class = c >= p.first_class;
    double dI = 0, dD = 0;
    if (dice_class) row_dice_grad(stats, weight, grad, p, b, c, global_dI, global_dD, dI, dD);
    write_row_grad(stats, ce_weight, ce, p, g_ce, b, c, dice_class, dI, dD, grad_stats);
  }
}

void check_cuda(const at::Tensor& stats) {
  TORCH_CHECK_VALUE(on_kernel_device(stats), "fastdice: expected CUDA stats, got ", stats.device());
}

at::Tensor dice_loss_from_stats_cuda(FD_EPILOGUE_PARAMS) {
  check_cuda(stats);
  const DeviceGuard guard(stats.device());
  const PreparedEpilogue pe = prepare_epilogue(FD_EPILOGUE_ARGS);
  at::Tensor out = at::empty(pe.out_shape, pe.stats.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(pe.stats.scalar_type(), "dice_loss_from_stats_cuda", [&] {
    auto kernel = dice_loss_from_stats_kernel<scalar_t>;
    FD_LAUNCH_KERNEL(kernel, 1, kThreads, 0, stream, pe.stats.data_ptr<scalar_t>(), data_or_null<scalar_t>(pe.weight),
                     data_or_null<scalar_t>(pe.ce_weight), pe.params, out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor dice_loss_from_stats_backward_cuda(const at::Tensor& grad, FD_EPILOGUE_PARAMS) {
  check_cuda(stats);
  const DeviceGuard guard(stats.device());
  const PreparedEpilogue pe = prepare_epilogue(FD_EPILOGUE_ARGS);
  const at::Tensor g = check_epilogue_grad(grad, pe);
  at::Tensor grad_stats = at::empty_like(pe.stats);
  if (grad_stats.numel() == 0) return grad_stats;
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(pe.stats.scalar_type(), "dice_loss_from_stats_backward_cuda", [&] {
    auto kernel = dice_loss_from_stats_backward_kernel<scalar_t>;
    FD_LAUNCH_KERNEL(kernel, 1, kThreads, 0, stream, g.data_ptr<scalar_t>(), pe.stats.data_ptr<scalar_t>(),
                     data_or_null<scalar_t>(pe.weight), data_or_null<scalar_t>(pe.ce_weight), pe.params,
                     grad_stats.data_ptr<scalar_t>());
  });
  return grad_stats;
}

}  // namespace
}  // namespace cuda

FD_REGISTER_DEVICE_KERNELS(m) {
  m.impl("dice_loss_from_stats", &cuda::dice_loss_from_stats_cuda);
  m.impl("dice_loss_from_stats_backward", &cuda::dice_loss_from_stats_backward_cuda);
}

}  // namespace fastdice
