// CUDA kernel of fastdice::confusion_counts: counts[B, C, 3] (int64 TP, FP,
// FN) of hard predictions in one pass over input and target.
//
// Grid (blocks along positions, samples), as the Dice-statistics kernel: each
// thread takes kItems consecutive positions per iteration (one 16-byte load
// per class where alignment allows). Multiclass: the argmax over the classes
// is kept in registers (torch.argmax's rule); multilabel / binary: each class
// is compared with the threshold. Per class, each thread counts its positions
// into three integers, the warp sums them with shuffles and lane 0 adds them
// to that warp's own shared-memory slot (no shared atomics). At the end of a
// sample the block sums its warps' slots and adds them to the output with
// 64-bit integer atomicAdd: integer sums, so the result is exact and the same
// on every run whatever the order. A label outside the valid range that is not
// ignore_index, or a dense target value other than 0 / 1, marks its sample,
// and a second tiny kernel sets that sample's counts to -1 (no host sync).
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>

#include <string>
#include <type_traits>

#include "cuda_utils.cuh"

namespace fastdice {
namespace cuda {
namespace {

static_assert(sizeof(unsigned long long) == sizeof(int64_t), "int64 counts are added as unsigned long long");

// Target information of kItems consecutive positions.
template <int kItems>
struct CountItems {
  int64_t cls[kItems];  // label maps: the class the label marks positive (-1: none)
  bool valid[kItems];   // inside the sample and not ignored
  bool bad;             // a label neither valid nor ignore_index
};

template <int kItems>
__device__ __forceinline__ CountItems<kItems> load_count_items(const CountsProblem& cp, int64_t b, int64_t s0) {
  const DiceProblem& pr = cp.base;
  CountItems<kItems> r;
  r.bad = false;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int64_t s = s0 + i;
    r.cls[i] = -1;
    r.valid[i] = s < pr.spatial;
    if (pr.target.is_label && s < pr.spatial) {
      const int64_t v = load_label(pr.target.data, pr.target.dtype, pr.label_offset(b, s));
      const LabelState state = classify_label(v, pr.classes + cp.label_shift, pr.has_ignore, pr.ignore_index);
      r.valid[i] = state == LabelState::kValid;
      r.bad |= state == LabelState::kOutOfRange;
      r.cls[i] = v - cp.label_shift;
    }
  }
  return r;
}

template <typename scalar_t, typename acc_t, bool kMulticlass>
__global__ void __launch_bounds__(kThreads)
    confusion_counts_kernel(const scalar_t* __restrict__ input, const CountsProblem cp, const acc_t threshold,
                            const bool vectorized, unsigned long long* __restrict__ counts,
                            int* __restrict__ poisoned) {
  constexpr int kItems = ItemsPerThread<scalar_t>::value;
  FD_DYNAMIC_SHARED(unsigned char, shared_raw);
  unsigned int* warp_counts = reinterpret_cast<unsigned int*>(shared_raw);  // [kWarps][C][kNumCounts]

  const DiceProblem& pr = cp.base;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t C = pr.classes;
  const int64_t slots = int64_t(kWarps) * C * kNumCounts;
  const int64_t step = int64_t(gridDim.x) * kThreads * kItems;

  for (int64_t b = blockIdx.y; b < pr.batch; b += gridDim.y) {
    for (int64_t i = threadIdx.x; i < slots; i += kThreads) warp_counts[i] = 0u;
    __syncthreads();
    bool bad = false;

    // The loop bounds are uniform across the block, so every lane reaches the
    // warp-wide votes and shuffles; positions past the end are not valid.
    for (int64_t base = int64_t(blockIdx.x) * kThreads * kItems; base < pr.spatial; base += step) {
      const int64_t s0 = base + int64_t(threadIdx.x) * kItems;
      const CountItems<kItems> items = load_count_items<kItems>(cp, b, s0);
      bad |= items.bad;

      int64_t pred[kItems] = {};
      if (kMulticlass) {
        acc_t best[kItems];
        load_input_items<kItems>(input, pr, b, 0, s0, vectorized, best);
#pragma unroll
        for (int i = 0; i < kItems; ++i) pred[i] = 0;
        for (int64_t c = 1; c < C; ++c) {
          acc_t x[kItems];
          load_input_items<kItems>(input, pr, b, c, s0, vectorized, x);
#pragma unroll
          for (int i = 0; i < kItems; ++i) {
            if (argmax_takes(best[i], x[i])) {
              best[i] = x[i];
              pred[i] = c;
            }
          }
        }
      }

      for (int64_t c = 0; c < C; ++c) {
        acc_t x[kItems] = {};
        if (!kMulticlass) load_input_items<kItems>(input, pr, b, c, s0, vectorized, x);
        unsigned int tp = 0, fp = 0, fn = 0;
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          if (items.valid[i]) {
            const bool p = kMulticlass ? pred[i] == c : x[i] > threshold;
            bool t;
            if (pr.target.is_label) {
              t = items.cls[i] == c;
            } else {
              const double v =
                  load_target_value<double>(pr.target.data, pr.target.dtype, pr.dense_target_offset(b, c, s0 + i));
              bad |= !is_binary_value(v);
              t = v == 1.0;
            }
            tp += p && t;
            fp += p && !t;
            fn += !p && t;
          }
        }
        if (__any_sync(0xffffffffu, (tp | fp | fn) != 0u)) {
          tp = warp_sum(tp);
          fp = warp_sum(fp);
          fn = warp_sum(fn);
          if (lane == 0) {
            unsigned int* slot = warp_counts + (int64_t(warp) * C + c) * kNumCounts;
            slot[kCountTruePositive] += tp;
            slot[kCountFalsePositive] += fp;
            slot[kCountFalseNegative] += fn;
          }
        }
      }
    }

    // Also the barrier after which every warp's slots are final.
    const bool block_bad = __syncthreads_or(bad);
    if (block_bad && threadIdx.x == 0) poisoned[b] = 1;
    unsigned long long* out = counts + b * C * kNumCounts;
    for (int64_t idx = threadIdx.x; idx < C * kNumCounts; idx += kThreads) {
      const int64_t c = idx / kNumCounts;
      const int k = static_cast<int>(idx % kNumCounts);
      unsigned long long v = 0;
      for (int w = 0; w < kWarps; ++w) v += warp_counts[(int64_t(w) * C + c) * kNumCounts + k];
      if (v != 0) atomicAdd(out + idx, v);
    }
    __syncthreads();  // warp_counts is reused for the next sample
  }
}

// counts[b, :, :] = -1 for every sample marked in poisoned.
__global__ void poison_counts_kernel(int64_t* __restrict__ counts, const int* __restrict__ poisoned, int64_t row,
                                     int64_t total) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx < total && poisoned[idx / row]) counts[idx] = -1;
}

