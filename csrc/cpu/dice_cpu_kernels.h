// The CPU kernels, compiled once per instruction set.
//
// No include guard on purpose: dice_cpu_kernels_<isa>.cpp includes this file
// inside `#pragma GCC target(...)` with FD_CPU_ISA_NS naming a namespace of
// its own, so each compilation has distinct symbols and dispatch picks one at
// run time (see dice_cpu_isa.h).
//
// Structure: each sample is walked in fixed chunks of positions (one
// parallel work item each, independent of the thread count, so results are
// bitwise identical for any number of threads) and, inside a chunk, in tiles
// small enough to stay in L1. A tile is loaded once into class-major buffers;
// every loop over it is a branch-free loop over positions that the compiler
// vectorizes. Per-element math comes from dice_math.h, shared with CUDA.
#ifndef FD_CPU_ISA_NS
#error "define FD_CPU_ISA_NS before including dice_cpu_kernels.h"
#endif

namespace fastdice {
namespace cpu {
namespace FD_CPU_ISA_NS {

constexpr int64_t kTile = 512;          // positions per tile
constexpr int64_t kTilesPerChunk = 8;   // a chunk is one parallel work item
constexpr int64_t kChunk = kTile * kTilesPerChunk;
constexpr int kLanes = 8;  // independent partial sums per statistic (one AVX2 register of floats)

// Explicit SIMD vectors (GCC vector extensions): one AVX2 register, or two SSE
// registers in the baseline build.
typedef float Float8 __attribute__((vector_size(32)));
typedef int32_t Int8 __attribute__((vector_size(32)));
typedef uint32_t UInt8 __attribute__((vector_size(32)));
static_assert(kLanes == 8, "Float8 holds kLanes floats");

// exp(x) for x <= 0 (Cephes' range reduction, about 1 ulp), for
// a float (V = float, U = uint32_t) or a SIMD vector of them (V = Float8,
// U = UInt8): branch-free, so that GCC vectorizes the scalar loops calling it.
// n = round(x / ln 2) comes from adding 1.5 * 2^23, which leaves n in the low
// bits of the sum: no float/int conversions, half the time of a floor-based
// reduction on AMD Zen. Results below the smallest normal float flush to 0
// by the final select (x is not clamped first: below it, or at -inf, the
// steps compute garbage or NaN that the select discards); NaN stays NaN.
template <typename V, typename U>
inline V exp_nonpositive_lanes(V x) {
  const V zero = V{};
  const V lowest = zero + -87.3365447504f;  // log of the smallest normal float
  const V round_magic = zero + 12582912.f;  // 1.5 * 2^23
  const V xc = x;
  const V shifted = xc * 1.44269504088896341f + round_magic;
  const V nf = shifted - round_magic;  // n = round(x / ln 2), exactly, as a float
  U shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof(shifted_bits));
  V r = xc - nf * 0.693359375f;  // ln 2 split in two for an exact reduction
  r = r - nf * -2.12194440e-4f;
  // exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2) / 2, P of degree 4 fitted for
  // minimal relative error (3e-9, below float rounding; Cephes' degree 5 is
  // more than float needs). Checked on every float in [-87.3, 0]: <= 1.01 ulp.
  V y = zero + 1.381459878757596e-3f;
  y = y * r + 8.368716575205326e-3f;
  y = y * r + 4.166838899254799e-2f;
  y = y * r + 1.666652113199234e-1f;
  y = y * r + 4.999999403953552e-1f;
  y = y * (r * r) + r + 1.0f;
  // 2^n: the low 9 bits of shifted_bits + 127 are n + 127 in [1, 254]
  // (1.5 * 2^23 has zero low bits); shifting by 23 drops everything above.
  const U bits = (shifted_bits + 127u) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const V result = y * scale;
  return x < lowest ? zero : result;
}

inline float exp_nonpositive(float x) { return exp_nonpositive_lanes<float, uint32_t>(x); }

inline double exp_nonpositive(double x) { return std::exp(x); }

// log(2^e * (1 + m)) for m in [sqrt(1/2) - 1, sqrt(2) - 1) (Cephes' logf
// polynomial), for a float or a Float8.
template <typename V>
inline V log_from_reduced(V m, V fe) {
  const V z = m * m;
  V y = V{} + 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

// log(x) for x >= 0 (Cephes' single-precision logf, about 1 ulp), branch-free
// like exp_nonpositive so that the loops calling it vectorize. log(0) = -inf,
// log(inf) = inf, NaN and negative x give NaN; subnormal x is exact too.
inline float log_nonnegative(float x) {
  const bool subnormal = x < 1.17549435e-38f;
  const float xs = subnormal ? x * 8388608.f : x;  // 2^23
  uint32_t bits;
  std::memcpy(&bits, &xs, sizeof(bits));
  int e = static_cast<int>((bits >> 23) & 0xffu) - 126 - (subnormal ? 23 : 0);
  bits = (bits & 0x807fffffu) | 0x3f000000u;  // x = m * 2^e, m in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  const bool below = m < 0.707106781186547524f;
  e -= below;
  m = below ? m + m - 1.f : m - 1.f;
  float r = log_from_reduced(m, static_cast<float>(e));
  r = x == 0.f ? -std::numeric_limits<float>::infinity() : r;
  r = x == std::numeric_limits<float>::infinity() ? x : r;
  r = ((x < 0.f) | (x != x)) ? std::numeric_limits<float>::quiet_NaN() : r;
  return r;
}

// The transcendental functions of the pixel losses (dice_math.h's policy M).
template <typename acc_t>
struct CpuMath;

template <>
struct CpuMath<float> {
  static float exp_nonpositive(float x) { return FD_CPU_ISA_NS::exp_nonpositive(x); }
  static float log(float x) { return log_nonnegative(x); }
  // log(1 + x) without losing a small x: log(u) * x / (u - 1) with u = 1 + x
  // rounded (Goldberg's trick); x itself where u rounds to 1.
  static float log1p_unit(float x) {
    const float u = 1.f + x;
    const float d = u - 1.f;
    const float r = log_nonnegative(u) * (x / d);  // computed, then selected: branch-free
    return d == 0.f ? x : r;
  }
};

template <>
struct CpuMath<double> {
  static double exp_nonpositive(double x) { return std::exp(x); }
  static double log(double x) { return std::log(x); }
  static double log1p_unit(double x) { return std::log1p(x); }
};

inline int64_t chunks_per_sample(int64_t spatial) { return (spatial + kChunk - 1) / kChunk; }

// One tile: positions [s0, s0 + n) of sample b, in class-major buffers.
template <typename acc_t>
struct Tile {
  int64_t classes;
  std::vector<acc_t> x;       // [C][kTile]: logits, then activation values
  std::vector<acc_t> inv;     // [kTile]: softmax 1 / sum exp
  std::vector<acc_t> target;  // [C][kTile]: dense targets
  std::vector<int32_t> labels;  // [kTile]: label, -1 where ignored or padding
  // Pixel losses only:
  std::vector<acc_t> shift;   // [kTile]: softmax max + log(sum exp), so log p = x - shift
  std::vector<acc_t> logits;  // [kTile]: one class's logits
  std::vector<acc_t> pixel;   // [2][kTile] (forward): l and t*l of one class
  std::vector<acc_t> direct;  // [C][kTile] (backward): the pixel loss's gradient per class

  Tile(int64_t c, bool is_label, bool has_pixel = false)
      : classes(c),
        x(c * kTile),
        inv(kTile),
        target(is_label ? 0 : c * kTile),
        labels(is_label ? kTile : 0),
        shift(has_pixel ? kTile : 0),
        logits(has_pixel ? kTile : 0),
        pixel(has_pixel ? 2 * kTile : 0),
        direct(has_pixel ? c * kTile : 0) {}
  acc_t* row(int64_t c) { return x.data() + c * kTile; }
  acc_t* target_row(int64_t c) { return target.data() + c * kTile; }
  acc_t* direct_row(int64_t c) { return direct.data() + c * kTile; }
};

// Reads input[b, :, s0:s0+n] and leaves activation values in the tile:
// probabilities for none/sigmoid; for softmax exp(x - max) in the rows and
// 1 / sum in tile.inv (prob() multiplies them). Padding positions (i >= n)
// end as probability 0. The logits are read straight from the input (twice
// for softmax, from L1), never copied into the tile first.
template <Activation kAct, typename scalar_t, typename acc_t>
void load_activated(const scalar_t* input, const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                    Tile<acc_t>& tile, bool want_shift = false) {
  const int64_t C = pr.classes;
  const int64_t ss = pr.in_stride_s;
  // f(i, v) for the n logits v of row c, contiguous or strided.
  auto for_row = [&](int64_t c, auto&& f) {
    const scalar_t* src = input + pr.input_offset(b, c, s0);
    if (ss == 1) {
      for (int64_t i = 0; i < n; ++i) f(i, static_cast<acc_t>(src[i]));
    } else {
      for (int64_t i = 0; i < n; ++i) f(i, static_cast<acc_t>(src[i * ss]));
    }
  };
  if (kAct == Activation::kSoftmax) {
    acc_t row_max[kTile], row_sum[kTile];
    for (int64_t i = 0; i < kTile; ++i) {
      row_max[i] = -std::numeric_limits<acc_t>::infinity();
      row_sum[i] = acc_t(0);
    }
    for (int64_t c = 0; c < C; ++c) for_row(c, [&](int64_t i, acc_t v) { row_max[i] = nan_max(row_max[i], v); });
    for (int64_t c = 0; c < C; ++c) {
      acc_t* dst = tile.row(c);
      for_row(c, [&](int64_t i, acc_t v) {
        const acc_t e = exp_nonpositive(v - row_max[i]);
        dst[i] = e;
        row_sum[i] += e;
      });
    }
    for (int64_t i = 0; i < n; ++i) tile.inv[i] = acc_t(1) / row_sum[i];
    for (int64_t i = n; i < kTile; ++i) tile.inv[i] = acc_t(0);
    if (want_shift) {
      for (int64_t i = 0; i < n; ++i) tile.shift[i] = row_max[i] + CpuMath<acc_t>::log(row_sum[i]);
      for (int64_t i = n; i < kTile; ++i) tile.shift[i] = acc_t(0);
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      acc_t* dst = tile.row(c);
      if (kAct == Activation::kSigmoid) {
        for_row(c, [&](int64_t i, acc_t v) { dst[i] = sigmoid_from_exp_neg_abs(v, exp_nonpositive(-abs_of(v))); });
      } else {
        for_row(c, [&](int64_t i, acc_t v) { dst[i] = v; });
      }
    }
  }
  if (n < kTile) {
    for (int64_t c = 0; c < C; ++c) {
      acc_t* dst = tile.row(c);
      for (int64_t i = n; i < kTile; ++i) dst[i] = acc_t(0);
    }
  }
}

template <Activation kAct, typename acc_t>
inline acc_t prob(const acc_t* x, const acc_t* inv, int64_t i) {
  return kAct == Activation::kSoftmax ? x[i] * inv[i] : x[i];
}

[[noreturn]] inline void throw_out_of_range(int64_t label, const DiceProblem& pr, int64_t b, int64_t s) {
  TORCH_CHECK_VALUE(false, "fastdice: target label ", label, " (sample ", b, ", flat position ", s,
                    ") is outside [0, ", pr.classes, ")", pr.has_ignore ? " and is not ignore_index" : "");
  while (true) {
  }
}

template <typename label_t>
int64_t load_labels_typed(const label_t* src, int64_t stride, const DiceProblem& pr, int64_t b, int64_t s0,
                          int64_t n, int32_t* labels) {
  const int64_t C = pr.classes;
  const bool has_ignore = pr.has_ignore;
  const int64_t ignore = pr.ignore_index;
  int64_t valid = 0;
  int32_t bad = 0;
  auto classify = [&](int64_t i, int64_t v) {
    const bool ignored = has_ignore && v == ignore;
    const bool in_range = v >= 0 && v < C;
    labels[i] = (!ignored && in_range) ? static_cast<int32_t>(v) : -1;
    valid += (!ignored && in_range);
    bad |= (!ignored && !in_range);
  };
  if (stride == 1) {
    for (int64_t i = 0; i < n; ++i) classify(i, static_cast<int64_t>(src[i]));
  } else {
    for (int64_t i = 0; i < n; ++i) classify(i, static_cast<int64_t>(src[i * stride]));
  }
  if (bad) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = static_cast<int64_t>(src[i * stride]);
      if (!(has_ignore && v == ignore) && (v < 0 || v >= C)) throw_out_of_range(v, pr, b, s0 + i);
    }
  }
  for (int64_t i = n; i < kTile; ++i) labels[i] = -1;
  return valid;
}

// Fills tile.labels from target[b, s0:s0+n]; returns the number of valid
// positions. Throws on a label outside [0, C) that is not ignore_index.
template <typename acc_t>
int64_t load_labels(const DiceProblem& pr, int64_t b, int64_t s0, int64_t n, Tile<acc_t>& tile) {
  const TargetView& tv = pr.target;
  const int64_t off = pr.label_offset(b, s0);
  int32_t* out = tile.labels.data();
  switch (tv.dtype) {
    case TargetDtype::kUInt8:
      return load_labels_typed(static_cast<const uint8_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, out);
    case TargetDtype::kInt8:
      return load_labels_typed(static_cast<const int8_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, out);
    case TargetDtype::kInt16:
      return load_labels_typed(static_cast<const int16_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, out);
    case TargetDtype::kInt32:
      return load_labels_typed(static_cast<const int32_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, out);
    default:
      return load_labels_typed(static_cast<const int64_t*>(tv.data) + off, tv.stride_s, pr, b, s0, n, out);
  }
}

// Returns true when some loaded value lies outside [0, 1] (or is NaN).
template <typename target_t, typename acc_t>
bool load_dense_typed(const target_t* base, const DiceProblem& pr, int64_t b, int64_t s0, int64_t n,
                      Tile<acc_t>& tile) {
  const int64_t stride = pr.target.stride_s;
  int32_t outside = 0;
  for (int64_t c = 0; c < pr.classes; ++c) {
    const target_t* src = base + pr.dense_target_offset(b, c, s0);
    acc_t* dst = tile.target_row(c);
    if (stride == 1) {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i * stride]);
    }
    for (int64_t i = 0; i < n; ++i) outside |= !(dst[i] >= acc_t(0) && dst[i] <= acc_t(1));
    for (int64_t i = n; i < kTile; ++i) dst[i] = acc_t(0);
  }
  return outside != 0;
}

