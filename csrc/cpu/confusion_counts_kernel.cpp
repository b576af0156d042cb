// CPU kernel of fastdice::confusion_counts and its registration: per (sample,
// class) TP, FP, FN of hard predictions (argmax or threshold) in one pass over
// input and target.
//
// Same structure as the Dice-statistics kernels: each sample is walked in
// fixed chunks of positions (one at::parallel_for work item each), a chunk in
// tiles that stay in L1. Per tile: the labels are classified once (valid
// class / no class / ignored), for multiclass the argmax over the classes is
// taken row by row into an int32 buffer, then for each class a branch-free,
// vectorizable loop counts TP, FP and FN. Integer counts make the result exact
// whatever the summation order; chunk partials are still reduced in a fixed
// order.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <string>

// The tile loaders shared with the Dice kernels (tile_loading.h), compiled
// here for the baseline in a namespace of this file's own.
#include "isa_prologue.h"
#define FD_CPU_ISA_NS counts
#include "tile_loading.h"

namespace fastdice {
namespace cpu {
namespace {

using namespace counts;

// Label codes in the tile: a class index >= 0, or one of these.
constexpr int32_t kNoClass = -1;  // a valid position whose target is no class (binary 0)
constexpr int32_t kSkip = -2;     // ignored (ignore_index) or padding

// codes[0..n) from target[b, s0 : s0 + n]; throws on a label that is neither
// valid nor ignore_index.
void load_labels(const CountsProblem& cp, int64_t b, int64_t s0, int64_t n, int32_t* codes) {
  const DiceProblem& pr = cp.base;
  const TargetView& tv = pr.target;
  const int64_t limit = pr.classes + cp.label_shift;
  visit_label_dtype(tv, [&](const auto* data) {
    const auto* src = data + pr.label_offset(b, s0);
    bool out_of_range;
    classify_labels(src, tv.stride_s, n, limit, cp.label_shift, pr.has_ignore, pr.ignore_index, kSkip, codes,
                    out_of_range);
    if (!out_of_range) return;
    int64_t v = 0;
    const int64_t i = first_label_out_of_range(src, tv.stride_s, n, limit, pr.has_ignore, pr.ignore_index, v);
    throw BadValue(cp.mode == CountsMode::kBinary ? BadValueKind::kBinaryLabel : BadValueKind::kLabel,
                   static_cast<double>(v), b, -1, s0 + i, pr.classes, pr.has_ignore);
  });
}

// dst[0..n) = target[b, c, s0 : s0 + n] as 0/1; returns true when a value is
// neither 0 nor 1 (the caller raises after the parallel section).
template <typename target_t>
bool load_dense_row_typed(const target_t* src, int64_t stride, int64_t n, int32_t* dst) {
  int32_t bad = 0;
  auto put = [&](int64_t i, target_t v) {
    const bool one = v == target_t(1);
    const bool zero = v == target_t(0);
    dst[i] = one;
    bad |= !(one || zero);
  };
  if (stride == 1) {
    for (int64_t i = 0; i < n; ++i) put(i, src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) put(i, src[i * stride]);
  }
  return bad != 0;
}

// Half and BFloat16 compare through float (exact).
template <typename half_t>
bool load_dense_row_via_float(const half_t* src, int64_t stride, int64_t n, int32_t* dst) {
  int32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(src[i * stride]);
    dst[i] = v == 1.f;
    bad |= !(v == 1.f || v == 0.f);
  }
  return bad != 0;
}

template <>
bool load_dense_row_typed<c10::Half>(const c10::Half* src, int64_t stride, int64_t n, int32_t* dst) {
  return load_dense_row_via_float(src, stride, n, dst);
}

template <>
bool load_dense_row_typed<c10::BFloat16>(const c10::BFloat16* src, int64_t stride, int64_t n, int32_t* dst) {
  return load_dense_row_via_float(src, stride, n, dst);
}

template <>
bool load_dense_row_typed<bool>(const bool* src, int64_t stride, int64_t n, int32_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i * stride] ? 1 : 0;
  return false;
}

bool load_dense_row(const CountsProblem& cp, int64_t b, int64_t c, int64_t s0, int64_t n, int32_t* dst) {
  const TargetView& tv = cp.base.target;
  const int64_t off = cp.base.dense_target_offset(b, c, s0);
  return visit_dense_dtype(tv, [&](const auto* data) { return load_dense_row_typed(data + off, tv.stride_s, n, dst); });
}

// After a chunk reported a dense target value other than 0 or 1: finds the
// first one and raises.
[[noreturn]] void throw_target_not_binary(const CountsProblem& cp, int64_t b, int64_t s_begin, int64_t s_end) {
  const DiceProblem& pr = cp.base;
  for (int64_t c = 0; c < pr.classes; ++c) {
    for (int64_t s = s_begin; s < s_end; ++s) {
      const double v = load_target_value<double>(pr.target.data, pr.target.dtype, pr.dense_target_offset(b, c, s));
      if (!is_binary_value(v)) throw BadValue(BadValueKind::kBinaryDenseTarget, v, b, c, s);
    }
  }
  TORCH_CHECK(false, "fastdice: internal error locating a target value other than 0 or 1");
}

template <typename scalar_t, typename acc_t, bool kMulticlass>
void counts_impl(const at::Tensor& input, const CountsProblem& cp, at::Tensor& counts) {
  const DiceProblem& pr = cp.base;
  const int64_t C = pr.classes;
  const int64_t per_sample = chunks_per_sample(pr.spatial);
  const int64_t items = pr.batch * per_sample;
  std::vector<int64_t> partials(static_cast<size_t>(items * C * kNumCounts), 0);
  const scalar_t* x = input.data_ptr<scalar_t>();
  const bool is_label = pr.target.is_label;
  std::vector<uint8_t> target_bad(is_label ? 0 : items, 0);
  // x > threshold, decided exactly in acc_t (see float_threshold_below).
  const acc_t threshold = std::is_same<acc_t, double>::value ? static_cast<acc_t>(cp.threshold)
                                                             : static_cast<acc_t>(cp.threshold_float);

  struct Rows {
    std::vector<int32_t> codes, pred, trow;
    std::vector<acc_t> best, row;
  };
  auto make_rows = [] { return Rows{std::vector<int32_t>(kTile), std::vector<int32_t>(kTile),
                                    std::vector<int32_t>(kTile), std::vector<acc_t>(kTile), std::vector<acc_t>(kTile)}; };
  parallel_chunks(pr, make_rows, [&](Rows& rows, int64_t item, int64_t b, int64_t s_begin, int64_t s_end) {
    auto& [codes, pred, trow, best, row] = rows;
    int64_t* acc = partials.data() + item * C * kNumCounts;
    for (int64_t s0 = s_begin; s0 < s_end; s0 += kTile) {
      const int64_t n = std::min(kTile, s_end - s0);
      if (is_label) load_labels(cp, b, s0, n, codes.data());
      if (kMulticlass) {
        // argmax over the classes, row by row (torch.argmax's rule, argmax_takes).
        load_input_row(x, pr, b, 0, s0, n, best.data());
        for (int64_t i = 0; i < n; ++i) pred[i] = 0;
        for (int64_t c = 1; c < C; ++c) {
          load_input_row(x, pr, b, c, s0, n, row.data());
          const int32_t ci = static_cast<int32_t>(c);
          for (int64_t i = 0; i < n; ++i) {
            const acc_t v = row[i];
            const bool take = argmax_takes(best[i], v);
            best[i] = take ? v : best[i];
            pred[i] = take ? ci : pred[i];
          }
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        const int32_t ci = static_cast<int32_t>(c);
        if (!kMulticlass) load_input_row(x, pr, b, c, s0, n, row.data());
        if (!is_label && load_dense_row(cp, b, c, s0, n, trow.data())) target_bad[item] = 1;
        int32_t tp = 0, fp = 0, fn = 0;
        for (int64_t i = 0; i < n; ++i) {
          const int32_t p = kMulticlass ? (pred[i] == ci) : (row[i] > threshold);
          const int32_t t = is_label ? (codes[i] == ci) : trow[i];
          const int32_t v = is_label ? (codes[i] != kSkip) : 1;
          tp += p & t & v;
          fp += p & (t ^ 1) & v;
          fn += (p ^ 1) & t & v;
        }
        acc[c * kNumCounts + kCountTruePositive] += tp;
        acc[c * kNumCounts + kCountFalsePositive] += fp;
        acc[c * kNumCounts + kCountFalseNegative] += fn;
      }
    }
  });

  for (int64_t item = 0; item < static_cast<int64_t>(target_bad.size()); ++item) {
    if (target_bad[item]) {
      const int64_t s_begin = (item % per_sample) * kChunk;
      throw_target_not_binary(cp, item / per_sample, s_begin, std::min(s_begin + kChunk, pr.spatial));
    }
  }

  reduce_chunk_partials(partials, pr.batch, per_sample, C * kNumCounts, counts.data_ptr<int64_t>());
}

at::Tensor confusion_counts_cpu(const at::Tensor& input, const at::Tensor& target, c10::string_view mode,
                                double threshold, c10::optional<int64_t> ignore_index) {
  TORCH_CHECK_VALUE(input.device().is_cpu(), "fastdice: expected a CPU input, got ", input.device());
  const PreparedCounts prepared = prepare_counts_problem(input, target, std::string(mode), threshold, ignore_index);
  const CountsProblem& cp = prepared.problem;
  const DiceProblem& pr = cp.base;
  at::Tensor counts = at::zeros({pr.batch, pr.classes, kNumCounts}, input.options().dtype(at::kLong));
  if (pr.batch == 0 || pr.classes == 0 || pr.spatial == 0) return counts;
  with_complete_errors(input, target, [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "confusion_counts_cpu", [&] {
      using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
      if (cp.mode == CountsMode::kMulticlass) {
        counts_impl<scalar_t, acc_t, true>(prepared.prepared.input, cp, counts);
      } else {
        counts_impl<scalar_t, acc_t, false>(prepared.prepared.input, cp, counts);
      }
    });
  });
  return counts;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(fastdice, CPU, m) { m.impl("confusion_counts", &cpu::confusion_counts_cpu); }

}  // namespace fastdice
