// fastdice::constants: the contracts the C++ side defines and Python needs,
// read once when fastdice._ops loads (never inside a traced graph): the names
// of the statistics in their order (FD_STATS, dice_math.h) and the limits of
// the region table (dice_problem.h). The epilogue's options Python reads from
// the schema of fastdice::dice_loss_from_stats itself.
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "../dice_problem.h"

namespace fastdice {
namespace {

std::tuple<std::vector<std::string>, int64_t, int64_t> constants() {
#define FD_STAT_NAME_(enumerator, name) #name,
  std::vector<std::string> stat_names{FD_STATS(FD_STAT_NAME_)};
#undef FD_STAT_NAME_
  return {std::move(stat_names), static_cast<int64_t>(kMaxRegions), kRegionLabels};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdice, m) {
  m.def("constants() -> (str[] stat_names, int max_regions, int region_labels)", &constants);
}

}  // namespace fastdice
