// CUDA forward, the "thread" strategy (see dice_stats_block.cuh): each thread
// accumulates its own statistics across the whole position loop and the warps
// reduce them once per sample, instead of once per iteration.
//
// C <= kRegisterClasses (4): the sums live in registers, and for softmax the
// logits of the thread's positions are loaded once into registers, turned
// into exp(x - max) in place, and read back for the statistics: one exp per
// logit. A pixel loss needs the logits themselves (the cross-entropy's
// log p = x - shift, the binary cross-entropy's and focal term's z), so it
// re-reads them from cache after the exps have replaced them.
// Larger C: the sums live in a per-thread column of shared memory
// ([C][slots][kThreads], conflict-free), and softmax takes the same two
// passes over the classes as the warp strategy.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>

#include "../static_switch.h"
#include "dice_stats_block.cuh"

namespace fastdice {
namespace cuda {
namespace {

// 4: the sums (5 or 10 per class) and the exps (kItems per class) of more classes
// would not fit in registers next to the rest (ptxas: 180-255 registers and
// spills at 8 classes).
constexpr int kRegisterClasses = 4;

template <bool kFull>
constexpr int thread_slots() {
  return SlotSet<kFull>::kStats + 2;  // + sum l, sum t*l (left zero without a pixel loss)
}

// One class's contribution at the thread's kItems positions, added to acc.
template <int kItems, bool kFull, typename acc_t>
__device__ __forceinline__ void add_class_items(acc_t* acc, const DiceProblem& pr, const ItemLabels<kItems>& labels,
                                                int64_t b, int64_t c, int64_t s0, const acc_t (&p)[kItems],
                                                const acc_t (&z)[kItems], const acc_t (&shift)[kItems], bool pixel,
                                                bool check_p, bool& out_of_range) {
  constexpr int kStats = SlotSet<kFull>::kStats;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    if (labels.valid[i]) {
      const acc_t t = item_target<acc_t>(pr, labels.label[i], b, c, s0 + i);
      // A dense target outside [0, 1] (a 0/255 mask, say) poisons like a bad label,
      // and so does a probability outside [0, 1] (check_p: logits with activation 'none').
      out_of_range |= !(t >= acc_t(0) && t <= acc_t(1));
      out_of_range |= check_p && !(p[i] >= acc_t(0) && p[i] <= acc_t(1));
      accumulate_element<kFull>(acc, p[i], t);
      if (pixel) {
        const acc_t l = pixel_term(pr, z[i], p[i], shift[i], t).loss;
        acc[kStats] += l;
        acc[kStats + 1] += t != acc_t(0) ? t * l : acc_t(0);
      }
    }
  }
}

// kInRegisters (C <= kRegisterClasses) is a template parameter so that each
// path gets the registers it needs, not the larger of the two.
template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kInRegisters>
__global__ void __launch_bounds__(kThreads)
    dice_stats_thread_kernel(const scalar_t* __restrict__ input, const DiceProblem pr, const bool vectorized,
                             acc_t* __restrict__ partials) {
  constexpr int kItems = ItemsPerThread<scalar_t>::value;
  constexpr int kSlots = thread_slots<kFull>();
  using BlockReduce = cub::BlockReduce<int64_t, kThreads>;
  FD_STATIC_SHARED(typename BlockReduce::TempStorage, reduce_storage);
  FD_STATIC_SHARED(int64_t, block_valid_count);
  FD_DYNAMIC_SHARED(unsigned char, shared_raw);
  const int64_t C = pr.classes;
  acc_t* warp_acc = reinterpret_cast<acc_t*>(shared_raw);  // [kWarps][C][kSlots]
  acc_t* column = warp_acc + int64_t(kWarps) * C * kSlots + threadIdx.x;  // [C][kSlots][kThreads], large C only

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  constexpr bool in_registers = kInRegisters;
  const bool pixel = kAct != Activation::kNone && pr.pixel_loss != PixelLoss::kNone;
  const bool wants_shift = pixel && pr.pixel_loss == PixelLoss::kCrossEntropy;
  // The softmax register path overwrites the logits with their exps: every
  // pixel loss reads the logit, so it is loaded again.
  const bool reload_logits = kAct == Activation::kSoftmax && pixel;
  const bool check_p = kAct == Activation::kNone && pr.check_probabilities;
  const int64_t step = int64_t(gridDim.x) * kThreads * kItems;

  for (int64_t b = blockIdx.y; b < pr.batch; b += gridDim.y) {
    acc_t reg[kRegisterClasses][kSlots];
#pragma unroll
    for (int c = 0; c < kRegisterClasses; ++c) {
#pragma unroll
      for (int k = 0; k < kSlots; ++k) reg[c][k] = acc_t(0);
    }
    // Each thread owns its column: no barrier needed around it.
    if constexpr (!in_registers) {
      for (int64_t j = 0; j < C * kSlots; ++j) column[j * kThreads] = acc_t(0);
    }
    int64_t valid_count = 0;
    bool out_of_range = false;

    // No warp collective inside the loop: threads past the end may leave early.
    for (int64_t base = int64_t(blockIdx.x) * kThreads * kItems; base < pr.spatial; base += step) {
      const int64_t s0 = base + int64_t(threadIdx.x) * kItems;
      if (s0 >= pr.spatial) break;
      const ItemLabels<kItems> labels = load_item_labels<kItems>(pr, b, s0);
      valid_count += labels.valid_count;
      out_of_range |= labels.any_out_of_range;

      if constexpr (in_registers) {
        // v[c]: the logits, then (softmax) exp(x - max) in place.
        acc_t v[kRegisterClasses][kItems];
#pragma unroll
        for (int c = 0; c < kRegisterClasses; ++c) {
          if (c < C) load_input_items<kItems>(input, pr, b, c, s0, vectorized, v[c]);
        }
        acc_t inv[kItems] = {}, shift[kItems] = {};
        if (kAct == Activation::kSoftmax) {
#pragma unroll
          for (int i = 0; i < kItems; ++i) {
            acc_t m = -std::numeric_limits<acc_t>::infinity();
#pragma unroll
            for (int c = 0; c < kRegisterClasses; ++c) {
              if (c < C && v[c][i] > m) m = v[c][i];  // a NaN logit never wins; its exp makes the sum NaN
            }
            acc_t sum = acc_t(0);
#pragma unroll
            for (int c = 0; c < kRegisterClasses; ++c) {
              if (c < C) {
                v[c][i] = exp(v[c][i] - m);  // +inf or all -inf: NaN, as torch.softmax
                sum += v[c][i];
              }
            }
            inv[i] = acc_t(1) / sum;
            shift[i] = wants_shift ? m - log(inv[i]) : acc_t(0);
          }
        }
#pragma unroll
        for (int c = 0; c < kRegisterClasses; ++c) {
          if (c < C) {
            acc_t p[kItems], z[kItems];
#pragma unroll
            for (int i = 0; i < kItems; ++i) {
              p[i] = kAct == Activation::kSoftmax ? v[c][i] * inv[i] : activate<kAct>(v[c][i], acc_t(0), acc_t(0));
              z[i] = v[c][i];
            }
            if (reload_logits) load_input_items<kItems>(input, pr, b, c, s0, vectorized, z);
            add_class_items<kItems, kFull>(reg[c], pr, labels, b, c, s0, p, z, shift, pixel, check_p, out_of_range);
          }
        }
      } else {
        acc_t row_max[kItems] = {}, row_inv[kItems] = {}, shift[kItems] = {};
        if (kAct == Activation::kSoftmax) {
          softmax_normalizer_and_shift<kItems>(input, pr, b, s0, vectorized, wants_shift, row_max, row_inv, shift);
        }
        for (int64_t c = 0; c < C; ++c) {
          acc_t z[kItems], p[kItems];
          load_input_items<kItems>(input, pr, b, c, s0, vectorized, z);
#pragma unroll
          for (int i = 0; i < kItems; ++i) p[i] = activate<kAct>(z[i], row_max[i], row_inv[i]);
          acc_t local[kSlots];
#pragma unroll
          for (int k = 0; k < kSlots; ++k) local[k] = column[(c * kSlots + k) * kThreads];
          add_class_items<kItems, kFull>(local, pr, labels, b, c, s0, p, z, shift, pixel, check_p, out_of_range);
#pragma unroll
          for (int k = 0; k < kSlots; ++k) column[(c * kSlots + k) * kThreads] = local[k];
        }
      }
    }

    // One warp reduction per statistic and class, then the block's partials.
    for (int64_t c = 0; c < C; ++c) {
#pragma unroll
      for (int k = 0; k < kSlots; ++k) {
        acc_t mine = acc_t(0);
        if constexpr (in_registers) {
#pragma unroll
          for (int r = 0; r < kRegisterClasses; ++r) mine = r == c ? reg[r][k] : mine;
        } else {
          mine = column[(c * kSlots + k) * kThreads];
        }
        const acc_t v = warp_sum(mine);
        if (lane == 0) warp_acc[(int64_t(warp) * C + c) * kSlots + k] = v;
      }
    }
    finish_block_partials<acc_t, kFull>(warp_acc, C, kSlots, pixel, valid_count, out_of_range, reduce_storage,
                                        block_valid_count, partials + (b * gridDim.x + blockIdx.x) * C * kNumStats);
  }
}

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kInRegisters>
at::Tensor launch_per_thread(const at::Tensor& input, const DiceProblem& pr, const at::TensorOptions& options) {
  constexpr int kItems = ItemsPerThread<scalar_t>::value;
  constexpr int kSlots = thread_slots<kFull>();
  const int device = input.get_device();
  const int64_t columns = kInRegisters ? 0 : pr.classes * kSlots * kThreads;
  const size_t shared_bytes = size_t(int64_t(kWarps) * pr.classes * kSlots + columns) * sizeof(acc_t);
  auto kernel = dice_stats_thread_kernel<scalar_t, acc_t, kAct, kFull, kInRegisters>;
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  int max_optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (shared_bytes + attr.sharedSizeBytes > size_t(max_optin)) return at::Tensor();  // the warp strategy then
  set_dynamic_shared_memory(kernel, shared_bytes, device, pr.classes);

  const int64_t blocks = blocks_per_sample<kItems>(pr.spatial);
  const int64_t rows = std::min<int64_t>(pr.batch, max_grid_y());
  const scalar_t* x = input.data_ptr<scalar_t>();
  const bool vectorized = pr.in_stride_s == 1 && is_aligned(x, 16);
  at::Tensor partials = at::empty({pr.batch, blocks, pr.classes, kNumStats}, options);
  FD_LAUNCH_KERNEL(kernel, dim3(unsigned(blocks), unsigned(rows)), kThreads, shared_bytes, current_stream(device), x,
                   pr, vectorized, partials.data_ptr<acc_t>());
  return partials;
}

}  // namespace

// Compiled for what the strategy is for and what decides between the two
// (softmax + the basic statistics, float32 / float16 / bfloat16, the
// `strategies` workloads): 6 kernels instead of 48 (4 dtypes x 3 activations
// x 2 statistics sets x 2 class layouts), which took this unit's nvcc time
// from 267 s to a sixth. Any other problem gets an undefined tensor, and so the
// warp strategy.
at::Tensor dice_stats_partials_per_thread(const at::Tensor& input, const DiceProblem& pr,
                                          const at::TensorOptions& stats_options) {
  at::Tensor partials;
  if (pr.activation != Activation::kSoftmax || pr.full_stats) return partials;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_per_thread", [&] {
    if constexpr (!std::is_same<scalar_t, double>::value) {
      FD_BOOL_SWITCH(pr.classes <= kRegisterClasses, kInRegisters, [&] {
        partials = launch_per_thread<scalar_t, float, Activation::kSoftmax, false, kInRegisters>(input, pr,
                                                                                                stats_options);
      });
    }
  });
  return partials;
}

}  // namespace cuda
}  // namespace fastdice
