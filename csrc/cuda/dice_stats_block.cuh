// What the two forward strategies of the statistics kernel share: the
// shared-memory layout of the warps' sums, the end of a block's work on one
// sample (warp sums -> this block's partial statistics, poisoned with NaN when
// a target was invalid), and the choice between the strategies.
//
//   warp   (dice_stats_kernel.cu): every iteration of the position loop
//          warp-reduces each statistic of each class into shared memory.
//   thread (dice_stats_thread_kernel.cu): each thread keeps its own sums
//          across the whole loop (registers for C <= 4, else a
//          per-thread column of shared memory) and warp-reduces them once at
//          the end; for softmax with C <= 4 the exponentials are
//          kept in registers, one exp per logit.
// Both are deterministic (fixed summation order); their bits differ.
#pragma once

#include <cstdlib>

#include "../parse_choice.h"
#include "cuda_utils.cuh"

namespace fastdice {
namespace cuda {

// Shared-memory slots per (warp, class): the accumulated statistics, then
// sum l and sum t*l of the pixel loss when there is one.
template <bool kFull>
struct SlotSet {
  static constexpr int kStats = StatSet<kFull>::kAccumulated;
};

// After the position loop: sums the warps' slots warp_acc[kWarps][C][slots]
// into out[C][kNumStats] (this block's partials for one sample), with the
// valid count of kFull, NaN everywhere when any thread saw an invalid target.
// Every thread of the block calls it; it ends with a barrier, after which
// warp_acc and the temp storage may be reused.
template <typename acc_t, bool kFull, typename TempStorage>
__device__ __forceinline__ void finish_block_partials(const acc_t* warp_acc, int64_t C, int slots, bool pixel,
                                                      int64_t valid_count, bool out_of_range,
                                                      TempStorage& reduce_storage, int64_t& block_valid_count,
                                                      acc_t* out) {
  using BlockReduce = cub::BlockReduce<int64_t, kThreads>;
  constexpr int kStats = SlotSet<kFull>::kStats;
  if (kFull) {
    const int64_t total_valid = BlockReduce(reduce_storage).Sum(valid_count);
    if (threadIdx.x == 0) block_valid_count = total_valid;
  }
  // A label outside [0, C) (or a dense target outside [0, 1]) poisons the
  // statistics of its sample with NaN: the loss cannot come out plausible,
  // and no host sync is needed. Also the barrier after which the slots are final.
  const bool poisoned = __syncthreads_or(out_of_range);
  for (int64_t idx = threadIdx.x; idx < C * kNumStats; idx += kThreads) {
    const int64_t c = idx / kNumStats;
    const int k = static_cast<int>(idx % kNumStats);
    // The slot that holds statistic k, if any.
    const int slot = k < kStats ? k
                     : (pixel && k == kPixelLoss)       ? kStats
                     : (pixel && k == kPixelLossTarget) ? kStats + 1
                                                        : -1;
    acc_t v = acc_t(0);
    if (slot >= 0) {
      for (int w = 0; w < kWarps; ++w) v += warp_acc[(int64_t(w) * C + c) * slots + slot];
    } else if (kFull && k == kValidCount) {
      v = static_cast<acc_t>(block_valid_count);
    }
    out[idx] = poisoned ? std::numeric_limits<acc_t>::quiet_NaN() : v;
  }
  __syncthreads();  // warp_acc, block_valid_count and the temp storage are reused for the next sample
}

enum class ForwardStrategy { kWarp, kThread };

// FASTDICE_CUDA_FORWARD=warp|thread, read at every call (a benchmark switches
// it between runs); anything else is an error, not a silent default.
inline ForwardStrategy forward_strategy() {
  const char* v = std::getenv("FASTDICE_CUDA_FORWARD");
  if (v == nullptr || *v == '\0') return ForwardStrategy::kWarp;
  return parse_choice<ForwardStrategy>(v, "FASTDICE_CUDA_FORWARD",
                                       {{"warp", ForwardStrategy::kWarp}, {"thread", ForwardStrategy::kThread}});
}

// The thread strategy's partials [B, blocks, C, kNumStats], or an undefined
// tensor when it does not apply (not softmax with the basic statistics in
// float32 / float16 / bfloat16, or its shared memory would not fit), in which
// case the caller runs the warp strategy.
at::Tensor dice_stats_partials_per_thread(const at::Tensor& input, const DiceProblem& pr,
                                          const at::TensorOptions& stats_options);

}  // namespace cuda
}  // namespace fastdice