template <typename scalar_t, typename acc_t, bool kMulticlass>
void launch_confusion_counts(const at::Tensor& input, const CountsProblem& cp, at::Tensor& counts) {
  constexpr int kItems = ItemsPerThread<scalar_t>::value;
  const DiceProblem& pr = cp.base;
  const int device = input.get_device();
  const cudaStream_t stream = current_stream(device);
  const int64_t blocks = blocks_per_sample<kItems>(pr.spatial);
  const int64_t rows = std::min<int64_t>(pr.batch, max_grid_y());
  // A warp's shared counters are 32-bit: it sees at most iterations * 32 * kItems positions.
  const int64_t per_iteration = blocks * kThreads * kItems;
  const int64_t iterations = (pr.spatial + per_iteration - 1) / per_iteration;
  TORCH_CHECK_VALUE(iterations <= int64_t(0xffffffffu) / (kWarpSize * kItems), "fastdice: ", pr.spatial,
                    " positions per sample are too many for the CUDA confusion counts");
  const size_t shared_bytes = size_t(kWarps) * pr.classes * kNumCounts * sizeof(unsigned int);
  auto kernel = confusion_counts_kernel<scalar_t, acc_t, kMulticlass>;
  set_dynamic_shared_memory(kernel, shared_bytes, device, pr.classes);

  const scalar_t* x = input.data_ptr<scalar_t>();
  const bool vectorized = pr.in_stride_s == 1 && is_aligned(x, 16);
  const acc_t threshold = std::is_same<acc_t, double>::value ? static_cast<acc_t>(cp.threshold)
                                                             : static_cast<acc_t>(cp.threshold_float);
  at::Tensor poisoned = at::zeros({pr.batch}, counts.options().dtype(at::kInt));
  FD_LAUNCH_KERNEL(kernel, dim3(unsigned(blocks), unsigned(rows)), kThreads, shared_bytes, stream, x, cp, threshold,
                   vectorized, reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>()),
                   poisoned.data_ptr<int>());

  const int64_t total = counts.numel();
  const int threads = 256;
  auto poison = poison_counts_kernel;
  FD_LAUNCH_KERNEL(poison, unsigned((total + threads - 1) / threads), threads, 0, stream, counts.data_ptr<int64_t>(),
                   poisoned.data_ptr<int>(), pr.classes * kNumCounts, total);
}

at::Tensor confusion_counts_cuda(const at::Tensor& input, const at::Tensor& target, c10::string_view mode,
                                 double threshold, c10::optional<int64_t> ignore_index) {
  TORCH_CHECK_VALUE(on_kernel_device(input), "fastdice: expected a CUDA input, got ", input.device());
  const DeviceGuard guard(input.device());
  const PreparedCounts prepared = prepare_counts_problem(input, target, std::string(mode), threshold, ignore_index);
  const CountsProblem& cp = prepared.problem;
  const DiceProblem& pr = cp.base;
  // Zeros: the kernel adds into it (and an empty problem launches nothing).
  at::Tensor counts = at::zeros({pr.batch, pr.classes, kNumCounts}, input.options().dtype(at::kLong));
  if (pr.batch == 0 || pr.classes == 0 || pr.spatial == 0) return counts;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "confusion_counts_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    if (cp.mode == CountsMode::kMulticlass) {
      launch_confusion_counts<scalar_t, acc_t, true>(prepared.prepared.input, cp, counts);
    } else {
      launch_confusion_counts<scalar_t, acc_t, false>(prepared.prepared.input, cp, counts);
    }
  });
  return counts;
}

}  // namespace
}  // namespace cuda

FD_REGISTER_DEVICE_KERNELS(m) { m.impl("confusion_counts", &cuda::confusion_counts_cuda); }

}  // namespace fastdice
