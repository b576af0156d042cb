// Small CUDA helpers shared by the forward and backward kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../dice_math.h"
#include "../dice_problem.h"
#include "device_runtime.cuh"

namespace fastdice {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;

// Positions per thread per iteration: one 16-byte vector of input.
template <typename scalar_t>
struct ItemsPerThread {
  static constexpr int value = 16 / sizeof(scalar_t);
};

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Butterfly sum: every lane ends with the same total, summed in the same
// order on every run (deterministic, unlike atomics).
template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// input[b, c, s0 : s0 + kItems] as acc_t; positions at or past S read as 0.
template <int kItems, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_input_items(const scalar_t* __restrict__ input, const DiceProblem& pr,
                                                 int64_t b, int64_t c, int64_t s0, bool vectorized,
                                                 acc_t (&out)[kItems]) {
  // vectorized: unit spatial stride and a 16-byte aligned base (checked on
  // the host); each row's own offset must be a multiple of kItems too.
  if (vectorized && s0 + kItems <= pr.spatial && pr.input_offset(b, c, 0) % kItems == 0) {
    const Pack<scalar_t, kItems> pack =
        *reinterpret_cast<const Pack<scalar_t, kItems>*>(input + pr.input_offset(b, c, s0));
#pragma unroll
    for (int i = 0; i < kItems; ++i) out[i] = static_cast<acc_t>(pack.v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      out[i] = s0 + i < pr.spatial ? static_cast<acc_t>(input[pr.input_offset(b, c, s0 + i)]) : acc_t(0);
    }
  }
}

// Per-position target information for kItems consecutive positions.
template <int kItems>
struct ItemLabels {
  int64_t label[kItems];  // label maps only
  bool valid[kItems];         // in range, not ignored, not masked out
  bool out_of_range[kItems];  // a label outside [0, C) that is not ignore_index
  bool any_out_of_range;
  int valid_count;
};

// The loss mask at positions s0 .. s0 + kItems: bit i set where it keeps
// position s0 + i, bit 16 + i where its value is neither 0 nor 1. Not
// inlined: without a mask the kernels never call it, and its registers stay
// out of their hot loop.
template <int kItems>
__device__ __noinline__ uint32_t item_mask_bits(const void* data, TargetDtype dtype, int64_t stride, int64_t base,
                                                int64_t s0, int64_t spatial) {
  static_assert(kItems <= 16, "two 16-bit fields");
  uint32_t bits = 0;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    if (s0 + i < spatial) {
      const float m = load_target_value<float>(data, dtype, base + (s0 + i) * stride);
      bits |= uint32_t(m != 0.f) << i;
      bits |= uint32_t(!(m == 0.f || m == 1.f)) << (16 + i);
    }
  }
  return bits;
}

template <int kItems>
__device__ __forceinline__ ItemLabels<kItems> load_item_labels(const DiceProblem& pr, int64_t b, int64_t s0) {
  ItemLabels<kItems> r;
  r.any_out_of_range = false;
  r.valid_count = 0;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int64_t s = s0 + i;
    r.label[i] = -1;
    r.valid[i] = s < pr.spatial;
    r.out_of_range[i] = false;
    if (pr.target.is_label && s < pr.spatial) {
      const int64_t v = load_label(pr.target.data, pr.target.dtype, pr.label_offset(b, s));
      const LabelState state = classify_label(v, pr.label_limit(), pr.has_ignore, pr.ignore_index);
      r.valid[i] = state == LabelState::kValid;
      r.out_of_range[i] = state == LabelState::kOutOfRange;
      r.any_out_of_range |= r.out_of_range[i];
      r.label[i] = v;
    }
  }
  if (pr.has_mask()) {
    // A masked-out position leaves every sum, as an ignored label; a mask
    // value other than 0 / 1 poisons like a bad label.
    const uint32_t bits = item_mask_bits<kItems>(pr.mask.data, pr.mask.dtype, pr.mask.stride_s,
                                                 b * pr.mask.stride_b, s0, pr.spatial);
    // A masked-out position may hold any label (unannotated regions): not out of range.
    r.any_out_of_range = false;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const bool keep = (bits >> i) & 1u;
      const bool bad = (bits >> (16 + i)) & 1u;
      r.valid[i] = r.valid[i] && keep;
      r.out_of_range[i] = (r.out_of_range[i] && keep) || bad;
      r.any_out_of_range |= r.out_of_range[i];
    }
  }
#pragma unroll
  for (int i = 0; i < kItems; ++i) r.valid_count += r.valid[i];
  return r;
}

template <typename acc_t>
__device__ __forceinline__ acc_t item_target(const DiceProblem& pr, const int64_t label, int64_t b, int64_t c,
                                             int64_t s) {
  if (pr.target.is_label) return pr.label_target<acc_t>(label, c);
  return load_target_value<acc_t>(pr.target.data, pr.target.dtype, pr.dense_target_offset(b, c, s));
}