// Loads dense target[b, :, s0:s0+n] into tile.target, zero-padded; returns
// true when a value lies outside [0, 1].
template <typename acc_t>
bool load_dense(const DiceProblem& pr, int64_t b, int64_t s0, int64_t n, Tile<acc_t>& tile) {
  const void* d = pr.target.data;
  switch (pr.target.dtype) {
    case TargetDtype::kFloat16:
      return load_dense_typed(static_cast<const c10::Half*>(d), pr, b, s0, n, tile);
    case TargetDtype::kBFloat16:
      return load_dense_typed(static_cast<const c10::BFloat16*>(d), pr, b, s0, n, tile);
    case TargetDtype::kFloat32:
      return load_dense_typed(static_cast<const float*>(d), pr, b, s0, n, tile);
    case TargetDtype::kFloat64:
      return load_dense_typed(static_cast<const double*>(d), pr, b, s0, n, tile);
    case TargetDtype::kBool:
      return load_dense_typed(static_cast<const bool*>(d), pr, b, s0, n, tile);
    case TargetDtype::kUInt8:
      return load_dense_typed(static_cast<const uint8_t*>(d), pr, b, s0, n, tile);
    case TargetDtype::kInt8:
      return load_dense_typed(static_cast<const int8_t*>(d), pr, b, s0, n, tile);
    case TargetDtype::kInt16:
      return load_dense_typed(static_cast<const int16_t*>(d), pr, b, s0, n, tile);
    case TargetDtype::kInt32:
      return load_dense_typed(static_cast<const int32_t*>(d), pr, b, s0, n, tile);
    case TargetDtype::kInt64:
      return load_dense_typed(static_cast<const int64_t*>(d), pr, b, s0, n, tile);
  }
  return false;
}

