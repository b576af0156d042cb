// Host-side argument validation of fastdice::dice_stats(_backward) and
// fastdice::confusion_counts: the [B, C, S] views of input and target and the
// DiceProblem / CountsProblem the CPU and CUDA kernels run on.
#include "dice_problem.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

#include "parse_choice.h"

namespace fastdice {

Activation parse_activation(const std::string& name) {
  return parse_choice<Activation>(name, "activation",
                                  {{"none", Activation::kNone},
                                   {"identity", Activation::kNone},
                                   {"sigmoid", Activation::kSigmoid},
                                   {"softmax", Activation::kSoftmax}});
}

at::ScalarType stats_dtype_for(at::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

namespace {

TargetDtype target_dtype_tag(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return TargetDtype::kFloat16;
    case at::kBFloat16:
      return TargetDtype::kBFloat16;
    case at::kFloat:
      return TargetDtype::kFloat32;
    case at::kDouble:
      return TargetDtype::kFloat64;
    case at::kBool:
      return TargetDtype::kBool;
    case at::kByte:
      return TargetDtype::kUInt8;
    case at::kChar:
      return TargetDtype::kInt8;
    case at::kShort:
      return TargetDtype::kInt16;
    case at::kInt:
      return TargetDtype::kInt32;
    case at::kLong:
      return TargetDtype::kInt64;
    default:
      TORCH_CHECK_TYPE(false, "fastdice: target dtype must be floating, bool or integer, got ", t);
  }
}

bool is_label_dtype(at::ScalarType t) {
  return t == at::kByte || t == at::kChar || t == at::kShort || t == at::kInt || t == at::kLong;
}

// Collapses all dims from `start` on into one; a view when the strides allow it.
at::Tensor collapse_from(const at::Tensor& t, int64_t start) {
  if (t.dim() == start) return t.unsqueeze(-1);
  return t.flatten(start);
}

}  // namespace

PixelLoss parse_pixel_loss(const std::string& name, Activation activation, double focal_gamma) {
  const PixelLoss loss = parse_choice<PixelLoss>(name, "pixel_loss",
                                                 {{"none", PixelLoss::kNone},
                                                  {"cross_entropy", PixelLoss::kCrossEntropy},
                                                  {"binary_cross_entropy", PixelLoss::kBinaryCrossEntropy}});
  // The cross-entropy shares the kernel's softmax; both need logits.
  TORCH_CHECK_VALUE(loss != PixelLoss::kCrossEntropy || activation == Activation::kSoftmax,
                    "fastdice: pixel_loss='cross_entropy' needs activation='softmax'");
  TORCH_CHECK_VALUE(loss != PixelLoss::kBinaryCrossEntropy || activation != Activation::kNone,
                    "fastdice: pixel_loss='binary_cross_entropy' needs activation='sigmoid' or 'softmax' "
                    "(the input must be logits)");
  TORCH_CHECK_VALUE(std::isfinite(focal_gamma) && focal_gamma >= 0.0,
                    "fastdice: focal_gamma must be a finite number >= 0, got ", focal_gamma);
  return loss;
}

PreparedProblem prepare_problem(const at::Tensor& input, const at::Tensor& target,
                                const std::string& activation, bool full_stats,
                                c10::optional<int64_t> ignore_index, const std::string& pixel_loss,
                                double focal_gamma, const c10::optional<at::Tensor>& mask,
                                c10::OptionalArrayRef<int64_t> regions) {
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()) &&
                       (input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16 ||
                        input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble),
                   "fastdice: input must be float16, bfloat16, float32 or float64, got ",
                   input.scalar_type());
  TORCH_CHECK_VALUE(input.dim() >= 2, "fastdice: input must have shape (B, C, *spatial), got ",
                    input.sizes());
  TORCH_CHECK_VALUE(input.device() == target.device(), "fastdice: input is on ", input.device(),
                    " but target is on ", target.device());

  PreparedProblem out;
  out.input = collapse_from(input, 2);
  const int64_t batch = input.size(0);
  const int64_t classes = input.size(1);
  const int64_t spatial = out.input.size(2);
  const auto spatial_shape = input.sizes().slice(2);

  DiceProblem& pr = out.problem;
  pr.batch = batch;
  pr.classes = classes;
  pr.spatial = spatial;
  pr.in_stride_b = out.input.stride(0);
  pr.in_stride_c = out.input.stride(1);
  pr.in_stride_s = out.input.stride(2);
  pr.activation = parse_activation(activation);
  pr.check_probabilities = activation == "none";
  pr.full_stats = full_stats;
  pr.pixel_loss = parse_pixel_loss(pixel_loss, pr.activation, focal_gamma);
  pr.focal_gamma = focal_gamma;
  pr.has_ignore = ignore_index.has_value();
  pr.ignore_index = ignore_index.value_or(0);

  TargetView& tv = pr.target;
  tv.dtype = target_dtype_tag(target.scalar_type());
  const bool dense_shape = target.sizes() == input.sizes();
  // A label map is (B, *spatial) or (B, 1, *spatial). With C == 1 an integer
  // target of the input's shape is a binary mask, not a one-class label map.
  bool label_shape = target.dim() == input.dim() - 1 && target.size(0) == batch &&
                     target.sizes().slice(1) == spatial_shape;
  label_shape = label_shape || (target.dim() == input.dim() && target.size(0) == batch &&
                                target.size(1) == 1 && target.sizes().slice(2) == spatial_shape);
  tv.is_label = is_label_dtype(target.scalar_type()) && label_shape && !(classes == 1 && dense_shape);

  pr.regions.count = 0;
  for (int i = 0; i < kMaxRegions; ++i) pr.regions.bits[i] = 0;
  if (regions.has_value()) {
    // Each entry is the bit set of one region's labels (bit l: label l).
    const auto bits = *regions;
    TORCH_CHECK_VALUE(bits.size() >= 1 && bits.size() <= static_cast<size_t>(kMaxRegions),
                      "fastdice: regions must name between 1 and ", kMaxRegions, " regions, got ", bits.size());
    TORCH_CHECK_VALUE(static_cast<int64_t>(bits.size()) == classes, "fastdice: regions names ", bits.size(),
                      " regions but the input has ", classes, " channels (one per region)");
    TORCH_CHECK_VALUE(is_label_dtype(target.scalar_type()) && label_shape,
                      "fastdice: regions needs an integer label map of shape (B, *spatial) or (B, 1, *spatial); "
                      "got a target of shape ", target.sizes(), " and dtype ", target.scalar_type());
    pr.regions.count = static_cast<int32_t>(bits.size());
    for (size_t c = 0; c < bits.size(); ++c) pr.regions.bits[c] = static_cast<uint64_t>(bits[c]);
    tv.is_label = true;
  }

  if (tv.is_label) {
    out.target = target.dim() == input.dim() ? target.squeeze(1) : target;
    out.target = collapse_from(out.target, 1);
    tv.stride_b = out.target.stride(0);
    tv.stride_c = 0;
    tv.stride_s = out.target.stride(1);
  } else {
    TORCH_CHECK_VALUE(dense_shape, "fastdice: target must have the input's shape ", input.sizes(),
                      " (dense) or be an integer label map of shape (B, *spatial) or "
                      "(B, 1, *spatial); got shape ",
                      target.sizes(), " and dtype ", target.scalar_type());
    out.target = collapse_from(target, 2);
    tv.stride_b = out.target.stride(0);
    tv.stride_c = out.target.stride(1);
    tv.stride_s = out.target.stride(2);
    TORCH_CHECK_VALUE(!pr.has_ignore,
                      "fastdice: ignore_index needs an integer label-map target; got a dense target "
                      "of dtype ",
                      target.scalar_type());
  }
  tv.data = out.target.data_ptr();

  pr.mask = MaskView{nullptr, TargetDtype::kBool, 0, 0};
  if (mask.has_value() && mask->defined()) {
    const at::Tensor& m = *mask;
    const at::ScalarType md = m.scalar_type();
    TORCH_CHECK_TYPE(md == at::kBool || md == at::kByte || md == at::kHalf || md == at::kBFloat16 ||
                         md == at::kFloat || md == at::kDouble,
                     "fastdice: mask must be bool, uint8 or floating-point (float16, bfloat16, float32, float64) "
                     "holding 0 / 1, got ", md);
    TORCH_CHECK_VALUE(m.device() == input.device(), "fastdice: input is on ", input.device(), " but mask is on ",
                      m.device());
    const bool plain = m.dim() == input.dim() - 1 && m.size(0) == batch && m.sizes().slice(1) == spatial_shape;
    const bool channel = m.dim() == input.dim() && m.size(0) == batch && m.size(1) == 1 &&
                         m.sizes().slice(2) == spatial_shape;
    TORCH_CHECK_VALUE(plain || channel, "fastdice: mask must have shape (B, *spatial) or (B, 1, *spatial) = ",
                      "(", batch, ", 1, ", spatial_shape, "), got ", m.sizes());
    out.mask = collapse_from(channel ? m.squeeze(1) : m, 1);
    pr.mask = MaskView{out.mask.data_ptr(), target_dtype_tag(md), out.mask.stride(0), out.mask.stride(1)};
  }
  return out;
}

