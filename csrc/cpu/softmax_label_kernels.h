// The float path of the most common Dice losses: softmax over float32 logits
// (float16 / bfloat16 through float copies of each tile) against an integer label map, basic statistics (sum p*t, sum p, sum t),
// and optionally (kCrossEntropy) the cross-entropy sums of Dice + CE
// (sum l, sum t*l with l = -log p_c; focal variants take the general path).
//
// Why a path of its own: the general tile code runs one loop per step
// (max, exp, 1 / sum, then one pass per class), each re-reading the tile
// from L1. Here 8 positions go through every step at once in SIMD registers:
// max over the classes, exp, the sum and its reciprocal, then the statistics
// (forward) or the gradient (backward) of every class; a group holds
// kGroupVectors independent vectors, because one vector's exp is a chain of
// ~15 dependent instructions that alone would leave the core idle. The math is the same
// as the general path's (dice_math.h: nan-propagating max, exp(x - max) / sum,
// softmax_backward), and so are the results up to float rounding order.

// Compiled once per instruction set: see isa_prologue.h.
#pragma once

#include "tile_loading.h"

#ifndef FD_CPU_ISA_NS
#error "define FD_CPU_ISA_NS before including softmax_label_kernels.h"
#endif

namespace fastdice {
namespace cpu {
namespace FD_CPU_ISA_NS {

// Logit types of the path (16-bit ones through float copies of each tile).
template <typename T>
constexpr bool kFloatOrHalf = std::is_same<T, float>::value || std::is_same<T, c10::Half>::value ||
                              std::is_same<T, c10::BFloat16>::value;

// Whether the path is compiled for these kernels' template parameters...
template <typename scalar_t, Activation kAct, bool kFull>
constexpr bool kSoftmaxLabelCase = kFloatOrHalf<scalar_t> && kAct == Activation::kSoftmax && !kFull;

// ... and serves this problem: a label map, unit spatial stride of the input
// (and of the gradient), and no pixel loss or the plain cross-entropy (focal
// and BCE take the general path).
inline bool softmax_label_path_applies(const DiceProblem& pr, int64_t grad_stride_s = 1) {
  const bool plain_ce_or_none =
      pr.pixel_loss == PixelLoss::kNone || (pr.pixel_loss == PixelLoss::kCrossEntropy && pr.focal_gamma == 0.0);
  return pr.one_hot_labels() && pr.in_stride_s == 1 && grad_stride_s == 1 && plain_ce_or_none;
}

constexpr int kGroupVectors = 2;
constexpr int kGroup = 8 * kGroupVectors;  // positions per group
static_assert(kTile % kGroup == 0, "a tile is a whole number of groups");

inline Float8 load8(const float* p) {
  Float8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, Float8 v) { std::memcpy(p, &v, sizeof(v)); }

inline Float8 broadcast8(float v) { return Float8{} + v; }

// The lanes' sum, in lane order (a fixed order: results do not depend on threads).
inline float sum_lanes(Float8 v) {
  float sum = 0.f;
  for (int j = 0; j < 8; ++j) sum += v[j];
  return sum;
}

// The first count (< 8) floats at p, zero-padded: never reads past them.
inline Float8 load8_partial(const float* p, int64_t count) {
  float lanes[8] = {};
  for (int64_t j = 0; j < count; ++j) lanes[j] = p[j];
  return load8(lanes);
}

// log(x) for a sum of exps (x >= 1: its largest term is exp(0)), Cephes' logf
// like log_nonnegative without the zero / subnormal / infinity cases that
// cannot occur here; NaN stays NaN.
inline Float8 log_of_exp_sum(Float8 x) {
  UInt8 bits;
  std::memcpy(&bits, &x, sizeof(bits));
  Int8 e = (Int8)((bits >> 23) & 0xffu) - 126;
  bits = (bits & 0x807fffffu) | 0x3f000000u;  // x = m * 2^e, m in [0.5, 1)
  Float8 m;
  std::memcpy(&m, &bits, sizeof(m));
  const Int8 below = m < 0.707106781186547524f;
  e += below;  // below is -1 where true
  m = below ? m + m - 1.f : m - 1.f;
  const Float8 r = log_from_reduced(m, __builtin_convertvector(e, Float8));
  return x != x ? x : r;
}

// float16 / bfloat16 logits take the same path through float copies of the
// tile: the conversions are exact one way and one rounding the other (as the
// general path's), and cost little next to the exps.
template <typename T>
inline void tile_to_float(const T* x, int64_t sc, int64_t C, int64_t n, float* out) {
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < n; ++i) out[c * kTile + i] = static_cast<float>(x[c * sc + i]);
  }
}

template <typename T>
inline void tile_from_float(const float* in, int64_t C, int64_t n, T* g, int64_t gc) {
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < n; ++i) g[c * gc + i] = static_cast<T>(in[c * kTile + i]);
  }
}