// After a chunk reported a target value outside [0, 1]: finds the first one
// and raises (a 0/255 mask silently gives a wrong loss otherwise).
[[noreturn]] inline void throw_target_outside_unit_interval(const DiceProblem& pr, int64_t b, int64_t s_begin,
                                                           int64_t s_end) {
  for (int64_t c = 0; c < pr.classes; ++c) {
    for (int64_t s = s_begin; s < s_end; ++s) {
      const double v = load_target_value<double>(pr.target.data, pr.target.dtype, pr.dense_target_offset(b, c, s));
      TORCH_CHECK_VALUE(v >= 0.0 && v <= 1.0, "fastdice: dense target values must lie in [0, 1]; got ", v,
                        " at sample ", b, ", class ", c, ", flat position ", s,
                        " (a 0/255 mask? divide by 255; class indices? pass an integer label map)");
    }
  }
  TORCH_CHECK(false, "fastdice: internal error locating a target value outside [0, 1]");
  while (true) {
  }
}

// acc[k][j]: lane j of statistic k, seen by accumulate_element as acc[k].
template <typename acc_t>
struct LaneView {
  acc_t (*lanes)[kLanes];
  int j;
  acc_t& operator[](int k) const { return lanes[k][j]; }
};

// Adds class c's statistics over the tile to chunk_acc[0..kNumStats).
template <Activation kAct, bool kFull, typename acc_t>
void accumulate_class(Tile<acc_t>& tile, int64_t c, bool is_label, double* chunk_acc) {
  constexpr int kStats = StatSet<kFull>::kAccumulated;
  acc_t lanes[kStats][kLanes] = {};
  const acc_t* x = tile.row(c);
  const acc_t* inv = tile.inv.data();
  if (is_label) {
    const int32_t* labels = tile.labels.data();
    const int32_t cls = static_cast<int32_t>(c);
    for (int64_t i = 0; i < kTile; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const int32_t l = labels[i + j];
        const acc_t p = l >= 0 ? prob<kAct>(x, inv, i + j) : acc_t(0);  // ignored: leaves every sum
        const acc_t t = l == cls ? acc_t(1) : acc_t(0);
        accumulate_element<kFull>(LaneView<acc_t>{lanes, j}, p, t);
      }
    }
  } else {
    const acc_t* target = tile.target_row(c);
    for (int64_t i = 0; i < kTile; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        accumulate_element<kFull>(LaneView<acc_t>{lanes, j}, prob<kAct>(x, inv, i + j), target[i + j]);
      }
    }
  }
  for (int k = 0; k < kStats; ++k) {
    acc_t s = 0;
    for (int j = 0; j < kLanes; ++j) s += lanes[k][j];
    chunk_acc[k] += static_cast<double>(s);
  }
}

