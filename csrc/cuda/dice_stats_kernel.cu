// CUDA forward of fastdice::dice_stats (the default "warp" strategy), its host
// wrapper and its registration: stats[B, C, kNumStats] in one pass over input
// and target.
//
// Grid (blocks along positions, samples). Each thread takes kItems
// consecutive positions per iteration (one 16-byte load per class where
// alignment allows), computes the activation in registers, and for each
// class reduces its contribution across the warp; lane 0 adds it into that
// warp's own shared-memory slot. At the end the warps' slots are summed in a
// fixed order into per-block partials, and a second tiny kernel sums the
// partials in a fixed order: no float atomics, bitwise reproducible.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>

#include "../static_switch.h"
#include "dice_stats_block.cuh"

namespace fastdice {
namespace cuda {
namespace {

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kPixel>
__global__ void __launch_bounds__(kThreads)
    dice_stats_kernel(const scalar_t* __restrict__ input, const DiceProblem pr, const bool vectorized,
                      acc_t* __restrict__ partials) {
  constexpr int kItems = ItemsPerThread<scalar_t>::value;
  constexpr int kStats = SlotSet<kFull>::kStats;
  constexpr int kSlots = kStats + (kPixel ? 2 : 0);
  using BlockReduce = cub::BlockReduce<int64_t, kThreads>;
  FD_STATIC_SHARED(typename BlockReduce::TempStorage, reduce_storage);
  FD_STATIC_SHARED(int64_t, block_valid_count);
  FD_DYNAMIC_SHARED(unsigned char, shared_raw);
  acc_t* warp_acc = reinterpret_cast<acc_t*>(shared_raw);  // [kWarps][C][kSlots]

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t C = pr.classes;
  const int64_t slots = int64_t(kWarps) * C * kSlots;
  const int64_t step = int64_t(gridDim.x) * kThreads * kItems;

  for (int64_t b = blockIdx.y; b < pr.batch; b += gridDim.y) {
    for (int64_t i = threadIdx.x; i < slots; i += kThreads) warp_acc[i] = acc_t(0);
    __syncthreads();
    int64_t valid_count = 0;
    bool out_of_range = false;

    // The loop bound is uniform across the block, so every lane reaches the
    // warp reductions; positions past the end contribute nothing.
    for (int64_t base = int64_t(blockIdx.x) * kThreads * kItems; base < pr.spatial; base += step) {
      const int64_t s0 = base + int64_t(threadIdx.x) * kItems;
      const ItemLabels<kItems> labels = load_item_labels<kItems>(pr, b, s0);
      valid_count += labels.valid_count;
      out_of_range |= labels.any_out_of_range;

      acc_t row_max[kItems] = {}, row_inv[kItems] = {}, shift[kItems] = {};
      // log-softmax shift (max + log sum exp): the cross-entropy only.
      const bool wants_shift = kPixel && pr.pixel_loss == PixelLoss::kCrossEntropy;
      if (kAct == Activation::kSoftmax) {
        softmax_normalizer_and_shift<kItems>(input, pr, b, s0, vectorized, wants_shift, row_max, row_inv, shift);
      }
      for (int64_t c = 0; c < C; ++c) {
        acc_t x[kItems];
        load_input_items<kItems>(input, pr, b, c, s0, vectorized, x);
        acc_t local[kSlots];
#pragma unroll
        for (int k = 0; k < kSlots; ++k) local[k] = acc_t(0);
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          if (labels.valid[i]) {
            const acc_t p = activate<kAct>(x[i], row_max[i], row_inv[i]);
            const acc_t t = item_target<acc_t>(pr, labels.label[i], b, c, s0 + i);
            // A dense target outside [0, 1] (a 0/255 mask, say) poisons like a bad label,
            // and so does a probability outside [0, 1] (logits with activation 'none').
            out_of_range |= !(t >= acc_t(0) && t <= acc_t(1));
            if (kAct == Activation::kNone) out_of_range |= pr.check_probabilities && !(p >= acc_t(0) && p <= acc_t(1));
            accumulate_element<kFull>(local, p, t);
            if constexpr (kPixel) {
              const acc_t l = pixel_term(pr, x[i], p, shift[i], t).loss;
              local[kStats] += l;
              local[kStats + 1] += t != acc_t(0) ? t * l : acc_t(0);
            }
          }
        }
#pragma unroll
        for (int k = 0; k < kSlots; ++k) {
          const acc_t v = warp_sum(local[k]);
          if (lane == 0) warp_acc[(int64_t(warp) * C + c) * kSlots + k] += v;
        }
      }
    }

    finish_block_partials<acc_t, kFull>(warp_acc, C, kSlots, kPixel, valid_count, out_of_range, reduce_storage,
                                        block_valid_count, partials + (b * gridDim.x + blockIdx.x) * C * kNumStats);
  }
}

// stats[b, r] = sum over blocks q of partials[b, q, r]. A block of 32 x 32 threads per sample and 32
// consecutive r: thread (x, y) sums the stripe q = y, y + 32, ... of column r0 + x in order (the 32
// lanes of a warp read 32 consecutive r: one request), then thread (x, 0) sums the 32 stripes in
// order. The order depends on the problem's size only, so every bit of the result is the same on
// every GPU. Thirty-two stripes keep 32 loads per column in flight where one thread per (b, r)
// walking every q in turn kept one: that loop over 512 blocks (2 x 14 x 128^3) waited on memory
// latency about as long as the statistics kernel streams its 270 MB.
constexpr int kReduceColumns = 32;
constexpr int kReduceStripes = 32;

template <typename acc_t>
__global__ void __launch_bounds__(kReduceColumns * kReduceStripes)
    reduce_partials_kernel(const acc_t* __restrict__ partials, int64_t blocks, int64_t row_size, int64_t tiles,
                           acc_t* __restrict__ stats) {
  using StripeSums = double[kReduceStripes][kReduceColumns];
  FD_STATIC_SHARED(StripeSums, stripe_sums);
  const int64_t b = blockIdx.x / tiles;
  const int64_t r = (blockIdx.x % tiles) * kReduceColumns + threadIdx.x;
  double s = 0.0;
  if (r < row_size) {
    for (int64_t q = threadIdx.y; q < blocks; q += kReduceStripes) {
      s += static_cast<double>(partials[(b * blocks + q) * row_size + r]);
    }
  }
  stripe_sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && r < row_size) {
    double total = 0.0;
    for (int y = 0; y < kReduceStripes; ++y) total += stripe_sums[y][threadIdx.x];
    stats[b * row_size + r] = static_cast<acc_t>(total);
  }
}

template <typename acc_t>
void reduce_partials(const at::Tensor& partials, at::Tensor& stats) {
  const int64_t batch = partials.size(0);
  const int64_t row_size = partials.size(2) * kNumStats;
  const int64_t tiles = (row_size + kReduceColumns - 1) / kReduceColumns;
  auto reduce = reduce_partials_kernel<acc_t>;
  FD_LAUNCH_KERNEL(reduce, unsigned(batch * tiles), dim3(kReduceColumns, kReduceStripes), 0,
                   current_stream(stats.get_device()), partials.data_ptr<acc_t>(), partials.size(1), row_size, tiles,
                   stats.data_ptr<acc_t>());
}

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kPixel>
void launch_dice_stats(const at::Tensor& input, const DiceProblem& pr, at::Tensor& stats) {
  if (forward_strategy() == ForwardStrategy::kThread) {
    const at::Tensor partials = dice_stats_partials_per_thread(input, pr, stats.options());
    if (partials.defined()) return reduce_partials<acc_t>(partials, stats);
  }
  constexpr int kItems = ItemsPerThread<scalar_t>::value;
  constexpr int kSlots = SlotSet<kFull>::kStats + (kPixel ? 2 : 0);
  const int device = input.get_device();
  const cudaStream_t stream = current_stream(device);
  const int64_t blocks = blocks_per_sample<kItems>(pr.spatial);
  const int64_t rows = std::min<int64_t>(pr.batch, max_grid_y());
  const size_t shared_bytes = size_t(kWarps) * pr.classes * kSlots * sizeof(acc_t);
  auto kernel = dice_stats_kernel<scalar_t, acc_t, kAct, kFull, kPixel>;
  set_dynamic_shared_memory(kernel, shared_bytes, device, pr.classes);

  const scalar_t* x = input.data_ptr<scalar_t>();
  const bool vectorized = pr.in_stride_s == 1 && is_aligned(x, 16);
  at::Tensor partials = at::empty({pr.batch, blocks, pr.classes, kNumStats}, stats.options());
  FD_LAUNCH_KERNEL(kernel, dim3(unsigned(blocks), unsigned(rows)), kThreads, shared_bytes, stream, x, pr, vectorized,
                   partials.data_ptr<acc_t>());
  reduce_partials<acc_t>(partials, stats);
}

at::Tensor dice_stats_cuda(const at::Tensor& input, const at::Tensor& target, c10::string_view activation,
                           bool full_stats, c10::optional<int64_t> ignore_index,
                           c10::string_view pixel_loss, double focal_gamma, const c10::optional<at::Tensor>& mask,
                          at::OptionalIntArrayRef regions) {
  TORCH_CHECK_VALUE(on_kernel_device(input), "fastdice: expected a CUDA input, got ", input.device());
  const DeviceGuard guard(input.device());
  const PreparedProblem prepared = prepare_problem(input, target, std::string(activation), full_stats, ignore_index,
                                                   std::string(pixel_loss), focal_gamma, mask, regions);
  const DiceProblem& pr = prepared.problem;
  const auto stats_options = input.options().dtype(stats_dtype_for(input.scalar_type()));
  if (pr.batch == 0 || pr.classes == 0 || pr.spatial == 0) {
    return at::zeros({pr.batch, pr.classes, kNumStats}, stats_options);
  }
  at::Tensor stats = at::empty({pr.batch, pr.classes, kNumStats}, stats_options);  // fully written below

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    FD_ACTIVATION_SWITCH(pr.activation, kAct, [&] {
      FD_BOOL_SWITCH(pr.full_stats, kFull, [&] {
        FD_PIXEL_SWITCH(kAct, pr.pixel_loss, kPixel,
                        [&] { launch_dice_stats<scalar_t, acc_t, kAct, kFull, kPixel>(prepared.input, pr, stats); });
      });
    });
  });
  return stats;
}

}  // namespace
}  // namespace cuda

FD_REGISTER_DEVICE_KERNELS(m) { m.impl("dice_stats", &cuda::dice_stats_cuda); }

}  // namespace fastdice
