// CUDA kernels of the loss-from-statistics op: the loops of the CPU kernels
// (cpu/dice_loss_from_stats_kernel.cpp) run by the 256 threads of ONE block,
// around the same math (dice_epilogue.h). The work is O(B * C): one launch
// of a few microseconds, instead of ~10 launches of tensor ops each way.
// Sums are block reductions in a fixed order (deterministic, no atomics).
#include <ATen/ATen.h>
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

template <typename S>
__device__ const S* row_of(const S* stats, const EpilogueParams& p, int64_t b, int64_t c) {
  return stats + (b * p.classes + c) * kNumStats;
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
__device__ void class_terms(const S* stats, const EpilogueParams& p, int64_t c, double& I, double& D) {
  I = D = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    double i, d;
    dice_terms(row_of(stats, p, b, c), p.form, i, d);
    I += i;
    D += d;
  }
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    dice_loss_from_stats_kernel(const S* __restrict__ stats, const S* __restrict__ weight,
                                const S* __restrict__ ce_weight, const EpilogueParams p, S* __restrict__ out) {
  FD_STATIC_SHARED(typename BlockReduce::TempStorage, tmp);
  FD_STATIC_SHARED(double, broadcast);
  const bool none = p.reduction == Reduction::kNone;
  double dice = 0;  // this thread's share of sum over entries of weight * loss
  if (p.pooling == Pooling::kGlobal) {
    double I, D;
    block_global_terms(stats, weight, p, tmp, &broadcast, I, D);
    dice = threadIdx.x == 0 ? entry_loss(I, D, p) : 0.0;
  } else if (p.pooling == Pooling::kBatch) {
    for (int64_t c = p.first_class + threadIdx.x; c < p.classes; c += kThreads) {
      double I, D;
      class_terms(stats, p, c, I, D);
      const double l = weight_at(weight, c) * entry_loss(I, D, p);
      if (none) out[c - p.first_class] = S(p.lambda_dice * l);
      dice += l;
    }
  } else {
    for (int64_t e = threadIdx.x; e < p.entries(); e += kThreads) {
      const int64_t b = e / p.dice_classes();
      const int64_t c = p.first_class + e % p.dice_classes();
      double I, D;
      dice_terms(row_of(stats, p, b, c), p.form, I, D);
      const double l = weight_at(weight, c) * entry_loss(I, D, p);
      if (none) out[e] = S(p.lambda_dice * l);
      dice += l;
    }
  }
  if (none && p.pooling != Pooling::kGlobal) return;  // uniform over the block: no barrier skipped by some
  dice = block_sum(dice, tmp, &broadcast);
  const CeSums ce = block_ce_sums(stats, ce_weight, p, tmp, &broadcast);
  if (threadIdx.x == 0) {
    if (p.reduction == Reduction::kMean) dice /= double(p.entries());
    double loss = p.lambda_dice * dice;
    if (p.ce != CeFamily::kNone) loss += p.lambda_ce * ce_value(ce, p);
    out[0] = S(loss);
  }
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    dice_loss_from_stats_backward_kernel(const S* __restrict__ grad, const S* __restrict__ stats,
                                         const S* __restrict__ weight, const S* __restrict__ ce_weight,
                                         const EpilogueParams p, S* __restrict__ grad_stats) {
  FD_STATIC_SHARED(typename BlockReduce::TempStorage, tmp);
  FD_STATIC_SHARED(double, broadcast);
  const bool per_entry_grad = p.reduction == Reduction::kNone && p.pooling != Pooling::kGlobal;
  const double entry_scale = p.reduction == Reduction::kMean ? 1.0 / double(p.entries()) : 1.0;
  const CeSums ce = block_ce_sums(stats, ce_weight, p, tmp, &broadcast);
  // A CE term implies a reduced loss: grad has one element then.
  const double g_ce = p.ce != CeFamily::kNone ? p.lambda_ce * double(grad[0]) : 0.0;
  double global_dI = 0, global_dD = 0;
  if (p.pooling == Pooling::kGlobal) {
    double I, D;
    block_global_terms(stats, weight, p, tmp, &broadcast, I, D);
    entry_loss_grad(I, D, p, p.lambda_dice * double(grad[0]) * entry_scale, global_dI, global_dD);
  }
  // The gradient of one row, given its Dice coefficients (dI, dD).
  auto write_row = [&](int64_t b, int64_t c, bool dice_class, double dI, double dD) {
    const S* row = row_of(stats, p, b, c);
    double g[kNumStats];
#pragma unroll
    for (int k = 0; k < kNumStats; ++k) g[k] = 0.0;
    if (dice_class) add_dice_terms_grad(dI, dD, p.form, g);
    if (p.ce != CeFamily::kNone) add_ce_row_grad(row, weight_at(ce_weight, c), ce, p, g_ce, g);
    S* out = grad_stats + (b * p.classes + c) * kNumStats;
#pragma unroll
    for (int k = 0; k < kNumStats; ++k) out[k] = S(g[k]);
  };
  if (p.pooling == Pooling::kBatch) {
    // One thread per class: pool over the batch, then write the class's rows.
    for (int64_t c = threadIdx.x; c < p.classes; c += kThreads) {
      const bool dice_class = c >= p.first_class;
      double dI = 0, dD = 0;
      if (dice_class) {
        double I, D;
        class_terms(stats, p, c, I, D);
        const double g = per_entry_grad ? double(grad[c - p.first_class]) : double(grad[0]) * entry_scale;
        entry_loss_grad(I, D, p, p.lambda_dice * g * weight_at(weight, c), dI, dD);
      }
      for (int64_t b = 0; b < p.batch; ++b) write_row(b, c, dice_class, dI, dD);
    }
    return;
  }
  for (int64_t r = threadIdx.x; r < p.batch * p.classes; r += kThreads) {
    const int64_t b = r / p.classes;
    const int64_t c = r % p.classes;
    const bool dice_class = c >= p.first_class;
    double dI = 0, dD = 0;
    if (dice_class && p.pooling == Pooling::kGlobal) {
      dI = weight_at(weight, c) * global_dI;
      dD = weight_at(weight, c) * global_dD;
    } else if (dice_class) {
      const int64_t e = b * p.dice_classes() + c - p.first_class;
      const double g = per_entry_grad ? double(grad[e]) : double(grad[0]) * entry_scale;
      double I, D;
      dice_terms(row_of(stats, p, b, c), p.form, I, D);
      entry_loss_grad(I, D, p, p.lambda_dice * g * weight_at(weight, c), dI, dD);
    }
    write_row(b, c, dice_class, dI, dD);
  }
}

void check_cuda(const at::Tensor& stats) {
  TORCH_CHECK_VALUE(on_kernel_device(stats), "fastdice: expected CUDA stats, got ", stats.device());
}

at::Tensor dice_loss_from_stats_cuda(const at::Tensor& stats, const c10::optional<at::Tensor>& weight,
                                     const c10::optional<at::Tensor>& ce_weight, FD_EPILOGUE_OPTION_PARAMS) {
  check_cuda(stats);
  const DeviceGuard guard(stats.device());
  const PreparedEpilogue pe = prepare_epilogue(stats, weight, ce_weight, FD_EPILOGUE_OPTION_ARGS);
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

at::Tensor dice_loss_from_stats_backward_cuda(const at::Tensor& grad, const at::Tensor& stats,
                                              const c10::optional<at::Tensor>& weight,
                                              const c10::optional<at::Tensor>& ce_weight,
                                              FD_EPILOGUE_OPTION_PARAMS) {
  check_cuda(stats);
  const DeviceGuard guard(stats.device());
  const PreparedEpilogue pe = prepare_epilogue(stats, weight, ce_weight, FD_EPILOGUE_OPTION_ARGS);
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