// float: the same sums over explicit 8-wide SIMD vectors, since GCC does not
// vectorize the float reductions above by itself.

template <Activation kAct, bool kFull>
void accumulate_class(Tile<float>& tile, int64_t c, bool is_label, double* chunk_acc) {
  constexpr int kStats = StatSet<kFull>::kAccumulated;
  Float8 acc[kStats] = {};
  const float* x = tile.row(c);
  const float* inv = tile.inv.data();
  const Float8 zero = {};
  const Float8 one = zero + 1.f;
  auto load = [&](int64_t i) {
    Float8 p;
    std::memcpy(&p, x + i, sizeof(p));
    if (kAct == Activation::kSoftmax) {
      Float8 r;
      std::memcpy(&r, inv + i, sizeof(r));
      p *= r;
    }
    return p;
  };
  if (is_label) {
    const int32_t* labels = tile.labels.data();
    const Int8 cls = Int8{} + static_cast<int32_t>(c);
    for (int64_t i = 0; i < kTile; i += kLanes) {
      Int8 l;
      std::memcpy(&l, labels + i, sizeof(l));
      const Float8 p = l >= 0 ? load(i) : zero;  // ignored: leaves every sum
      const Float8 t = l == cls ? one : zero;
      accumulate_element<kFull>(acc, p, t);
    }
  } else {
    const float* target = tile.target_row(c);
    for (int64_t i = 0; i < kTile; i += kLanes) {
      Float8 t;
      std::memcpy(&t, target + i, sizeof(t));
      accumulate_element<kFull>(acc, load(i), t);
    }
  }
  for (int k = 0; k < kStats; ++k) {
    float s = 0;
    for (int j = 0; j < kLanes; ++j) s += acc[k][j];
    chunk_acc[k] += static_cast<double>(s);
  }
}

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
      ok = i < n;
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
  const scalar_t* src = input + pr.input_offset(b, c, s0);
  const int64_t ss = pr.in_stride_s;
  if (ss == 1) {
    for (int64_t i = 0; i < n; ++i) z[i] = static_cast<acc_t>(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) z[i] = static_cast<acc_t>(src[i * ss]);
  }
  for (int64_t i = n; i < kTile; ++i) z[i] = acc_t(0);
  const bool is_label = pr.target.is_label;
  const int32_t* labels = is_label ? tile.labels.data() : nullptr;
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
    if (pr.pixel_loss == PixelLoss::kCrossEntropy) {
      go(focal, label, std::true_type{});
    } else {
      go(focal, label, std::false_type{});
    }
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

