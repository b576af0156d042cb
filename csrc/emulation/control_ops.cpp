// The control ops of the emulation library (fastdice_emu, or
// fastdice_emu_profile for the profiling build): configuration, guarded
// copies, the report of problems found outside launches, the launch log and
// the memory profile.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <sstream>
#include <string>
#include <vector>

#include "emulator_state.h"
#include "profiler.h"

namespace fastdice {
namespace emu {
namespace detail {

Config g_config;
Counters g_counters;
std::vector<std::string> g_violations;

}  // namespace detail
}  // namespace emu
}  // namespace fastdice

namespace {

using namespace fastdice::emu;
using namespace fastdice::emu::detail;

// schedule 0 or 1 (see pick), the device limits the host code sees, and the
// poison byte of fresh allocations and shared memory.
void configure(int64_t schedule, int64_t max_grid_y, int64_t max_shared_optin, int64_t poison) {
  TORCH_CHECK(schedule == 0 || schedule == 1, "schedule must be 0 or 1");
  TORCH_CHECK(max_grid_y >= 1 && max_grid_y <= 65535, "max_grid_y must be in [1, 65535]");
  TORCH_CHECK(max_shared_optin >= 48 * 1024, "max_shared_optin must be at least 48 KiB");
  g_config.schedule = int(schedule);
  g_config.limits.max_grid_y = max_grid_y;
  g_config.limits.max_shared_optin = max_shared_optin;
  g_config.poison = static_cast<unsigned char>(poison);
}

// A copy of t (same sizes, strides and storage offset) in guarded memory.
at::Tensor guarded_copy(const at::Tensor& t) {
  DeviceMemoryScope scope;
  if (t.numel() == 0) return at::empty_strided(t.sizes(), t.strides(), t.options());
  int64_t extent = 1;
  for (int64_t d = 0; d < t.dim(); ++d) extent += (t.size(d) - 1) * t.stride(d);
  const int64_t need = t.storage_offset() + extent;
  at::Tensor base = at::empty({need}, t.options());
  if (need > 0) base.copy_(t.as_strided({need}, {1}, 0));
  return base.as_strided(t.sizes(), t.strides(), t.storage_offset());
}

// Problems found outside launches (allocation canaries) since the last call,
// one per line, and the counters.
std::string take_report() {
  std::ostringstream s;
  for (const auto& v : g_violations) s << "violation: " << v << "\n";
  g_violations.clear();
  s << "launches=" << g_counters.launches << " blocks=" << g_counters.blocks << " switches=" << g_counters.switches;
  return s.str();
}

// The emulated launches since the last call (csrc/launch_log.h); recording
// continues only if `enable`.
std::vector<std::string> take_launch_log(bool enable) { return fastdice::LaunchLog::instance().take(enable); }

// Profiling (profiler.h; counts only in the library built with profile=True):
// on or off, and at most max_blocks blocks per launch (0: all).
void set_profiling(bool on, int64_t max_blocks) {
  TORCH_CHECK(max_blocks >= 0, "max_blocks must be >= 0 (0: every block)");
  fastdice::emu::profile::configure(on, max_blocks);
}

// One JSON object per profiled launch since the last call.
std::vector<std::string> take_profile() { return fastdice::emu::profile::take(); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(FD_EMU_NAMESPACE, m) {
  m.def("configure(int schedule, int max_grid_y, int max_shared_optin, int poison) -> ()", &configure);
  m.def("guarded_copy(Tensor t) -> Tensor", &guarded_copy);
  m.def("take_report() -> str", &take_report);
  m.def("take_launch_log(bool enable) -> str[]", &take_launch_log);
  m.def("set_profiling(bool on, int max_blocks) -> ()", &set_profiling);
  m.def("take_profile() -> str[]", &take_profile);
}