bool spatial_dims_collapsible(const at::Tensor& t) {
  int64_t expected = -1;  // the stride the next outer non-trivial dim must have
  for (int64_t d = t.dim() - 1; d >= 2; --d) {
    if (t.size(d) == 1) continue;
    if (expected != -1 && t.stride(d) != expected) return false;
    expected = t.stride(d) * t.size(d);
  }
  return true;
}

at::Tensor allocate_grad_input(const at::Tensor& input) {
  // Same rule as the fake kernel in fastdice/_ops.py, so that compiled graphs
  // see the strides the real kernel produces.
  at::Tensor grad = at::empty_like(input, at::MemoryFormat::Preserve);
  if (!spatial_dims_collapsible(grad)) grad = at::empty(input.sizes(), input.options());
  return grad;
}

at::Tensor allocate_grad_target(const PreparedProblem& prepared, const at::Tensor& target) {
  TORCH_CHECK_VALUE(!prepared.problem.target.is_label && at::isFloatingType(target.scalar_type()),
                    "fastdice: a gradient with respect to the target needs a dense floating-point target of the "
                    "input's shape; got a target of shape ",
                    target.sizes(), " and dtype ", target.scalar_type());
  return at::empty(target.sizes(), target.options().dtype(stats_dtype_for(prepared.input.scalar_type())));
}

