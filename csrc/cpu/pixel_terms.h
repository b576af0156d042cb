// The fused pixel loss (cross-entropy / BCE / focal) of the CPU kernels over
// one tile row: its loss sums (forward) or its gradient (backward), from the
// element formulas of dice_math.h.
// Compiled once per instruction set: see isa_prologue.h.
#pragma once

#include "tile_loading.h"

#ifndef FD_CPU_ISA_NS
#error "define FD_CPU_ISA_NS before including pixel_terms.h"
#endif

namespace fastdice {
namespace cpu {
namespace FD_CPU_ISA_NS {

// One branch-free loop over a tile row of pixel terms, every option a
// template parameter and every operand a restrict pointer or a value, so that
// GCC vectorizes it (lambdas capturing by reference defeated that).
template <bool kBackward, bool kFocal, bool kLabel, bool kCrossEntropy, Activation kAct, typename acc_t>
void pixel_loop(const acc_t* __restrict z, const acc_t* __restrict x, const acc_t* __restrict inv,
                const acc_t* __restrict shift, const int32_t* __restrict labels, int32_t cls,
                const acc_t* __restrict target, int64_t n, acc_t gamma, acc_t coef_l, acc_t coef_tl,
                acc_t* __restrict out0, acc_t* __restrict out1) {
  using M = CpuMath<acc_t>;
  for (int64_t i = 0; i < kTile; ++i) {
    // Label maps: t is 0 or 1 and t = 1 implies a valid position, which keeps
    // the selects simple enough for GCC's if-conversion.
    bool ok, is_one;
    acc_t t;
    if constexpr (kLabel) {
      ok = labels[i] >= 0;
      is_one = labels[i] == cls;
      t = is_one ? acc_t(1) : acc_t(0);
    } else {
      ok = labels[i] >= 0;  // 0 where valid, -1 for padding and masked-out positions
      t = target[i];
      is_one = false;
    }
    PixelTerm<acc_t> term;
    if constexpr (kCrossEntropy) {
      term = softmax_pixel_term<kFocal, M>(z[i] - shift[i], prob<kAct>(x, inv, i), gamma);
    } else {
      term = sigmoid_pixel_term<kFocal, kLabel, M>(z[i], t, gamma);
    }
    if constexpr (kBackward) {
      const acc_t g = kLabel ? (is_one ? coef_l + coef_tl : coef_l) : coef_l + coef_tl * t;
      out0[i] = ok ? g * term.grad : acc_t(0);
    } else if constexpr (kLabel) {
      out0[i] = ok ? term.loss : acc_t(0);
      out1[i] = is_one ? term.loss : acc_t(0);
    } else {
      out0[i] = ok ? term.loss : acc_t(0);
      const bool keep = ok & (t != acc_t(0));
      out1[i] = keep ? t * term.loss : acc_t(0);
    }
  }
}

// The pixel loss of class c over the tile (masked: ignored and padding
// positions give 0). Forward (kBackward false): rows l and t*l in tile.pixel.
// Backward: tile.direct_row(c), d/dz of (coef_l * l + coef_tl * t*l), for the class's
// coefficients coef[0], coef[1]. Reads the logits again (from L1/L2) since
// the tile only keeps activation values.
template <bool kBackward, Activation kAct, typename scalar_t, typename acc_t>
void pixel_terms_class(const scalar_t* input, const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                       Tile<acc_t>& tile, int64_t c, const acc_t* coef) {
  acc_t* z = tile.logits.data();
  load_input_row(input, pr, b, c, s0, n, z);
  for (int64_t i = n; i < kTile; ++i) z[i] = acc_t(0);
  const bool is_label = pr.one_hot_labels();
  const int32_t* labels = tile.labels.data();
  const acc_t* target = is_label ? nullptr : tile.target_row(c);
  const acc_t gamma = static_cast<acc_t>(pr.focal_gamma);
  const acc_t coef_l = kBackward ? coef[0] : acc_t(0);
  const acc_t coef_tl = kBackward ? coef[1] : acc_t(0);
  // Backward writes straight into the class's row of tile.direct.
  acc_t* out0 = kBackward ? tile.direct_row(c) : tile.pixel.data();
  acc_t* out1 = tile.pixel.data() + kTile;
  auto go = [&](auto focal, auto label, auto cross_entropy) {
    pixel_loop<kBackward, decltype(focal)::value, decltype(label)::value, decltype(cross_entropy)::value, kAct>(
        z, tile.row(c), tile.inv.data(), tile.shift.data(), labels, static_cast<int32_t>(c), target, n, gamma,
        coef_l, coef_tl, out0, out1);
  };
  auto with_family = [&](auto focal, auto label) {
    // The cross-entropy needs softmax (prepare_problem): not compiled for sigmoid.
    if constexpr (kAct == Activation::kSoftmax) {
      if (pr.pixel_loss == PixelLoss::kCrossEntropy) return go(focal, label, std::true_type{});
    }
    go(focal, label, std::false_type{});
  };
  auto with_label = [&](auto focal) {
    if (is_label) {
      with_family(focal, std::true_type{});
    } else {
      with_family(focal, std::false_type{});
    }
  };
  if (pr.focal_gamma != 0.0) {
    with_label(std::true_type{});
  } else {
    with_label(std::false_type{});
  }
}

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