// Class rows of the tile buffers: kTile positions and a 64-byte pad, so that the rows do
// not all fall into the same cache sets (2 KB apart they would share two of them).
constexpr int64_t kExpsStride = kTile + 16;

// One thread's buffers, sized for C classes.
struct SoftmaxLabelScratch {
  std::vector<float> tail;  // [C][kGroup]: the logits of a partial last group, zero-padded
  std::vector<float> group_exps;  // [C][kGroup] (backward, group-wise): exp(x - max) of one group
  std::vector<float> group_grad;  // [C][kGroup] (backward, group-wise): the gradient of a partial last group
  std::vector<float> acc;   // [C][3][8]: lanes of sum p*t, sum p, sum t over one tile
  // [C][8] (backward): d(loss)/dp_c where the label is c, and elsewhere, in
  // every lane (floats, not Float8: std::vector does not align those here).
  std::vector<float> grad_on_target, grad_off_target;
  std::vector<float> tile_exps;  // [C][kExpsStride]: exp(x - max) of the tile
  std::vector<float> tile_inv;   // [kTile]: 1 / sum of the exps
  std::vector<float> tile_shift;  // [kTile] (forward, cross-entropy): max + log(sum), so l_c = shift - x_c
  std::vector<float> tile_dot;    // [kTile] (backward): sum_k p_k d(loss)/dp_k (minus W with cross-entropy)
  std::vector<float> ce_on_target, ce_off_target;  // [C][8] (backward, cross-entropy): d(loss)/d(l_c)
  std::vector<float> tile_logits;  // [C][kTile] (16-bit logits): the tile in float
  std::vector<float> tile_grad;    // [C][kTile] (16-bit logits, backward): the tile's gradient in float

  // used: whether the path runs at all (nothing is allocated otherwise);
  // half_input: whether the logits are 16-bit floats.
  SoftmaxLabelScratch(int64_t classes, bool used, bool half_input = false)
      : tail(classes * kGroup),
        group_exps(classes * kGroup),
        group_grad(classes * kGroup),
        acc(classes * 3 * 8),
        grad_on_target(classes * 8),
        grad_off_target(classes * 8),
        tile_exps(classes * kExpsStride),
        tile_inv(used ? kTile : 0),
        tile_shift(used ? kTile : 0),
        tile_dot(used ? kTile : 0),
        ce_on_target(classes * 8),
        ce_off_target(classes * 8),
        tile_logits(used && half_input ? classes * kTile : 0),
        tile_grad(used && half_input ? classes * kTile : 0) {}
};

// max_k x_k of the kGroup positions at x (class rows sc apart). A plain
// vmaxps that may skip a NaN logit: that class's exp is NaN all the same, so
// is the sum, and so is every probability of the position, as torch.softmax
// gives; a +inf logit gives inf - inf = NaN likewise.
inline void group_max(const float* x, int64_t sc, int64_t C, Float8* m) {
  for (int v = 0; v < kGroupVectors; ++v) m[v] = load8(x + 8 * v);
  for (int64_t c = 1; c < C; ++c) {
    for (int v = 0; v < kGroupVectors; ++v) {
      const Float8 xv = load8(x + c * sc + 8 * v);
      m[v] = xv > m[v] ? xv : m[v];  // vmaxps
    }
  }
}

