// Host side of the loss-from-statistics op: the options as the schema passes
// them, their validation, and the tensors and parameters the kernels get.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <vector>

#include "dice_epilogue.h"

// The options of fastdice::dice_loss_from_stats(_backward), in schema order.
// One list for the five functions that take them (CPU and CUDA, forward and
// backward, autograd), so their signatures cannot drift apart.
#define FD_EPILOGUE_OPTION_PARAMS                                                                               \
  c10::string_view pooling, bool include_background, c10::string_view form, bool jaccard, double smooth_nr,      \
      double smooth_dr, bool log_loss, double log_eps, c10::string_view reduction, double lambda_dice,          \
      double lambda_ce, c10::string_view ce_family, bool ce_label_map, int64_t ce_positions, double label_smoothing
#define FD_EPILOGUE_OPTION_ARGS                                                                                  \
  pooling, include_background, form, jaccard, smooth_nr, smooth_dr, log_loss, log_eps, reduction, lambda_dice, \
      lambda_ce, ce_family, ce_label_map, ce_positions, label_smoothing

namespace fastdice {

struct PreparedEpilogue {
  at::Tensor stats;      // [B, C, kNumStats], contiguous, float32 or float64
  at::Tensor weight;     // [C] in stats' dtype, or undefined
  at::Tensor ce_weight;  // [C] in stats' dtype, or undefined
  EpilogueParams params;
  std::vector<int64_t> out_shape;  // [] or, for reduction 'none', [B, C'] / [C'] / []
};

PreparedEpilogue prepare_epilogue(const at::Tensor& stats, const c10::optional<at::Tensor>& weight,
                                  const c10::optional<at::Tensor>& ce_weight, FD_EPILOGUE_OPTION_PARAMS);

// A weight's data, or nullptr for none (the kernels' "no weight").
template <typename S>
const S* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<S>() : nullptr;
}

// grad of the loss, checked against the forward output's shape, contiguous.
at::Tensor check_epilogue_grad(const at::Tensor& grad, const PreparedEpilogue& prepared);

}  // namespace fastdice