// Sum of a tile row in a fixed order (kLanes partial sums), in double.
template <typename acc_t>
double sum_tile_row(const acc_t* v) {
  acc_t lanes[kLanes] = {};
  for (int64_t i = 0; i < kTile; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += v[i + j];
  }
  acc_t s = 0;
  for (int j = 0; j < kLanes; ++j) s += lanes[j];
  return static_cast<double>(s);
}

// float: the same order over one explicit 8-wide vector.
inline double sum_tile_row(const float* v) {
  typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
  Lanes acc = {};
  for (int64_t i = 0; i < kTile; i += kLanes) {
    Lanes x;
    std::memcpy(&x, v + i, sizeof(x));
    acc += x;
  }
  float s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return static_cast<double>(s);
}

// Logit types of the softmax + label-map path (16-bit ones through float copies).
template <typename T>
constexpr bool kFloatOrHalf = std::is_same<T, float>::value || std::is_same<T, c10::Half>::value ||
                              std::is_same<T, c10::BFloat16>::value;

#include "softmax_label_kernels.h"

// Whether the pixel loss is none or the plain cross-entropy (the only one
// that the softmax + label path computes; focal and BCE take the general path).
inline bool plain_cross_entropy_or_none(const DiceProblem& pr) {
  return pr.pixel_loss == PixelLoss::kNone || (pr.pixel_loss == PixelLoss::kCrossEntropy && pr.focal_gamma == 0.0);
}

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kPixel>
void forward_impl(const at::Tensor& input, const DiceProblem& pr, at::Tensor& stats) {
  const int64_t C = pr.classes;
  const int64_t per_sample = chunks_per_sample(pr.spatial);
  const int64_t items = pr.batch * per_sample;
  // partials[item][c][k], reduced below in a fixed order.
  std::vector<double> partials(static_cast<size_t>(items * C * kNumStats), 0.0);
  const scalar_t* x = input.data_ptr<scalar_t>();
  const bool is_label = pr.target.is_label;
  std::vector<uint8_t> target_outside(is_label ? 0 : items, 0);

  const bool want_shift = kPixel && pr.pixel_loss == PixelLoss::kCrossEntropy;
  constexpr bool kSoftmaxLabelCase = kFloatOrHalf<scalar_t> && kAct == Activation::kSoftmax && !kFull;
  constexpr bool kHalfInput = !std::is_same<scalar_t, float>::value;
  const bool softmax_label_path = kSoftmaxLabelCase && is_label && pr.in_stride_s == 1 && plain_cross_entropy_or_none(pr);
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    // The softmax + label path uses only the tile's labels.
    Tile<acc_t> tile(softmax_label_path ? 0 : C, is_label, kPixel && !softmax_label_path);
    SoftmaxLabelScratch scratch(softmax_label_path ? C : 0, softmax_label_path, kHalfInput);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / per_sample;
      const int64_t s_begin = (item % per_sample) * kChunk;
      const int64_t s_end = std::min(s_begin + kChunk, pr.spatial);
      double* acc = partials.data() + item * C * kNumStats;
      int64_t valid_count = 0;
      for (int64_t s0 = s_begin; s0 < s_end; s0 += kTile) {
        const int64_t n = std::min(kTile, s_end - s0);
        if constexpr (kSoftmaxLabelCase) {
          if (softmax_label_path) {
            valid_count += load_labels(pr, b, s0, n, tile);
            const float* xf;
            int64_t sc = pr.in_stride_c;
            if constexpr (kHalfInput) {
              tile_to_float(x + pr.input_offset(b, 0, s0), sc, C, n, scratch.tile_logits.data());
              xf = scratch.tile_logits.data();
              sc = kTile;
            } else {
              xf = x + pr.input_offset(b, 0, s0);
            }
            softmax_label_tile_stats<kPixel>(xf, sc, C, n, tile.labels.data(), scratch, acc);
            continue;
          }
        }
        if (is_label) {
          valid_count += load_labels(pr, b, s0, n, tile);
        } else {
          valid_count += n;
          if (load_dense(pr, b, s0, n, tile)) target_outside[item] = 1;
        }
        load_activated<kAct>(x, pr, b, s0, n, tile, want_shift);
        for (int64_t c = 0; c < C; ++c) accumulate_class<kAct, kFull>(tile, c, is_label, acc + c * kNumStats);
        if constexpr (kPixel) {
          for (int64_t c = 0; c < C; ++c) {
            pixel_terms_class<false, kAct>(x, pr, b, s0, n, tile, c, static_cast<const acc_t*>(nullptr));
            acc[c * kNumStats + kPixelLoss] += sum_tile_row(tile.pixel.data());
            acc[c * kNumStats + kPixelLossTarget] += sum_tile_row(tile.pixel.data() + kTile);
          }
        }
      }
      if (kFull) {
        for (int64_t c = 0; c < C; ++c) acc[c * kNumStats + kValidCount] = static_cast<double>(valid_count);
      }
    }
  });

  for (int64_t item = 0; item < static_cast<int64_t>(target_outside.size()); ++item) {
    if (target_outside[item]) {
      const int64_t s_begin = (item % per_sample) * kChunk;
      throw_target_outside_unit_interval(pr, item / per_sample, s_begin, std::min(s_begin + kChunk, pr.spatial));
    }
  }

  reduce_chunk_partials(partials, pr.batch, per_sample, C * kNumStats, stats.data_ptr<acc_t>());
}

