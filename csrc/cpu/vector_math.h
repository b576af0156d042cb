// Vector math of the CPU kernels: the explicit SIMD types (GCC vector
// extensions), branch-free exp / log polynomials that vectorize, and the
// transcendental policy CpuMath of dice_math.h's pixel losses.
// Compiled once per instruction set: see isa_prologue.h.
#pragma once

#include "isa_prologue.h"

#ifndef FD_CPU_ISA_NS
#error "define FD_CPU_ISA_NS before including vector_math.h"
#endif

namespace fastdice {
namespace cpu {
namespace FD_CPU_ISA_NS {

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
  const V shifted = x * 1.44269504088896341f + round_magic;
  const V nf = shifted - round_magic;  // n = round(x / ln 2), exactly, as a float
  U shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof(shifted_bits));
  V r = x - nf * 0.693359375f;  // ln 2 split in two for an exact reduction
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

}  // namespace FD_CPU_ISA_NS
}  // namespace cpu
}  // namespace fastdice
