// CPU backward: grad_input from grad_stats in one pass over input and target,
// recomputing the activation (the forward saved nothing of the input's size).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../static_switch.h"
#include "cpu_tile.h"

namespace fastdice {
namespace cpu {
namespace {

// coefs[(b * C + c) * kNumGradCoefs + j] = grad_stats[b, c, grad_coef_source(j)].
template <typename acc_t>
std::vector<acc_t> gather_grad_coefs(const at::Tensor& grad_stats) {
  const int64_t rows = grad_stats.size(0) * grad_stats.size(1);
  const acc_t* g = grad_stats.data_ptr<acc_t>();
  std::vector<acc_t> coefs(rows * kNumGradCoefs);
  for (int64_t r = 0; r < rows; ++r) {
    for (int j = 0; j < kNumGradCoefs; ++j) coefs[r * kNumGradCoefs + j] = g[r * kNumStats + grad_coef_source(j)];
  }
  return coefs;
}

template <typename scalar_t, typename acc_t>
void store_grad_tile(const acc_t* buf, scalar_t* grad, const DiceProblem& pr, int64_t grad_stride_b,
                     int64_t grad_stride_c, int64_t grad_stride_s, int64_t b, int64_t s0, int64_t n) {
  for (int64_t c = 0; c < pr.classes; ++c) {
    scalar_t* dst = grad + b * grad_stride_b + c * grad_stride_c + s0 * grad_stride_s;
    const acc_t* src = buf + c * kTile;
    if (grad_stride_s == 1) {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i * grad_stride_s] = static_cast<scalar_t>(src[i]);
    }
  }
}

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull>
void dice_stats_backward_cpu_impl(const at::Tensor& grad_stats, const at::Tensor& input,
                                  const DiceProblem& pr, at::Tensor& grad3) {
  const int64_t C = pr.classes;
  const std::vector<acc_t> coefs = gather_grad_coefs<acc_t>(grad_stats);
  const scalar_t* x = input.data_ptr<scalar_t>();
  scalar_t* g = grad3.data_ptr<scalar_t>();
  const int64_t gsb = grad3.stride(0), gsc = grad3.stride(1), gss = grad3.stride(2);
  const bool is_label = pr.target.is_label;
  const int64_t items = pr.batch * chunks_per_sample(pr.spatial);

  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> prob(C * kTile), grad(C * kTile), target_dense(is_label ? 0 : C * kTile),
        scratch(2 * kTile);
    std::vector<int32_t> labels(is_label ? kTile : 0);
    for (int64_t item = begin; item < end; ++item) {
      const ChunkRange r = chunk_range(item, pr.spatial);
      const acc_t* sample_coefs = coefs.data() + r.b * C * kNumGradCoefs;
      for (int64_t s0 = r.s_begin; s0 < r.s_end; s0 += kTile) {
        const int64_t n = std::min(kTile, r.s_end - s0);
        load_input_tile(x, pr, r.b, s0, n, prob.data());
        activate_tile<kAct>(prob.data(), C, scratch.data());
        if (is_label) {
          load_label_tile(pr, r.b, s0, n, labels.data());
        } else {
          load_dense_tile(pr, r.b, s0, n, target_dense.data());
        }
        // d(loss)/dp for every element of the tile.
        for (int64_t c = 0; c < C; ++c) {
          const acc_t* coef = sample_coefs + c * kNumGradCoefs;
          const acc_t* p = prob.data() + c * kTile;
          acc_t* d = grad.data() + c * kTile;
          if (is_label) {
            for (int64_t i = 0; i < kTile; ++i) {
              const acc_t t = labels[i] == c ? acc_t(1) : acc_t(0);
              d[i] = grad_wrt_prob<kFull>(coef, p[i], t);
            }
          } else {
            const acc_t* t = target_dense.data() + c * kTile;
            for (int64_t i = 0; i < kTile; ++i) d[i] = grad_wrt_prob<kFull>(coef, p[i], t[i]);
          }
        }
        // Chain rule through the activation.
        if (kAct == Activation::kSigmoid) {
          for (int64_t e = 0; e < C * kTile; ++e) grad[e] = sigmoid_backward(grad[e], prob[e]);
        } else if (kAct == Activation::kSoftmax) {
          acc_t* dot = scratch.data();
          for (int64_t i = 0; i < kTile; ++i) dot[i] = acc_t(0);
          for (int64_t c = 0; c < C; ++c) {
            const acc_t* p = prob.data() + c * kTile;
            const acc_t* d = grad.data() + c * kTile;
            for (int64_t i = 0; i < kTile; ++i) dot[i] += p[i] * d[i];
          }
          for (int64_t c = 0; c < C; ++c) {
            const acc_t* p = prob.data() + c * kTile;
            acc_t* d = grad.data() + c * kTile;
            for (int64_t i = 0; i < kTile; ++i) d[i] = softmax_backward(d[i], p[i], dot[i]);
          }
        }
        if (is_label) {
          // Ignored positions get exactly zero gradient, whatever their logits.
          for (int64_t c = 0; c < C; ++c) {
            acc_t* d = grad.data() + c * kTile;
            for (int64_t i = 0; i < kTile; ++i) d[i] = labels[i] >= 0 ? d[i] : acc_t(0);
          }
        }
        store_grad_tile(grad.data(), g, pr, gsb, gsc, gss, r.b, s0, n);
      }
    }
  });
}

}  // namespace

at::Tensor dice_stats_backward_cpu(const at::Tensor& grad_stats, const at::Tensor& input,
                                   const at::Tensor& target, c10::string_view activation,
                                   bool full_stats, c10::optional<int64_t> ignore_index) {
  TORCH_CHECK_VALUE(input.device().is_cpu(), "fastdice: expected a CPU input, got ", input.device());
  const PreparedProblem prepared =
      prepare_problem(input, target, std::string(activation), full_stats, ignore_index);
  const DiceProblem& pr = prepared.problem;
  const at::Tensor grad_stats_c = check_grad_stats(grad_stats, prepared);
  at::Tensor grad_input = allocate_grad_input(input);
  if (grad_input.numel() == 0) return grad_input;
  at::Tensor grad3 = grad_input.dim() == 2 ? grad_input.unsqueeze(-1) : grad_input.flatten(2);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    FD_ACTIVATION_SWITCH(pr.activation, kAct, [&] {
      FD_BOOL_SWITCH(pr.full_stats, kFull, [&] {
        dice_stats_backward_cpu_impl<scalar_t, acc_t, kAct, kFull>(grad_stats_c, prepared.input, pr, grad3);
      });
    });
  });
  return grad_input;
}

}  // namespace cpu
}  // namespace fastdice
