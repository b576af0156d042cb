// CPU forward: stats[B, C, kNumStats] in one pass over input and target.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../static_switch.h"
#include "cpu_tile.h"

namespace fastdice {
namespace cpu {
namespace {

// acc[k][j]: lane j of statistic k, viewed by accumulate_element as acc[k].
template <typename acc_t>
struct LaneView {
  acc_t (*lanes)[kLanes];
  int j;
  acc_t& operator[](int k) const { return lanes[k][j]; }
};

template <bool kFull, typename acc_t>
void accumulate_class(const acc_t* prob, const acc_t* target_dense, const int32_t* labels, int64_t c,
                      double* chunk_acc) {
  constexpr int kStats = StatSet<kFull>::kAccumulated;
  acc_t lanes[kStats][kLanes] = {};
  for (int64_t i = 0; i < kTile; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const acc_t p = prob[i + j];
      const acc_t t = labels ? (labels[i + j] == c ? acc_t(1) : acc_t(0)) : target_dense[i + j];
      LaneView<acc_t> view{lanes, j};
      accumulate_element<kFull>(view, p, t);
    }
  }
  for (int k = 0; k < kStats; ++k) {
    acc_t s = 0;
    for (int j = 0; j < kLanes; ++j) s += lanes[k][j];
    chunk_acc[k] += static_cast<double>(s);
  }
}

template <typename scalar_t, typename acc_t, Activation kAct, bool kFull>
void dice_stats_cpu_impl(const at::Tensor& input, const DiceProblem& pr, at::Tensor& stats) {
  const int64_t C = pr.classes;
  const int64_t per_sample = chunks_per_sample(pr.spatial);
  const int64_t items = pr.batch * per_sample;
  // partials[item][c][k], reduced below in a fixed order.
  std::vector<double> partials(static_cast<size_t>(items * C * kNumStats), 0.0);
  const scalar_t* x = input.data_ptr<scalar_t>();
  const bool is_label = pr.target.is_label;

  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> prob(C * kTile), target_dense(is_label ? 0 : C * kTile), scratch(2 * kTile);
    std::vector<int32_t> labels(is_label ? kTile : 0);
    for (int64_t item = begin; item < end; ++item) {
      const ChunkRange r = chunk_range(item, pr.spatial);
      double* acc = partials.data() + item * C * kNumStats;
      int64_t valid_count = 0;
      for (int64_t s0 = r.s_begin; s0 < r.s_end; s0 += kTile) {
        const int64_t n = std::min(kTile, r.s_end - s0);
        load_input_tile(x, pr, r.b, s0, n, prob.data());
        activate_tile<kAct>(prob.data(), C, scratch.data());
        if (is_label) {
          valid_count += load_label_tile(pr, r.b, s0, n, labels.data());
          // Ignored and padding positions leave every statistic.
          for (int64_t c = 0; c < C; ++c) {
            acc_t* p = prob.data() + c * kTile;
            for (int64_t i = 0; i < kTile; ++i) p[i] = labels[i] >= 0 ? p[i] : acc_t(0);
          }
        } else {
          valid_count += n;
          load_dense_tile(pr, r.b, s0, n, target_dense.data());
          for (int64_t c = 0; c < C; ++c) {
            acc_t* p = prob.data() + c * kTile;
            for (int64_t i = n; i < kTile; ++i) p[i] = acc_t(0);
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          accumulate_class<kFull>(prob.data() + c * kTile,
                                  is_label ? nullptr : target_dense.data() + c * kTile,
                                  is_label ? labels.data() : nullptr, c, acc + c * kNumStats);
        }
      }
      if (kFull) {
        for (int64_t c = 0; c < C; ++c) acc[c * kNumStats + kValidCount] = static_cast<double>(valid_count);
      }
    }
  });

  // Fixed-order reduction over chunks: identical for any thread count.
  auto out = stats.accessor<acc_t, 3>();
  for (int64_t b = 0; b < pr.batch; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      for (int k = 0; k < kNumStats; ++k) {
        double s = 0.0;
        for (int64_t q = 0; q < per_sample; ++q) {
          s += partials[((b * per_sample + q) * C + c) * kNumStats + k];
        }
        out[b][c][k] = static_cast<acc_t>(s);
      }
    }
  }
}

at::Tensor dice_stats_cpu(const at::Tensor& input, const at::Tensor& target,
                          c10::string_view activation, bool full_stats,
                          c10::optional<int64_t> ignore_index) {
  TORCH_CHECK_VALUE(input.device().is_cpu(), "fastdice: expected a CPU input, got ", input.device());
  const PreparedProblem prepared =
      prepare_problem(input, target, std::string(activation), full_stats, ignore_index);
  const DiceProblem& pr = prepared.problem;
  at::Tensor stats = at::zeros({pr.batch, pr.classes, kNumStats},
                               input.options().dtype(stats_dtype_for(input.scalar_type())));
  if (pr.batch == 0 || pr.classes == 0 || pr.spatial == 0) return stats;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dice_stats_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    FD_ACTIVATION_SWITCH(pr.activation, kAct, [&] {
      FD_BOOL_SWITCH(pr.full_stats, kFull, [&] {
        dice_stats_cpu_impl<scalar_t, acc_t, kAct, kFull>(prepared.input, pr, stats);
      });
    });
  });
  return stats;
}

}  // namespace

at::Tensor dice_stats_backward_cpu(const at::Tensor& grad_stats, const at::Tensor& input,
                                   const at::Tensor& target, c10::string_view activation,
                                   bool full_stats, c10::optional<int64_t> ignore_index);

}  // namespace cpu

TORCH_LIBRARY_IMPL(fastdice, CPU, m) {
  m.impl("dice_stats", &cpu::dice_stats_cpu);
  m.impl("dice_stats_backward", &cpu::dice_stats_backward_cpu);
}

}  // namespace fastdice