at::Tensor grad_target_in_target_dtype(const at::Tensor& grad_target, const at::Tensor& target) {
  return grad_target.scalar_type() == target.scalar_type() ? grad_target : grad_target.to(target.scalar_type());
}

at::Tensor no_grad_target(const at::Tensor& input) { return at::empty({0}, input.options()); }

at::Tensor view_bcs(const at::Tensor& t) { return t.dim() == 2 ? t.unsqueeze(-1) : t.flatten(2); }

CountsMode parse_counts_mode(const std::string& name) {
  return parse_choice<CountsMode>(name, "mode",
                                  {{"multiclass", CountsMode::kMulticlass},
                                   {"multilabel", CountsMode::kMultilabel},
                                   {"binary", CountsMode::kBinary}});
}

float float_threshold_below(double t) {
  constexpr double kMax = std::numeric_limits<float>::max();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  if (t > kMax) return t == std::numeric_limits<double>::infinity() ? kInf : std::numeric_limits<float>::max();
  if (t < -kMax) return -kInf;  // every finite float and +inf exceed t
  float f = static_cast<float>(t);
  if (static_cast<double>(f) > t) f = std::nextafter(f, -kInf);
  return f;
}

PreparedCounts prepare_counts_problem(const at::Tensor& input, const at::Tensor& target, const std::string& mode,
                                      double threshold, c10::optional<int64_t> ignore_index) {
  CountsMode m = parse_counts_mode(mode);
  TORCH_CHECK_VALUE(!std::isnan(threshold), "fastdice: threshold must not be NaN");
  const bool one_channel = input.dim() >= 2 && input.size(1) == 1;
  if (m == CountsMode::kMultilabel && one_channel) m = CountsMode::kBinary;
  if (m == CountsMode::kBinary) {
    TORCH_CHECK_VALUE(one_channel, "fastdice: mode 'binary' needs input of shape (B, 1, *spatial), got ",
                      input.sizes());
  }
  at::Tensor t = target;
  if (m == CountsMode::kBinary && is_label_dtype(target.scalar_type()) && target.sizes() == input.sizes()) {
    t = target.squeeze(1);  // (B, 1, *spatial) 0/1 labels: a label map, not a dense mask
  }
  PreparedCounts out;
  out.prepared = prepare_problem(input, t, "identity", false, ignore_index);  // scores, not probabilities
  CountsProblem& cp = out.problem;
  cp.base = out.prepared.problem;
  cp.mode = m;
  cp.label_shift = m == CountsMode::kBinary ? 1 : 0;
  cp.threshold = threshold;
  cp.threshold_float = float_threshold_below(threshold);
  return out;
}

at::Tensor check_grad_stats(const at::Tensor& grad_stats, const PreparedProblem& prepared) {
  const DiceProblem& pr = prepared.problem;
  TORCH_CHECK_VALUE(grad_stats.dim() == 3 && grad_stats.size(0) == pr.batch &&
                        grad_stats.size(1) == pr.classes && grad_stats.size(2) == kNumStats,
                    "fastdice: grad_stats must have shape [", pr.batch, ", ", pr.classes, ", ",
                    int(kNumStats), "], got ", grad_stats.sizes());
  TORCH_CHECK_VALUE(grad_stats.device() == prepared.input.device(), "fastdice: grad_stats is on ",
                    grad_stats.device(), " but input is on ", prepared.input.device());
  return grad_stats.to(stats_dtype_for(prepared.input.scalar_type())).contiguous();
}

}  // namespace fastdice