// exp(x_c - max_k x_k) of the kGroup positions at x (class rows sc apart)
// into exps[c]; 1 / their sum into inv.
// shift (if not null): max + log(sum), the position's log-sum-exp.
inline void softmax_exps(const float* x, int64_t sc, int64_t C, float* exps, int64_t exps_stride, Float8* inv,
                         Float8* shift = nullptr) {
  Float8 m[kGroupVectors], sum[kGroupVectors];
  group_max(x, sc, C, m);
  for (int v = 0; v < kGroupVectors; ++v) sum[v] = Float8{};
  for (int64_t c = 0; c < C; ++c) {
    for (int v = 0; v < kGroupVectors; ++v) {
      const Float8 e = exp_nonpositive_lanes<Float8, UInt8>(load8(x + c * sc + 8 * v) - m[v]);
      store8(exps + exps_stride * c + 8 * v, e);
      sum[v] += e;
    }
  }
  for (int v = 0; v < kGroupVectors; ++v) inv[v] = broadcast8(1.f) / sum[v];
  if (shift != nullptr) {
    for (int v = 0; v < kGroupVectors; ++v) shift[v] = m[v] + log_of_exp_sum(sum[v]);
  }
}

// The group at position i of a tile of n positions: the logits themselves, or
// (past n) a zero-padded copy of the remaining ones. Returns the class stride.
inline int64_t group_logits(const float* x, int64_t sc, int64_t C, int64_t i, int64_t n,
                            SoftmaxLabelScratch& s, const float** out) {
  if (i + kGroup <= n) {
    *out = x + i;
    return sc;
  }
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t j = 0; j < kGroup; ++j) s.tail[c * kGroup + j] = i + j < n ? x[c * sc + i + j] : 0.f;
  }
  *out = s.tail.data();
  return kGroup;
}

