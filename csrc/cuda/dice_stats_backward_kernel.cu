// CUDA kernel of fastdice::dice_stats_backward, its host wrapper and its
// registration: grad_input from grad_stats in one pass over input and target
// and one write of the gradient, recomputing the activation in registers.
//
// The per-(class) coefficients of d(loss)/dp for the block's sample sit in
// shared memory. For softmax each thread makes three sweeps over the classes
// of its positions (normalizer; sum_k p_k * dL/dp_k; gradient), which re-read
// the same cache lines rather than keeping C values per position in registers.
// A dense float target that requires grad gets its gradient from the same
// pass (grad_target != nullptr; a uniform branch, off in the common case).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>

#include <tuple>

#include "../static_switch.h"
#include "cuda_utils.cuh"

namespace fastdice {
namespace cuda {
namespace {

struct GradLayout {
  int64_t stride_b;
  int64_t stride_c;
  int64_t stride_s;
};

template <int kItems, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_grad_items(scalar_t* __restrict__ grad, const GradLayout& g,
                                                 const DiceProblem& pr, int64_t b, int64_t c, int64_t s0,
                                                 bool vectorized, const acc_t (&v)[kItems]) {
  const int64_t base = b * g.stride_b + c * g.stride_c;
  if (vectorized && s0 + kItems <= pr.spatial && base % kItems == 0) {
    Pack<scalar_t, kItems> pack;
#pragma unroll
    for (int i = 0; i < kItems; ++i) pack.v[i] = static_cast<scalar_t>(v[i]);
    *reinterpret_cast<Pack<scalar_t, kItems>*>(grad + base + s0) = pack;
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (s0 + i < pr.spatial) grad[base + (s0 + i) * g.stride_s] = static_cast<scalar_t>(v[i]);
    }
  }
}

// d(loss)/d(target) of class c at kItems positions (dense targets; see
// grad_wrt_target in dice_math.h), gs = grad_stats[b, c, :].
template <int kItems, Activation kAct, bool kFull, bool kPixel, typename acc_t>
__device__ __forceinline__ void target_grad_items(const DiceProblem& pr, const acc_t* __restrict__ gs,
                                                  const acc_t (&x)[kItems], const acc_t (&row_max)[kItems],
                                                  const acc_t (&row_inv)[kItems], const acc_t (&shift)[kItems],
                                                  const bool (&valid)[kItems], int64_t b, int64_t c, int64_t s0,
                                                  acc_t (&out)[kItems]) {
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const acc_t p = activate<kAct>(x[i], row_max[i], row_inv[i]);
    const acc_t t = s0 + i < pr.spatial ? item_target<acc_t>(pr, -1, b, c, s0 + i) : acc_t(0);
    acc_t g = grad_wrt_target<kFull>(gs, p, t);
    if constexpr (kPixel) g += pixel_grad_wrt_target(gs, pixel_term(pr, x[i], p, shift[i], t), t);
    out[i] = valid[i] ? g : acc_t(0);  // masked-out positions: zero
  }
}

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kPixel>
__global__ void __launch_bounds__(kThreads)
    dice_stats_backward_kernel(const acc_t* __restrict__ grad_stats, const scalar_t* __restrict__ input,
                               const DiceProblem pr, const bool vec_in, scalar_t* __restrict__ grad,
                               const GradLayout layout, const bool vec_out, acc_t* __restrict__ grad_target,
                               const GradLayout target_layout) {
  constexpr int kItems = ItemsPerThread<scalar_t>::value;
  FD_DYNAMIC_SHARED(unsigned char, shared_raw);
  acc_t* coefs = reinterpret_cast<acc_t*>(shared_raw);  // [C][kNumGradCoefs]

  const int64_t C = pr.classes;
  const int64_t step = int64_t(gridDim.x) * kThreads * kItems;
  const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();

  for (int64_t b = blockIdx.y; b < pr.batch; b += gridDim.y) {
    for (int64_t i = threadIdx.x; i < C * kNumGradCoefs; i += kThreads) {
      const int64_t c = i / kNumGradCoefs;
      const int j = static_cast<int>(i % kNumGradCoefs);
      coefs[c * kNumGradCoefs + j] = grad_stats[(b * C + c) * kNumStats + grad_coef_source(j)];
    }
    __syncthreads();

    for (int64_t base = int64_t(blockIdx.x) * kThreads * kItems; base < pr.spatial; base += step) {
      const int64_t s0 = base + int64_t(threadIdx.x) * kItems;
      if (s0 >= pr.spatial) continue;  // no warp-level operations below
      const ItemLabels<kItems> labels = load_item_labels<kItems>(pr, b, s0);

      acc_t row_max[kItems] = {}, row_inv[kItems] = {}, shift[kItems] = {}, dot[kItems] = {};
      // The pixel loss's own gradient at one element (0 at invalid positions):
      // coef_l * dl/dz + coef_tl * t * dl/dz, or with q for the cross-entropy.
      auto pixel_direct = [&](int64_t c, int i, acc_t x, acc_t p, acc_t t) {
        const acc_t* coef = coefs + c * kNumGradCoefs;
        const acc_t g = pixel_term(pr, x, p, shift[i], t).grad;
        return labels.valid[i] ? (coef[kCoefPixelLoss] + coef[kCoefPixelLossTarget] * t) * g : acc_t(0);
      };
      // The cross-entropy's gradient couples the classes through the softmax.
      const bool coupled = kPixel && pr.pixel_loss == PixelLoss::kCrossEntropy;
      if (kAct == Activation::kSoftmax) {
        softmax_normalizer_and_shift<kItems>(input, pr, b, s0, vec_in, coupled, row_max, row_inv, shift);
        for (int64_t c = 0; c < C; ++c) {
          acc_t x[kItems];
          load_input_items<kItems>(input, pr, b, c, s0, vec_in, x);
#pragma unroll
          for (int i = 0; i < kItems; ++i) {
            const acc_t p = activate<kAct>(x[i], row_max[i], row_inv[i]);
            const acc_t t = labels.valid[i] ? item_target<acc_t>(pr, labels.label[i], b, c, s0 + i) : acc_t(0);
            dot[i] += p * grad_wrt_prob<kFull>(coefs + c * kNumGradCoefs, p, t);
            if constexpr (kPixel) {
              if (coupled) dot[i] += pixel_direct(c, i, x[i], p, t);
            }
          }
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        acc_t x[kItems];
        load_input_items<kItems>(input, pr, b, c, s0, vec_in, x);
        acc_t out[kItems];
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          const acc_t p = activate<kAct>(x[i], row_max[i], row_inv[i]);
          const acc_t t = labels.valid[i] ? item_target<acc_t>(pr, labels.label[i], b, c, s0 + i) : acc_t(0);
          const acc_t d = grad_wrt_prob<kFull>(coefs + c * kNumGradCoefs, p, t);
          acc_t gx = d;
          if (kAct == Activation::kSigmoid) gx = sigmoid_backward(d, p);
          if (kAct == Activation::kSoftmax) gx = softmax_backward(d, p, dot[i]);
          if constexpr (kPixel) gx += pixel_direct(c, i, x[i], p, t);
          // Ignored positions get exactly zero; a label outside [0, C) gets NaN
          // (its sample's statistics are NaN already).
          out[i] = labels.out_of_range[i] ? nan : (labels.valid[i] ? gx : acc_t(0));
        }
        store_grad_items<kItems>(grad, layout, pr, b, c, s0, vec_out, out);
        if (grad_target != nullptr) {
          acc_t gt[kItems];
          target_grad_items<kItems, kAct, kFull, kPixel>(pr, grad_stats + (b * C + c) * kNumStats, x, row_max,
                                                         row_inv, shift, labels.valid, b, c, s0, gt);
          store_grad_items<kItems>(grad_target, target_layout, pr, b, c, s0, false, gt);
        }
      }
    }
    __syncthreads();  // coefs are reloaded for the next sample
  }
}

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kPixel>
void launch_dice_stats_backward(const at::Tensor& grad_stats, const at::Tensor& input, const DiceProblem& pr,
                                at::Tensor& grad3, at::Tensor* grad_target3) {
  constexpr int kItems = ItemsPerThread<scalar_t>::value;
  const int device = input.get_device();
  const cudaStream_t stream = current_stream(device);
  const int64_t blocks = blocks_per_sample<kItems>(pr.spatial);
  const int64_t rows = std::min<int64_t>(pr.batch, max_grid_y());
  const size_t shared_bytes = size_t(pr.classes) * kNumGradCoefs * sizeof(acc_t);
  auto kernel = dice_stats_backward_kernel<scalar_t, acc_t, kAct, kFull, kPixel>;
  set_dynamic_shared_memory(kernel, shared_bytes, device, pr.classes);
  const scalar_t* x = input.data_ptr<scalar_t>();
  scalar_t* g = grad3.data_ptr<scalar_t>();
  const GradLayout layout{grad3.stride(0), grad3.stride(1), grad3.stride(2)};
  const bool vec_in = pr.in_stride_s == 1 && is_aligned(x, 16);
  const bool vec_out = layout.stride_s == 1 && is_aligned(g, 16);
  acc_t* gt = grad_target3 != nullptr ? grad_target3->data_ptr<acc_t>() : nullptr;
  const GradLayout target_layout =
      grad_target3 != nullptr ? GradLayout{grad_target3->stride(0), grad_target3->stride(1), grad_target3->stride(2)}
                              : GradLayout{0, 0, 0};
  FD_LAUNCH_KERNEL(kernel, dim3(unsigned(blocks), unsigned(rows)), kThreads, shared_bytes, stream,
                   grad_stats.data_ptr<acc_t>(), x, pr, vec_in, g, layout, vec_out, gt, target_layout);
}

std::tuple<at::Tensor, at::Tensor> dice_stats_backward_cuda(const at::Tensor& grad_stats, const at::Tensor& input,
                                                             const at::Tensor& target, c10::string_view activation,
                                                             bool full_stats, c10::optional<int64_t> ignore_index,
                                                             c10::string_view pixel_loss, double focal_gamma,
                                                             bool target_grad, const c10::optional<at::Tensor>& mask,
    at::OptionalIntArrayRef regions) {
  TORCH_CHECK_VALUE(on_kernel_device(input), "fastdice: expected a CUDA input, got ", input.device());
  const DeviceGuard guard(input.device());
  const PreparedProblem prepared = prepare_problem(input, target, std::string(activation), full_stats, ignore_index,
                                                   std::string(pixel_loss), focal_gamma, mask, regions);
  const DiceProblem& pr = prepared.problem;
  const at::Tensor grad_stats_c = check_grad_stats(grad_stats, prepared);
  at::Tensor grad_input = allocate_grad_input(input);
  at::Tensor grad_target = target_grad ? allocate_grad_target(prepared, target) : no_grad_target(input);
  if (grad_input.numel() == 0) {  // nothing to launch; the gradient still has the target's dtype
    if (target_grad) grad_target = grad_target_in_target_dtype(grad_target, target);
    return {grad_input, grad_target};
  }
  at::Tensor grad3 = view_bcs(grad_input);
  at::Tensor grad_target3 = target_grad ? view_bcs(grad_target) : at::Tensor();
  at::Tensor* grad_target_out = target_grad ? &grad_target3 : nullptr;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_backward_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    FD_ACTIVATION_SWITCH(pr.activation, kAct, [&] {
      FD_BOOL_SWITCH(pr.full_stats, kFull, [&] {
        FD_PIXEL_SWITCH(kAct, pr.pixel_loss, kPixel, [&] {
          launch_dice_stats_backward<scalar_t, acc_t, kAct, kFull, kPixel>(grad_stats_c, prepared.input, pr, grad3,
                                                                           grad_target_out);
        });
      });
    });
  });
  if (target_grad) grad_target = grad_target_in_target_dtype(grad_target, target);
  return {grad_input, grad_target};
}

}  // namespace
}  // namespace cuda

FD_REGISTER_DEVICE_KERNELS(m) { m.impl("dice_stats_backward", &cuda::dice_stats_backward_cuda); }

}  // namespace fastdice
