// The description of one Dice-statistics problem that the host wrappers hand
// to a kernel: plain data only (pointers, sizes, strides), so that the same
// struct is passed by value to a CUDA kernel and to the CPU loops.
#pragma once

#include <cstdint>

#include "dice_math.h"

namespace fastdice {

struct TargetView {
  const void* data;
  TargetDtype dtype;
  bool is_label;  // label map [B, S] (else dense [B, C, S])
  int64_t stride_b;
  int64_t stride_c;  // dense targets only
  int64_t stride_s;
};

// An optional per-position loss mask [B, S] (bool, uint8 or floating 0 / 1):
// where it is 0 the position leaves every statistic and gets zero gradient,
// as an ignored label does.
struct MaskView {
  const void* data;  // nullptr: no mask
  TargetDtype dtype;
  int64_t stride_b;
  int64_t stride_s;
};

// Region targets built from a label map (nnU-Net's region-based training):
// target channel c is 1 where the position's label belongs to region c. The
// regions travel by value as bit sets, so no region tensor is ever written
// or copied to the device.
constexpr int kMaxRegions = 32;
constexpr int64_t kRegionLabels = 64;  // labels of a region target lie in [0, 64)

struct RegionTable {
  int32_t count;  // 0: the label map is a one-hot class target
  uint64_t bits[kMaxRegions];  // bit l of bits[c]: label l belongs to region c
};

struct DiceProblem {
  int64_t batch;
  int64_t classes;
  int64_t spatial;
  int64_t in_stride_b;
  int64_t in_stride_c;
  int64_t in_stride_s;
  TargetView target;
  Activation activation;
  bool full_stats;
  PixelLoss pixel_loss;
  double focal_gamma;  // 0: plain (binary) cross-entropy
  bool has_ignore;
  int64_t ignore_index;
  // activation 'none' (probabilities): values outside [0, 1] at the positions
  // the statistics use are an error (CPU) or poison the sample (CUDA).
  // 'identity' reads the input as it is (the compat layers: MONAI, smp and
  // nnU-Net take any values without an activation).
  bool check_probabilities;
  MaskView mask;
  RegionTable regions;

  FD_HOST_DEVICE int64_t input_offset(int64_t b, int64_t c, int64_t s) const {
    return b * in_stride_b + c * in_stride_c + s * in_stride_s;
  }
  FD_HOST_DEVICE int64_t dense_target_offset(int64_t b, int64_t c, int64_t s) const {
    return b * target.stride_b + c * target.stride_c + s * target.stride_s;
  }
  FD_HOST_DEVICE int64_t label_offset(int64_t b, int64_t s) const {
    return b * target.stride_b + s * target.stride_s;
  }
  FD_HOST_DEVICE bool has_mask() const { return mask.data != nullptr; }
  FD_HOST_DEVICE bool has_regions() const { return regions.count > 0; }
  // A label map read as one class index per position (not regions).
  FD_HOST_DEVICE bool one_hot_labels() const { return target.is_label && !has_regions(); }
  // Valid labels are [0, label_limit()): the classes, or any label a region may name.
  FD_HOST_DEVICE int64_t label_limit() const { return has_regions() ? kRegionLabels : classes; }
  // The target of class c for a label (0 for a label outside the regions' range).
  template <typename T>
  FD_HOST_DEVICE T label_target(int64_t label, int64_t c) const {
    if (has_regions()) {
      return label >= 0 && label < kRegionLabels ? static_cast<T>((regions.bits[c] >> label) & 1u) : T(0);
    }
    return label == c ? T(1) : T(0);
  }
  // The mask's value at (b, s) (1 without a mask).
  FD_HOST_DEVICE float mask_value(int64_t b, int64_t s) const {
    return has_mask() ? load_target_value<float>(mask.data, mask.dtype, b * mask.stride_b + s * mask.stride_s) : 1.f;
  }
};

// A confusion-counts problem (fastdice::confusion_counts): the [B, C, S]
// views of a Dice problem plus how a position is predicted positive.
struct CountsProblem {
  DiceProblem base;  // views, sizes, ignore_index (activation and full_stats unused)
  CountsMode mode;
  // Label maps: label l marks class l - label_shift positive (binary: 1 marks
  // the one class, 0 none); valid labels are [0, classes + label_shift).
  int64_t label_shift;
  double threshold;        // multilabel / binary: positive where input > threshold
  float threshold_float;   // the same decision for float16 / bfloat16 / float32 input
};

}  // namespace fastdice

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <c10/util/OptionalArrayRef.h>
#include <string>

namespace fastdice {

// Tensors viewed as [B, C, S] (input, dense target) or [B, S] (label target);
// views keep the caller's strides, so contiguous and channels_last inputs
// need no copy. The views must outlive any use of the problem's pointers.
struct PreparedProblem {
  at::Tensor input;
  at::Tensor target;
  at::Tensor mask;  // [B, S] view, undefined without a mask
  DiceProblem problem;
};

Activation parse_activation(const std::string& name);

// Validates the op's arguments (shapes, dtypes, devices, pixel-loss options)
// and describes them.
PreparedProblem prepare_problem(const at::Tensor& input, const at::Tensor& target,
                                const std::string& activation, bool full_stats,
                                c10::optional<int64_t> ignore_index, const std::string& pixel_loss = "none",
                                double focal_gamma = 0.0, const c10::optional<at::Tensor>& mask = c10::nullopt,
                                c10::OptionalArrayRef<int64_t> regions = c10::nullopt);

// dtype of the statistics: float64 for float64 input, float32 otherwise.
at::ScalarType stats_dtype_for(at::ScalarType input_dtype);

// Whether dims 2.. of t can be viewed as one dim without a copy.
bool spatial_dims_collapsible(const at::Tensor& t);

// An uninitialized tensor shaped like input (keeping channels_last and other
// dense layouts) whose dims from 2 on collapse into one without a copy.
at::Tensor allocate_grad_input(const at::Tensor& input);

// The gradient with respect to a dense floating-point target, as a
// contiguous tensor of the target's shape in the statistics' dtype (the
// kernels accumulate it there); checks that the target can have one.
at::Tensor allocate_grad_target(const PreparedProblem& prepared, const at::Tensor& target);

// grad_target from allocate_grad_target in the target's own dtype.
at::Tensor grad_target_in_target_dtype(const at::Tensor& grad_target, const at::Tensor& target);

// What dice_stats_backward returns as grad_target when none was asked for.
at::Tensor no_grad_target(const at::Tensor& input);

// [B, C, S] view of a tensor shaped like the input (grad_input, grad_target).
at::Tensor view_bcs(const at::Tensor& t);

// The views of a confusion-counts problem; the views must outlive its pointers.
struct PreparedCounts {
  PreparedProblem prepared;
  CountsProblem problem;
};

CountsMode parse_counts_mode(const std::string& name);

// Validates the arguments of fastdice::confusion_counts and describes them:
// prepare_problem's rules, except that in binary mode (and in multilabel mode
// with one channel, which is binary) an integer target is a 0/1 label map,
// (B, *spatial) or (B, 1, *spatial), so that ignore_index applies to it.
PreparedCounts prepare_counts_problem(const at::Tensor& input, const at::Tensor& target, const std::string& mode,
                                      double threshold, c10::optional<int64_t> ignore_index);

// The largest float f with f <= t: for any float x, x > t exactly when x > f.
float float_threshold_below(double t);

// Validates grad_stats against the problem (shape [B, C, kNumStats], dtype, device).
at::Tensor check_grad_stats(const at::Tensor& grad_stats, const PreparedProblem& prepared);

}  // namespace fastdice