// Softmax normalizer of kItems positions: running max and 1 / sum exp(x - max),
// in one pass over the classes.
template <int kItems, typename scalar_t, typename acc_t>
__device__ __forceinline__ void softmax_normalizer(const scalar_t* __restrict__ input, const DiceProblem& pr,
                                                   int64_t b, int64_t s0, bool vectorized, acc_t (&row_max)[kItems],
                                                   acc_t (&row_inv)[kItems]) {
  acc_t row_sum[kItems];
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    row_max[i] = -std::numeric_limits<acc_t>::infinity();
    row_sum[i] = acc_t(0);
  }
  for (int64_t c = 0; c < pr.classes; ++c) {
    acc_t x[kItems];
    load_input_items<kItems>(input, pr, b, c, s0, vectorized, x);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (x[i] > row_max[i]) {
        // exp(x - x) rather than 1: NaN for x = +inf, as torch.softmax gives.
        row_sum[i] = row_sum[i] * exp(row_max[i] - x[i]) + exp(x[i] - x[i]);
        row_max[i] = x[i];
      } else if (x[i] != -std::numeric_limits<acc_t>::infinity()) {
        row_sum[i] += exp(x[i] - row_max[i]);  // NaN x (or max) makes the sum NaN
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kItems; ++i) row_inv[i] = acc_t(1) / row_sum[i];
}

// softmax_normalizer and, where the cross-entropy needs log p = x - shift,
// the log-softmax shift max + log sum exp (0 otherwise).
template <int kItems, typename scalar_t, typename acc_t>
__device__ __forceinline__ void softmax_normalizer_and_shift(const scalar_t* __restrict__ input, const DiceProblem& pr,
                                                             int64_t b, int64_t s0, bool vectorized, bool wants_shift,
                                                             acc_t (&row_max)[kItems], acc_t (&row_inv)[kItems],
                                                             acc_t (&shift)[kItems]) {
  softmax_normalizer<kItems>(input, pr, b, s0, vectorized, row_max, row_inv);
#pragma unroll
  for (int i = 0; i < kItems; ++i) shift[i] = wants_shift ? row_max[i] - log(row_inv[i]) : acc_t(0);
}

// The transcendental functions of the pixel losses (dice_math.h's policy M).
struct CudaMath {
  template <typename acc_t>
  __host__ __device__ static acc_t exp_nonpositive(acc_t x) {
    return exp(x);
  }
  template <typename acc_t>
  __host__ __device__ static acc_t log(acc_t x) {
    return ::log(x);
  }
  template <typename acc_t>
  __host__ __device__ static acc_t log1p_unit(acc_t x) {
    return log1p(x);
  }
};

// The pixel loss of class c at one position and the coefficient of its
// gradient (see dice_math.h): z the logit, p the softmax probability (cross-
// entropy only), shift = max + log(sum exp) of the position, t the target.
template <typename acc_t>
__device__ __forceinline__ PixelTerm<acc_t> pixel_term(const DiceProblem& pr, acc_t z, acc_t p, acc_t shift,
                                                       acc_t t) {
  const acc_t gamma = static_cast<acc_t>(pr.focal_gamma);
  const bool focal = pr.focal_gamma != 0.0;
  if (pr.pixel_loss == PixelLoss::kCrossEntropy) {
    return focal ? softmax_pixel_term<true, CudaMath>(z - shift, p, gamma)
                 : softmax_pixel_term<false, CudaMath>(z - shift, p, gamma);
  }
  return focal ? sigmoid_pixel_term<true, false, CudaMath>(z, t, gamma)
               : sigmoid_pixel_term<false, false, CudaMath>(z, t, gamma);
}

template <Activation kAct, typename acc_t>
__device__ __forceinline__ acc_t activate(acc_t x, acc_t row_max, acc_t row_inv) {
  if (kAct == Activation::kSigmoid) return sigmoid_from_exp_neg_abs(x, exp(-abs_of(x)));
  if (kAct == Activation::kSoftmax) return exp(x - row_max) * row_inv;
  return x;
}

// Iterations of the position loop per block. The block count depends on the
// problem size only (not on the GPU's SM count), so the summation order, and
// with it every bit of the result, is the same on every GPU; and each block's
// float partial sums stay short.
constexpr int64_t kIterationsPerBlock = 4;

template <int kItems>
inline int64_t blocks_per_sample(int64_t spatial) {
  const int64_t per_block = int64_t(kThreads) * kItems * kIterationsPerBlock;
  const int64_t blocks = (spatial + per_block - 1) / per_block;
  constexpr int64_t kMaxGridX = 2147483647;
  return blocks < 1 ? 1 : (blocks > kMaxGridX ? kMaxGridX : blocks);
}

// Allows a kernel more than 48 KB of dynamic shared memory when it needs it,
// counting its static shared memory too; errors clearly when the device has
// not enough. dynamic_bytes grows linearly with the class count, which gives
// the largest class count this configuration can take.
template <typename Kernel>
inline void set_dynamic_shared_memory(Kernel kernel, size_t dynamic_bytes, int device, int64_t classes) {
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  int max_optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t total = dynamic_bytes + attr.sharedSizeBytes;
  const size_t per_class = classes > 0 ? dynamic_bytes / size_t(classes) : 0;
  const int64_t max_classes =
      per_class > 0 && size_t(max_optin) > attr.sharedSizeBytes ? int64_t((max_optin - attr.sharedSizeBytes) / per_class) : 0;
  TORCH_CHECK_VALUE(total <= size_t(max_optin), "fastdice: ", classes, " classes need ", total,
                    " bytes of shared memory per block on CUDA, more than this device's ", max_optin,
                    " bytes: with this input dtype, statistics set and pixel loss the CUDA kernels take at most ",
                    max_classes, " classes. Softmax and argmax need every class in one call, so the classes cannot "
                    "be split; compute this loss on the CPU, or with basic statistics (no squared / soft-label "
                    "form) and no fused pixel loss, which need fewer bytes per class");
  if (total > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dynamic_bytes)));
  }
}

inline bool is_aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace cuda
}  // namespace fastdice
