// Host side of the loss-from-statistics op: the options as the schema passes
// them, their validation, and the tensors and parameters the kernels get.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/string_view.h>

#include <string>
#include <vector>

#include "dice_epilogue.h"

// The options of fastdice::dice_loss_from_stats(_backward), declared once, in
// schema order: X(kind, name, default) with kind Str, Bool, Float or Int (the
// schema's str, bool, float, int) and the default as the schema writes it.
// Everything that lists them is generated from this list: the schema strings
// (FD_EPILOGUE_SCHEMA_ARGS), the C++ signatures of the kernels, the autograd
// and prepare_epilogue (FD_EPILOGUE_PARAMS), the calls between them
// (FD_EPILOGUE_ARGS), the typed dispatcher handles (FD_EPILOGUE_TYPES),
// autograd's saved_data (ops/dice_loss_from_stats.cpp) and the gradient count
// (kEpilogueOpInputs); Python reads names, order, types and defaults from the
// schema (fastdice._ops.EPILOGUE_OPTIONS). Adding an option: one line here and
// its use in prepare_epilogue.
#define FD_EPILOGUE_OPTIONS(X)        \
  X(Str, pooling, "\"global\"")       \
  X(Bool, include_background, "True") \
  X(Str, form, "\"plain\"")           \
  X(Bool, jaccard, "False")           \
  X(Float, smooth_nr, "1.0")          \
  X(Float, smooth_dr, "1.0")          \
  X(Bool, log_loss, "False")          \
  X(Float, log_eps, "1e-07")          \
  X(Str, reduction, "\"mean\"")       \
  X(Float, lambda_dice, "1.0")        \
  X(Float, lambda_ce, "0.0")          \
  X(Str, ce_family, "\"none\"")       \
  X(Bool, ce_label_map, "True")       \
  X(Int, ce_positions, "0")           \
  X(Float, label_smoothing, "0.0")

// Per kind: the C++ parameter type, the schema type, and how autograd's
// saved_data stores and reads it back.
#define FD_EPILOGUE_CPP_Str c10::string_view
#define FD_EPILOGUE_CPP_Bool bool
#define FD_EPILOGUE_CPP_Float double
#define FD_EPILOGUE_CPP_Int int64_t
#define FD_EPILOGUE_SCHEMA_Str "str"
#define FD_EPILOGUE_SCHEMA_Bool "bool"
#define FD_EPILOGUE_SCHEMA_Float "float"
#define FD_EPILOGUE_SCHEMA_Int "int"
#define FD_EPILOGUE_SAVE_Str(v) c10::IValue(std::string(v))
#define FD_EPILOGUE_SAVE_Bool(v) c10::IValue(v)
#define FD_EPILOGUE_SAVE_Float(v) c10::IValue(v)
#define FD_EPILOGUE_SAVE_Int(v) c10::IValue(v)
#define FD_EPILOGUE_LOAD_Str(iv) (iv).toStringRef()
#define FD_EPILOGUE_LOAD_Bool(iv) (iv).toBool()
#define FD_EPILOGUE_LOAD_Float(iv) (iv).toDouble()
#define FD_EPILOGUE_LOAD_Int(iv) (iv).toInt()

#define FD_EPILOGUE_PARAM_(kind, name, default_) , FD_EPILOGUE_CPP_##kind name
#define FD_EPILOGUE_ARG_(kind, name, default_) , name
#define FD_EPILOGUE_TYPE_(kind, name, default_) , FD_EPILOGUE_CPP_##kind
#define FD_EPILOGUE_SCHEMA_ARG_(kind, name, default_) ", " FD_EPILOGUE_SCHEMA_##kind " " #name "=" default_
#define FD_EPILOGUE_COUNT_(kind, name, default_) +1

// The op's arguments (three tensors, then the options) as parameters, as
// arguments of a call, as types, and as the schema's argument list.
#define FD_EPILOGUE_PARAMS                                                  \
  const at::Tensor& stats, const c10::optional<at::Tensor>& weight,         \
      const c10::optional<at::Tensor>& ce_weight FD_EPILOGUE_OPTIONS(FD_EPILOGUE_PARAM_)
#define FD_EPILOGUE_ARGS stats, weight, ce_weight FD_EPILOGUE_OPTIONS(FD_EPILOGUE_ARG_)
#define FD_EPILOGUE_TYPES                                                   \
  const at::Tensor&, const c10::optional<at::Tensor>&,                      \
      const c10::optional<at::Tensor>& FD_EPILOGUE_OPTIONS(FD_EPILOGUE_TYPE_)
#define FD_EPILOGUE_SCHEMA_ARGS \
  "Tensor stats, Tensor? weight, Tensor? ce_weight" FD_EPILOGUE_OPTIONS(FD_EPILOGUE_SCHEMA_ARG_)

namespace fastdice {

struct PreparedEpilogue {
  at::Tensor stats;      // [B, C, kNumStats], contiguous, float32 or float64
  at::Tensor weight;     // [C] in stats' dtype, or undefined
  at::Tensor ce_weight;  // [C] in stats' dtype, or undefined
  EpilogueParams params;
  std::vector<int64_t> out_shape;  // [] or, for reduction 'none', [B, C'] / [C'] / []
};

// The number of arguments of dice_loss_from_stats: one gradient slot each in autograd.
constexpr int kEpilogueOpInputs = 3 FD_EPILOGUE_OPTIONS(FD_EPILOGUE_COUNT_);

PreparedEpilogue prepare_epilogue(FD_EPILOGUE_PARAMS);

// A weight's data, or nullptr for none (the kernels' "no weight").
template <typename S>
const S* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<S>() : nullptr;
}

// grad of the loss, checked against the forward output's shape, contiguous.
at::Tensor check_epilogue_grad(const at::Tensor& grad, const PreparedEpilogue& prepared);

}  // namespace fastdice