// Adds the tile's statistics to chunk_acc[c * kNumStats + k] for k in
// {kTruePositive, kSumProb, kSumTarget} (and kPixelLoss, kPixelLossTarget
// with kCrossEntropy). x: the tile's class-0 logits, class rows sc apart;
// labels: the tile's labels (-1 where ignored, and padded with -1 up to
// kTile, so that every 8-label group can be read whole).
template <bool kCrossEntropy>
inline void softmax_label_tile_stats(const float* x, int64_t sc, int64_t C, int64_t n, const int32_t* labels,
                                     SoftmaxLabelScratch& s, double* chunk_acc) {
  float* acc = s.acc.data();
  float* exps = s.tile_exps.data();
  float* inv = s.tile_inv.data();
  const Float8 zero = {};
  const Float8 one = broadcast8(1.f);
  for (int64_t i = 0; i < n; i += kGroup) {
    const float* xg;
    const int64_t sg = group_logits(x, sc, C, i, n, s, &xg);
    Float8 group_inv[kGroupVectors], group_shift[kGroupVectors];
    softmax_exps(xg, sg, C, exps + i, kExpsStride, group_inv, kCrossEntropy ? group_shift : nullptr);
    for (int v = 0; v < kGroupVectors; ++v) store8(inv + i + 8 * v, group_inv[v]);
    if (kCrossEntropy) {
      for (int v = 0; v < kGroupVectors; ++v) store8(s.tile_shift.data() + i + 8 * v, group_shift[v]);
    }
  }
  const int64_t n_up = (n + 7) / 8 * 8;  // past n, labels are -1: nothing is added
  for (int64_t c = 0; c < C; ++c) {
    const float* e_row = exps + kExpsStride * c;
    Float8 tp = zero, sp = zero, st = zero;
    for (int64_t i = 0; i < n_up; i += 8) {
      Int8 label;
      std::memcpy(&label, labels + i, sizeof(label));
      const Float8 p = (label >= 0) ? load8(e_row + i) * load8(inv + i) : zero;  // ignored: leaves every sum
      const Float8 t = (label == static_cast<int32_t>(c)) ? one : zero;
      tp += p * t;  // a product, not a select: a NaN probability reaches every class's sum, as torch's does
      sp += p;
      st += t;
    }
    store8(acc + c * 24 + 8 * kTruePositive, tp);
    store8(acc + c * 24 + 8 * kSumProb, sp);
    store8(acc + c * 24 + 8 * kSumTarget, st);
    if (kCrossEntropy) {  // l = shift - x_c, summed where valid and where the label is c
      const float* x_row = x + c * sc;
      Float8 loss = zero, loss_target = zero;
      for (int64_t i = 0; i < n_up; i += 8) {
        Int8 label;
        std::memcpy(&label, labels + i, sizeof(label));
        const Float8 logit = i + 8 <= n ? load8(x_row + i) : load8_partial(x_row + i, n - i);
        const Float8 l = load8(s.tile_shift.data() + i) - logit;
        loss += (label >= 0) ? l : zero;
        loss_target += (label == static_cast<int32_t>(c)) ? l : zero;
      }
      chunk_acc[c * kNumStats + kPixelLoss] += static_cast<double>(sum_lanes(loss));
      chunk_acc[c * kNumStats + kPixelLossTarget] += static_cast<double>(sum_lanes(loss_target));
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    for (int k = 0; k < kNumBasicStats; ++k) {
      chunk_acc[c * kNumStats + k] += static_cast<double>(sum_lanes(load8(acc + c * 24 + 8 * k)));
    }
  }
}

// Backward, the gradient of the tile: d(loss)/dx = p_c * (g_c - sum_k p_k g_k)
// with g_c = d(loss)/dp_c = coef_tp * t_c + coef_sp; exactly zero at ignored
// positions. kCrossEntropy adds the cross-entropy sums' part: with w_c =
// d(loss)/d(l_c) = coef_l + coef_tl * t_c and W = sum_k w_k, d/dx_c of
// sum_k w_k l_k is p_c * W - w_c (l_k = logsumexp(x) - x_k). (Streaming
// stores that bypass the caches were tried for large gradients: no gain on
// the AMD EPYC VM, so plain stores.)
//
// Two strategies, by class count. Up to kGroupwiseMaxClasses classes, one
// group of positions at a time does everything in registers: exps, the dot
// product, then the C gradient rows of the group (64 bytes each). With more
// classes those C row pieces, and the C logit pieces read beside them, all
// fall into the same cache sets where the class stride is a multiple of 4 KB
// (64^3, 96^3, 128^3): 2C lines for 8 ways. There the tile is done in two
// passes (softmax_label_tile_backward_rowwise), the gradient written one
// contiguous class row at a time: at C = 14, 2x14x64^3, 1.93 -> 0.88 ns per
// logit. At C = 2 and 4 the row-wise passes were 10-30% slower (they reload
// labels, 1 / sum and the dot product per class), hence the two.
constexpr int64_t kGroupwiseMaxClasses = 4;

// The per-class constants of the tile's gradient, [C][8] each: g_c where the
// label is c and elsewhere, and the cross-entropy's w_c likewise.
struct GradientConstants {
  const float* on_target;
  const float* off_target;
  const float* ce_on;
  const float* ce_off;
};

// Fills them into the scratch (every lane of each class).
inline GradientConstants gradient_constants(const float* coefs, int64_t C, bool cross_entropy,
                                            SoftmaxLabelScratch& s) {
  for (int64_t c = 0; c < C; ++c) {
    const float* coef = coefs + c * kNumGradCoefs;
    store8(s.grad_on_target.data() + 8 * c, broadcast8(coef[kCoefTruePositive] + coef[kCoefSumProb]));
    // coef_tp * 0 + coef_sp, as grad_wrt_prob computes it: a non-finite coef_tp spreads everywhere.
    store8(s.grad_off_target.data() + 8 * c, broadcast8(coef[kCoefTruePositive] * 0.f + coef[kCoefSumProb]));
    if (cross_entropy) {
      store8(s.ce_on_target.data() + 8 * c, broadcast8(coef[kCoefPixelLoss] + coef[kCoefPixelLossTarget]));
      store8(s.ce_off_target.data() + 8 * c, broadcast8(coef[kCoefPixelLoss]));
    }
  }
  return {s.grad_on_target.data(), s.grad_off_target.data(), s.ce_on_target.data(), s.ce_off_target.data()};
}

// The labels of the group at labels (kGroup of them; the tile's are padded with -1).
inline void load_group_labels(const int32_t* labels, Int8* label) {
  for (int v = 0; v < kGroupVectors; ++v) std::memcpy(&label[v], labels + 8 * v, sizeof(label[v]));
}

// Few classes: one group at a time, in registers (see above).
template <bool kCrossEntropy>
inline void softmax_label_tile_backward_groupwise(const float* x, int64_t sc, int64_t C, int64_t n,
                                                  const int32_t* labels, const GradientConstants& k, float* g,
                                                  int64_t gc, SoftmaxLabelScratch& s) {
  const Float8 zero = {};
  const float *on_target = k.on_target, *off_target = k.off_target, *ce_on = k.ce_on, *ce_off = k.ce_off;
  float* exps = s.group_exps.data();
  for (int64_t i = 0; i < n; i += kGroup) {
    const float* xg;
    const int64_t sg = group_logits(x, sc, C, i, n, s, &xg);
    Int8 label[kGroupVectors];
    load_group_labels(labels + i, label);
    Float8 inv[kGroupVectors];
    softmax_exps(xg, sg, C, exps, kGroup, inv);
    Float8 dot[kGroupVectors] = {};  // sum_k p_k * d(loss)/dp_k, minus W with kCrossEntropy
    for (int64_t c = 0; c < C; ++c) {
      for (int v = 0; v < kGroupVectors; ++v) {
        const Int8 is_target = label[v] == static_cast<int32_t>(c);
        const Float8 p = load8(exps + kGroup * c + 8 * v) * inv[v];
        dot[v] += p * (is_target ? load8(on_target + 8 * c) : load8(off_target + 8 * c));
        if (kCrossEntropy) dot[v] -= is_target ? load8(ce_on + 8 * c) : load8(ce_off + 8 * c);
      }
    }
    const bool whole = i + kGroup <= n;
    float* out = whole ? g + i : s.group_grad.data();
    const int64_t oc = whole ? gc : kGroup;
    for (int64_t c = 0; c < C; ++c) {
      for (int v = 0; v < kGroupVectors; ++v) {
        const Int8 is_target = label[v] == static_cast<int32_t>(c);
        const Float8 p = load8(exps + kGroup * c + 8 * v) * inv[v];
        Float8 grad_x = p * ((is_target ? load8(on_target + 8 * c) : load8(off_target + 8 * c)) - dot[v]);
        if (kCrossEntropy) grad_x -= is_target ? load8(ce_on + 8 * c) : load8(ce_off + 8 * c);
        grad_x = (label[v] >= 0) ? grad_x : zero;  // ignored: exactly zero, whatever the logits
        store8(out + c * oc + 8 * v, grad_x);
      }
    }
    if (!whole) {
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t j = 0; i + j < n; ++j) g[c * gc + i + j] = s.group_grad[c * kGroup + j];
      }
    }
  }
}

