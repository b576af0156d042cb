// The backward CPU kernel of fastdice::dice_stats_backward: grad_input from
// the per-(sample, class) coefficients of d(loss)/dp, in one pass over input
// and target. Three strategies, chosen by backward_impl:
//   elementwise:   none / sigmoid against a dense target of the input's dtype
//                  (or bool / uint8 with float input), unit strides: one
//                  branch-free pass per row, no tile;
//   softmax_label: softmax logits (float, or 16-bit through float copies)
//                  against a label map: the SIMD path of softmax_label_kernels.h;
//   tiles:         everything else: the general tile code, and the only
//                  one that also writes a gradient with respect to a dense
//                  target (rare: mutual learning, distillation).
// Compiled once per instruction set by dice_cpu_backward_<isa>.cpp (see
// isa_prologue.h); entry point dice_stats_backward (dice_cpu_isa.h).
#pragma once

#include "pixel_terms.h"
#include "softmax_label_kernels.h"

#ifndef FD_CPU_ISA_NS
#error "define FD_CPU_ISA_NS before including backward_kernels.h"
#endif

namespace fastdice {
namespace cpu {
namespace FD_CPU_ISA_NS {

// Strides of the gradient viewed as [B, C, S].
struct GradLayout {
  int64_t stride_b;
  int64_t stride_c;
  int64_t stride_s;
};

// Where d(loss)/d(target) goes, as acc_t (the host wrapper casts it to the
// target's dtype); data == nullptr: not wanted.
template <typename acc_t>
struct TargetGradOut {
  acc_t* data = nullptr;  // [B, C, S]
  int64_t stride_b = 0;
  int64_t stride_c = 0;
  int64_t stride_s = 0;
  const acc_t* grad_stats = nullptr;  // [B, C, kNumStats], contiguous
};

// d(loss)/d(target) of class c over a tile (dense targets): the statistics'
// derivatives in t (grad_wrt_target) plus the pixel loss's, from its term at
// each element. Scalar code: this path is rare and never the hot one.
template <Activation kAct, bool kFull, bool kPixel, typename scalar_t, typename acc_t>
void target_grad_row(const scalar_t* input, const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                     Tile<acc_t>& tile, int64_t c, const acc_t* gs, acc_t* dst, int64_t dst_stride) {
  using M = CpuMath<acc_t>;
  const acc_t* xr = tile.row(c);
  const acc_t* inv = tile.inv.data();
  const acc_t* t = tile.target_row(c);
  const int32_t* valid = tile.labels.data();  // -1: masked out
  const acc_t* z = nullptr;
  if constexpr (kPixel) {
    load_input_row(input, pr, b, c, s0, n, tile.logits.data());
    z = tile.logits.data();
  }
  const acc_t gamma = static_cast<acc_t>(pr.focal_gamma);
  const bool focal = pr.focal_gamma != 0.0;
  const bool cross_entropy = pr.pixel_loss == PixelLoss::kCrossEntropy;
  for (int64_t i = 0; i < n; ++i) {
    const acc_t p = prob<kAct>(xr, inv, i);
    acc_t g = grad_wrt_target<kFull>(gs, p, t[i]);
    if constexpr (kPixel) {
      PixelTerm<acc_t> term;
      if (cross_entropy) {
        const acc_t lp = z[i] - tile.shift[i];
        term = focal ? softmax_pixel_term<true, M>(lp, p, gamma) : softmax_pixel_term<false, M>(lp, p, gamma);
      } else {
        term = focal ? sigmoid_pixel_term<true, false, M>(z[i], t[i], gamma)
                     : sigmoid_pixel_term<false, false, M>(z[i], t[i], gamma);
      }
      g += pixel_grad_wrt_target(gs, term, t[i]);
    }
    dst[i * dst_stride] = valid[i] >= 0 ? g : acc_t(0);
  }
}

// The backward of an elementwise activation (none / sigmoid) against a dense
// target, both with unit spatial stride: no coupling between classes, so
// each row is one branch-free pass that reads input and target and writes
// the gradient, without staging them in a tile.
template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, typename target_t>
void backward_row_elementwise(const scalar_t* __restrict x, const target_t* __restrict t, scalar_t* __restrict g,
                              int64_t n, const acc_t* coef_in) {
  acc_t coef[kNumGradCoefs];
  for (int j = 0; j < kNumGradCoefs; ++j) coef[j] = coef_in[j];
  for (int64_t i = 0; i < n; ++i) {
    const acc_t xv = static_cast<acc_t>(x[i]);
    const acc_t tv = static_cast<acc_t>(t[i]);
    acc_t p = xv;
    if constexpr (kAct == Activation::kSigmoid) p = sigmoid_from_exp_neg_abs(xv, exp_nonpositive(-abs_of(xv)));
    acc_t d = grad_wrt_prob<kFull>(coef, p, tv);
    if constexpr (kAct == Activation::kSigmoid) d = sigmoid_backward(d, p);
    g[i] = static_cast<scalar_t>(d);
  }
}

// Whether backward_row_elementwise can serve this problem.
template <typename scalar_t>
bool elementwise_backward_applies(const DiceProblem& pr, int64_t grad_stride_s) {
  // bool / uint8 targets (0/1 masks) with float input only: the common case,
  // without instantiating the loop for every input dtype.
  const TargetDtype td = pr.target.dtype;
  const bool target_ok = td == dtype_tag<scalar_t>() ||
                         (std::is_same<scalar_t, float>::value && (td == TargetDtype::kBool || td == TargetDtype::kUInt8));
  return pr.activation != Activation::kSoftmax && pr.pixel_loss == PixelLoss::kNone && !pr.target.is_label &&
         !pr.has_mask() && target_ok && pr.in_stride_s == 1 && pr.target.stride_s == 1 && grad_stride_s == 1;
}

// Strategy "elementwise" (where elementwise_backward_applies).
template <typename scalar_t, typename acc_t, Activation kAct, bool kFull>
void backward_elementwise(const scalar_t* x, const DiceProblem& pr, const acc_t* coefs, scalar_t* g,
                          const GradLayout& gl) {
  const int64_t C = pr.classes;
  auto run = [&](const auto* t) {
    parallel_chunks(pr, no_state, [&](NoState&, int64_t, int64_t b, int64_t s_begin, int64_t s_end) {
      for (int64_t c = 0; c < C; ++c) {
        backward_row_elementwise<scalar_t, acc_t, kAct, kFull>(
            x + pr.input_offset(b, c, s_begin), t + pr.dense_target_offset(b, c, s_begin),
            g + b * gl.stride_b + c * gl.stride_c + s_begin, s_end - s_begin, coefs + (b * C + c) * kNumGradCoefs);
      }
    });
  };
  if constexpr (std::is_same<scalar_t, float>::value) {
    // bool read as its 0 / 1 bytes: GCC does not vectorize a loop over bool loads.
    if (pr.target.dtype == TargetDtype::kBool || pr.target.dtype == TargetDtype::kUInt8) {
      return run(static_cast<const uint8_t*>(pr.target.data));
    }
  }
  run(static_cast<const scalar_t*>(pr.target.data));
}

// Strategy "softmax_label" (where softmax_label_path_applies); kCrossEntropy:
// the plain cross-entropy of Dice + CE.
template <typename scalar_t, bool kCrossEntropy>
void backward_softmax_label(const scalar_t* x, const DiceProblem& pr, const float* coefs, scalar_t* g,
                            const GradLayout& gl) {
  constexpr bool kHalfInput = !std::is_same<scalar_t, float>::value;
  const int64_t C = pr.classes;
  auto make_state = [&] {
    // the tile's labels only
    return std::make_pair(Tile<float>(0, /*is_label=*/true), SoftmaxLabelScratch(C, true, kHalfInput));
  };
  parallel_chunks(pr, make_state, [&](auto& state, int64_t, int64_t b, int64_t s_begin, int64_t s_end) {
    Tile<float>& tile = state.first;
    SoftmaxLabelScratch& scratch = state.second;
    const float* sample_coefs = coefs + b * C * kNumGradCoefs;
    for (int64_t s0 = s_begin; s0 < s_end; s0 += kTile) {
      const int64_t n = std::min(kTile, s_end - s0);
      load_labels(pr, b, s0, n, tile);
      scalar_t* gt = g + b * gl.stride_b + s0;
      if constexpr (kHalfInput) {
        tile_to_float(x + pr.input_offset(b, 0, s0), pr.in_stride_c, C, n, scratch.tile_logits.data());
        softmax_label_tile_backward<kCrossEntropy>(scratch.tile_logits.data(), kTile, C, n, tile.labels.data(),
                                                   sample_coefs, scratch.tile_grad.data(), kTile, scratch);
        tile_from_float(scratch.tile_grad.data(), C, n, gt, gl.stride_c);
      } else {
        softmax_label_tile_backward<kCrossEntropy>(x + pr.input_offset(b, 0, s0), pr.in_stride_c, C, n,
                                                   tile.labels.data(), sample_coefs, gt, gl.stride_c, scratch);
      }
    }
  });
}

// Strategy "tiles": the general tile code (any activation, target, layout,
// statistics set and pixel loss). The statistics set is a run-time flag here
// (a per-element branch that never changes): the fast strategies above are
// compiled per set, this general one once.
template <typename scalar_t, typename acc_t, Activation kAct, bool kPixel>
void backward_tiles(const scalar_t* x, const DiceProblem& pr, const acc_t* coefs, scalar_t* g,
                    const GradLayout& gl, const TargetGradOut<acc_t>& tg) {
  const int64_t C = pr.classes;
  const bool full = pr.full_stats;
  const bool is_label = pr.one_hot_labels();  // regions take the dense-target code
  const bool positions_dropped = pr.target.is_label || pr.has_mask();
  const int64_t gsb = gl.stride_b, gsc = gl.stride_c, gss = gl.stride_s;
  // The cross-entropy's gradient couples the classes through the softmax (it
  // joins `dot`) and needs log p; the binary cross-entropy's is per element.
  const bool cross_entropy = kPixel && pr.pixel_loss == PixelLoss::kCrossEntropy;
  auto make_tile = [&] { return Tile<acc_t>(C, is_label, kPixel); };
  parallel_chunks(pr, make_tile, [&](Tile<acc_t>& tile, int64_t, int64_t b, int64_t s_begin, int64_t s_end) {
    acc_t dot[kTile];
    const acc_t* sample_coefs = coefs + b * C * kNumGradCoefs;
    for (int64_t s0 = s_begin; s0 < s_end; s0 += kTile) {
      const int64_t n = std::min(kTile, s_end - s0);
      if (is_label) {
        load_labels(pr, b, s0, n, tile);
      } else if (pr.has_regions()) {
        load_region_targets(pr, b, s0, n, tile);
      } else {
        int64_t unused_count = 0;
        load_dense(pr, b, s0, n, tile, unused_count);
      }
      load_activated<kAct>(x, pr, b, s0, n, tile, cross_entropy);
      const acc_t* inv = tile.inv.data();
      const int32_t* labels = tile.labels.data();
      if constexpr (kPixel) {
        for (int64_t c = 0; c < C; ++c) {
          pixel_terms_class<true, kAct>(x, pr, b, s0, n, tile, c, sample_coefs + c * kNumGradCoefs + kCoefPixelLoss);
        }
      }
      // d(loss)/dp of class c at position i (cheap: recomputed, not stored).
      auto grad_p = [&](int64_t c, int64_t i, acc_t p) {
        const acc_t* coef = sample_coefs + c * kNumGradCoefs;
        const acc_t t = is_label ? (labels[i] == static_cast<int32_t>(c) ? acc_t(1) : acc_t(0))
                                 : tile.target_row(c)[i];
        return full ? grad_wrt_prob<true>(coef, p, t) : grad_wrt_prob<false>(coef, p, t);
      };
      if (kAct == Activation::kSoftmax) {  // dot = sum_k p_k * d(loss)/dp_k
        for (int64_t i = 0; i < kTile; ++i) dot[i] = acc_t(0);
        for (int64_t c = 0; c < C; ++c) {
          const acc_t* xr = tile.row(c);
          for (int64_t i = 0; i < kTile; ++i) {
            const acc_t p = prob<kAct>(xr, inv, i);
            dot[i] += p * grad_p(c, i, p);
          }
          if (kPixel && cross_entropy) {
            const acc_t* d = tile.direct_row(c);
            for (int64_t i = 0; i < kTile; ++i) dot[i] += d[i];
          }
        }
      }
      // Chain rule through the activation, stored straight into grad_input.
      for (int64_t c = 0; c < C; ++c) {
        const acc_t* xr = tile.row(c);
        const acc_t* direct = kPixel ? tile.direct_row(c) : nullptr;
        auto grad_x = [&](int64_t i) {
          const acc_t p = prob<kAct>(xr, inv, i);
          acc_t gx = grad_p(c, i, p);
          if (kAct == Activation::kSigmoid) gx = sigmoid_backward(gx, p);
          if (kAct == Activation::kSoftmax) gx = softmax_backward(gx, p, dot[i]);
          if (kPixel) gx += direct[i];
          // Ignored and masked-out positions get exactly zero gradient, whatever their logits.
          if (positions_dropped) gx = labels[i] >= 0 ? gx : acc_t(0);
          return static_cast<scalar_t>(gx);
        };
        scalar_t* dst = g + b * gsb + c * gsc + s0 * gss;
        if (gss == 1) {
          for (int64_t i = 0; i < n; ++i) dst[i] = grad_x(i);
        } else {
          for (int64_t i = 0; i < n; ++i) dst[i * gss] = grad_x(i);
        }
        if (tg.data != nullptr) {
          const acc_t* gs = tg.grad_stats + (b * C + c) * kNumStats;
          acc_t* dst_t = tg.data + b * tg.stride_b + c * tg.stride_c + s0 * tg.stride_s;
          if (full) {
            target_grad_row<kAct, true, kPixel>(x, pr, b, s0, n, tile, c, gs, dst_t, tg.stride_s);
          } else {
            target_grad_row<kAct, false, kPixel>(x, pr, b, s0, n, tile, c, gs, dst_t, tg.stride_s);
          }
        }
      }
    }
  });
}

// Picks the strategy for this problem.
template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kPixel>
void backward_impl(const at::Tensor& grad_stats, const at::Tensor& input, const DiceProblem& pr, at::Tensor& grad3,
                   at::Tensor* grad_target3) {
  const int64_t C = pr.classes;
  // coefs[(b * C + c) * kNumGradCoefs + j] = grad_stats[b, c, grad_coef_source(j)].
  std::vector<acc_t> coefs(pr.batch * C * kNumGradCoefs);
  const acc_t* gs = grad_stats.data_ptr<acc_t>();
  for (int64_t r = 0; r < pr.batch * C; ++r) {
    for (int j = 0; j < kNumGradCoefs; ++j) coefs[r * kNumGradCoefs + j] = gs[r * kNumStats + grad_coef_source(j)];
  }
  const scalar_t* x = input.data_ptr<scalar_t>();
  scalar_t* g = grad3.data_ptr<scalar_t>();
  const GradLayout gl{grad3.stride(0), grad3.stride(1), grad3.stride(2)};
  TargetGradOut<acc_t> tg;
  if (grad_target3 != nullptr) {
    tg = {grad_target3->data_ptr<acc_t>(), grad_target3->stride(0), grad_target3->stride(1), grad_target3->stride(2),
          gs};
    return backward_tiles<scalar_t, acc_t, kAct, kPixel>(x, pr, coefs.data(), g, gl, tg);
  }
  if constexpr (kAct != Activation::kSoftmax && !kPixel) {
    if (elementwise_backward_applies<scalar_t>(pr, gl.stride_s)) {
      return backward_elementwise<scalar_t, acc_t, kAct, kFull>(x, pr, coefs.data(), g, gl);
    }
  }
  if constexpr (kSoftmaxLabelCase<scalar_t, kAct, kFull>) {
    if (softmax_label_path_applies(pr, gl.stride_s)) {
      return backward_softmax_label<scalar_t, kPixel>(x, pr, coefs.data(), g, gl);
    }
  }
  backward_tiles<scalar_t, acc_t, kAct, kPixel>(x, pr, coefs.data(), g, gl, tg);
}

void dice_stats_backward(const at::Tensor& grad_stats, const at::Tensor& input, const DiceProblem& pr,
                         at::Tensor& grad3, at::Tensor* grad_target3) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    FD_ACTIVATION_SWITCH(pr.activation, kAct, [&] {
      FD_BOOL_SWITCH(pr.full_stats, kFull, [&] {
        FD_PIXEL_SWITCH(kAct, pr.pixel_loss, kPixel, [&] {
          backward_impl<scalar_t, acc_t, kAct, kFull, kPixel>(grad_stats, input, pr, grad3, grad_target3);
        });
      });
    });
  });
}

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