// The TargetDtype tag of a dense target stored in scalar_t.
template <typename scalar_t>
constexpr TargetDtype target_dtype_of() {
  if constexpr (std::is_same<scalar_t, double>::value) return TargetDtype::kFloat64;
  if constexpr (std::is_same<scalar_t, c10::Half>::value) return TargetDtype::kFloat16;
  if constexpr (std::is_same<scalar_t, c10::BFloat16>::value) return TargetDtype::kBFloat16;
  return TargetDtype::kFloat32;
}

// The backward of an elementwise activation (none / sigmoid) against a dense
// target of the input's dtype, both with unit spatial stride: no coupling
// between classes, so each row is one branch-free pass that reads input and
// target and writes the gradient, without staging them in a tile.
template <typename scalar_t, typename acc_t, Activation kAct, bool kFull>
void backward_row_elementwise(const scalar_t* __restrict x, const scalar_t* __restrict t, scalar_t* __restrict g,
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
  return pr.activation != Activation::kSoftmax && pr.pixel_loss == PixelLoss::kNone && !pr.target.is_label &&
         pr.target.dtype == target_dtype_of<scalar_t>() && pr.in_stride_s == 1 && pr.target.stride_s == 1 &&
         grad_stride_s == 1;
}

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull, bool kPixel>
void backward_impl(const at::Tensor& grad_stats, const at::Tensor& input, const DiceProblem& pr, at::Tensor& grad3) {
  const int64_t C = pr.classes;
  // coefs[(b * C + c) * kNumGradCoefs + j] = grad_stats[b, c, grad_coef_source(j)].
  std::vector<acc_t> coefs(pr.batch * C * kNumGradCoefs);
  const acc_t* gs = grad_stats.data_ptr<acc_t>();
  for (int64_t r = 0; r < pr.batch * C; ++r) {
    for (int j = 0; j < kNumGradCoefs; ++j) coefs[r * kNumGradCoefs + j] = gs[r * kNumStats + grad_coef_source(j)];
  }
  const scalar_t* x = input.data_ptr<scalar_t>();
  scalar_t* g = grad3.data_ptr<scalar_t>();
  const int64_t gsb = grad3.stride(0), gsc = grad3.stride(1), gss = grad3.stride(2);
  const bool is_label = pr.target.is_label;
  const int64_t per_sample = chunks_per_sample(pr.spatial);

  if constexpr (kAct != Activation::kSoftmax && !kPixel) {
    if (elementwise_backward_applies<scalar_t>(pr, gss)) {
      const scalar_t* t = static_cast<const scalar_t*>(pr.target.data);
      at::parallel_for(0, pr.batch * per_sample, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t b = item / per_sample;
          const int64_t s_begin = (item % per_sample) * kChunk;
          const int64_t n = std::min(s_begin + kChunk, pr.spatial) - s_begin;
          for (int64_t c = 0; c < C; ++c) {
            backward_row_elementwise<scalar_t, acc_t, kAct, kFull>(
                x + pr.input_offset(b, c, s_begin), t + pr.dense_target_offset(b, c, s_begin),
                g + b * gsb + c * gsc + s_begin, n, coefs.data() + (b * C + c) * kNumGradCoefs);
          }
        }
      });
      return;
    }
  }

  const bool want_shift = kPixel && pr.pixel_loss == PixelLoss::kCrossEntropy;
  // The cross-entropy's gradient couples the classes through the softmax
  // (it joins `dot`); the binary cross-entropy's is per element.
  const bool coupled = want_shift;
  constexpr bool kSoftmaxLabelCase = kFloatOrHalf<scalar_t> && kAct == Activation::kSoftmax && !kFull;
  constexpr bool kHalfInput = !std::is_same<scalar_t, float>::value;
  const bool softmax_label_path =
      kSoftmaxLabelCase && is_label && pr.in_stride_s == 1 && gss == 1 && plain_cross_entropy_or_none(pr);
  at::parallel_for(0, pr.batch * per_sample, 1, [&](int64_t begin, int64_t end) {
    Tile<acc_t> tile(softmax_label_path ? 0 : C, is_label, kPixel && !softmax_label_path);
    SoftmaxLabelScratch scratch(softmax_label_path ? C : 0, softmax_label_path, kHalfInput);
    acc_t dot[kTile];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / per_sample;
      const int64_t s_begin = (item % per_sample) * kChunk;
      const int64_t s_end = std::min(s_begin + kChunk, pr.spatial);
      const acc_t* sample_coefs = coefs.data() + b * C * kNumGradCoefs;
      for (int64_t s0 = s_begin; s0 < s_end; s0 += kTile) {
        const int64_t n = std::min(kTile, s_end - s0);
        if constexpr (kSoftmaxLabelCase) {
          if (softmax_label_path) {
            load_labels(pr, b, s0, n, tile);
            if constexpr (kHalfInput) {
              tile_to_float(x + pr.input_offset(b, 0, s0), pr.in_stride_c, C, n, scratch.tile_logits.data());
              softmax_label_tile_backward<kPixel>(scratch.tile_logits.data(), kTile, C, n, tile.labels.data(),
                                                  sample_coefs, scratch.tile_grad.data(), kTile, scratch);
              tile_from_float(scratch.tile_grad.data(), C, n, g + b * gsb + s0, gsc);
            } else {
              softmax_label_tile_backward<kPixel>(x + pr.input_offset(b, 0, s0), pr.in_stride_c, C, n,
                                                  tile.labels.data(), sample_coefs, g + b * gsb + s0, gsc, scratch);
            }
            continue;
          }
        }
        if (is_label) {
          load_labels(pr, b, s0, n, tile);
        } else {
          load_dense(pr, b, s0, n, tile);
        }
        load_activated<kAct>(x, pr, b, s0, n, tile, want_shift);
        const acc_t* inv = tile.inv.data();
        const int32_t* labels = tile.labels.data();
        if constexpr (kPixel) {
          for (int64_t c = 0; c < C; ++c) {
            pixel_terms_class<true, kAct>(x, pr, b, s0, n, tile, c, sample_coefs + c * kNumGradCoefs + kCoefPixelLoss);
          }
        }
        // d(loss)/dp of class c at position i (cheap: recomputed, not stored).
        auto grad_p = [&](int64_t c, const acc_t* xr, int64_t i, acc_t p) {
          const acc_t* coef = sample_coefs + c * kNumGradCoefs;
          const acc_t t = is_label ? (labels[i] == static_cast<int32_t>(c) ? acc_t(1) : acc_t(0))
                                   : tile.target_row(c)[i];
          return grad_wrt_prob<kFull>(coef, p, t);
        };
        if (kAct == Activation::kSoftmax) {  // dot = sum_k p_k * d(loss)/dp_k
          for (int64_t i = 0; i < kTile; ++i) dot[i] = acc_t(0);
          for (int64_t c = 0; c < C; ++c) {
            const acc_t* xr = tile.row(c);
            for (int64_t i = 0; i < kTile; ++i) {
              const acc_t p = prob<kAct>(xr, inv, i);
              dot[i] += p * grad_p(c, xr, i, p);
            }
            if (kPixel && coupled) {
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
            acc_t gx = grad_p(c, xr, i, p);
            if (kAct == Activation::kSigmoid) gx = sigmoid_backward(gx, p);
            if (kAct == Activation::kSoftmax) gx = softmax_backward(gx, p, dot[i]);
            if (kPixel) gx += direct[i];
            // Ignored positions get exactly zero gradient, whatever their logits.
            if (is_label) gx = labels[i] >= 0 ? gx : acc_t(0);
            return static_cast<scalar_t>(gx);
          };
          scalar_t* dst = g + b * gsb + c * gsc + s0 * gss;
          if (gss == 1) {
            for (int64_t i = 0; i < n; ++i) dst[i] = grad_x(i);
          } else {
            for (int64_t i = 0; i < n; ++i) dst[i * gss] = grad_x(i);
          }
        }
      }
    }
  });
}

// Entry points of this instruction set (declared in dice_cpu_isa.h).
void dice_stats_forward(const at::Tensor& input, const DiceProblem& pr, at::Tensor& stats) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    FD_ACTIVATION_SWITCH(pr.activation, kAct, [&] {
      FD_BOOL_SWITCH(pr.full_stats, kFull, [&] {
        FD_PIXEL_SWITCH(kAct, pr.pixel_loss, kPixel,
                        [&] { forward_impl<scalar_t, acc_t, kAct, kFull, kPixel>(input, pr, stats); });
      });
    });
  });
}

void dice_stats_backward(const at::Tensor& grad_stats, const at::Tensor& input, const DiceProblem& pr,
                         at::Tensor& grad3) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    FD_ACTIVATION_SWITCH(pr.activation, kAct, [&] {
      FD_BOOL_SWITCH(pr.full_stats, kFull, [&] {
        FD_PIXEL_SWITCH(kAct, pr.pixel_loss, kPixel,
                        [&] { backward_impl<scalar_t, acc_t, kAct, kFull, kPixel>(grad_stats, input, pr, grad3); });
      });
    });
  });
}

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