// Many classes: two passes over the tile (see above). The first, a group at a
// time, takes the exps and, in the same sweep over the classes, the dot
// product: p_k = e_k / sum_j e_j, so sum_k p_k g_k is (sum_k e_k g_k) /
// sum_j e_j, and the sum of the e_k g_k needs no probability yet. The second
// writes the gradient one class row at a time.
template <bool kCrossEntropy>
inline void softmax_label_tile_backward_rowwise(const float* x, int64_t sc, int64_t C, int64_t n,
                                                const int32_t* labels, const GradientConstants& k, float* g,
                                                int64_t gc, SoftmaxLabelScratch& s) {
  const Float8 zero = {};
  const float *on_target = k.on_target, *off_target = k.off_target, *ce_on = k.ce_on, *ce_off = k.ce_off;
  float* exps = s.tile_exps.data();
  float* inv = s.tile_inv.data();
  float* dots = s.tile_dot.data();
  for (int64_t i = 0; i < n; i += kGroup) {
    const float* xg;
    const int64_t sg = group_logits(x, sc, C, i, n, s, &xg);
    Int8 label[kGroupVectors];
    load_group_labels(labels + i, label);
    Float8 m[kGroupVectors], sum[kGroupVectors], dot[kGroupVectors], w[kGroupVectors];
    group_max(xg, sg, C, m);
    for (int v = 0; v < kGroupVectors; ++v) sum[v] = dot[v] = w[v] = zero;
    for (int64_t c = 0; c < C; ++c) {
      for (int v = 0; v < kGroupVectors; ++v) {
        const Float8 e = exp_nonpositive_lanes<Float8, UInt8>(load8(xg + c * sg + 8 * v) - m[v]);
        store8(exps + kExpsStride * c + i + 8 * v, e);
        sum[v] += e;
        const Int8 is_target = label[v] == static_cast<int32_t>(c);
        dot[v] += e * (is_target ? load8(on_target + 8 * c) : load8(off_target + 8 * c));
        if (kCrossEntropy) w[v] += is_target ? load8(ce_on + 8 * c) : load8(ce_off + 8 * c);
      }
    }
    for (int v = 0; v < kGroupVectors; ++v) {
      const Float8 group_inv = broadcast8(1.f) / sum[v];
      store8(inv + i + 8 * v, group_inv);
      store8(dots + i + 8 * v, dot[v] * group_inv - w[v]);
    }
  }
  // Past n the labels are -1 and the exps those of zero-padded logits: the
  // lanes are computed and only the first n are stored.
  const int64_t n_up = (n + 7) / 8 * 8;
  for (int64_t c = 0; c < C; ++c) {
    const float* e_row = exps + kExpsStride * c;
    float* g_row = g + c * gc;
    const Float8 on = load8(on_target + 8 * c), off = load8(off_target + 8 * c);
    const Float8 l_on = kCrossEntropy ? load8(ce_on + 8 * c) : zero;
    const Float8 l_off = kCrossEntropy ? load8(ce_off + 8 * c) : zero;
    for (int64_t i = 0; i < n_up; i += 8) {
      Int8 label;
      std::memcpy(&label, labels + i, sizeof(label));
      const Int8 is_target = label == static_cast<int32_t>(c);
      const Float8 p = load8(e_row + i) * load8(inv + i);
      Float8 grad_x = p * ((is_target ? on : off) - load8(dots + i));
      if (kCrossEntropy) grad_x -= is_target ? l_on : l_off;
      grad_x = (label >= 0) ? grad_x : zero;  // ignored: exactly zero, whatever the logits
      if (i + 8 <= n) {
        store8(g_row + i, grad_x);
      } else {
        float lanes[8];
        store8(lanes, grad_x);
        for (int64_t j = 0; i + j < n; ++j) g_row[i + j] = lanes[j];
      }
    }
  }
}

// Writes d(loss)/dx of the tile into g (class rows gc apart, unit spatial
// stride). coefs: the sample's [C][kNumGradCoefs]; labels as for
// softmax_label_tile_stats.
template <bool kCrossEntropy>
inline void softmax_label_tile_backward(const float* x, int64_t sc, int64_t C, int64_t n, const int32_t* labels,
                                        const float* coefs, float* g, int64_t gc, SoftmaxLabelScratch& s) {
  const GradientConstants k = gradient_constants(coefs, C, kCrossEntropy, s);
  if (C <= kGroupwiseMaxClasses) {
    softmax_label_tile_backward_groupwise<kCrossEntropy>(x, sc, C, n, labels, k, g, gc, s);
  } else {
    softmax_label_tile_backward_rowwise<kCrossEntropy>(x, sc, C, n, labels, k, g, gc, s);
  }
}

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
