// The emulator's shared state, for its parts: guarded memory
// (guarded_memory.cpp), the block scheduler (scheduler.cpp), the CUDA runtime
// calls (runtime_shims.cpp) and the control ops (control_ops.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cuda_emulation.h"
#include "profiler.h"

namespace fastdice {
namespace emu {
namespace detail {

constexpr size_t kPage = 4096;
constexpr int kMaxThreadsPerBlock = 1024;
inline size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

// ---- configuration (set by the control op `configure`) -----------------------

struct Config {
  int schedule = 0;  // 0: blocks and threads in order, round robin; 1: reversed, one warp as far as it goes
  DeviceLimits limits{65535, 232448, 48 * 1024};  // an H100's
  unsigned char poison = 0xff;
};
extern Config g_config;

struct Counters {
  int64_t launches = 0, blocks = 0, switches = 0;
};
extern Counters g_counters;
extern std::vector<std::string> g_violations;  // found outside a launch (allocation canaries)

// ---- guarded memory (guarded_memory.cpp) --------------------------------------

// A region of pages with an inaccessible page on each side.
struct GuardedRegion {
  char* map = nullptr;
  size_t map_bytes = 0;
  char* user = nullptr;  // the usable [user, user + bytes)
  size_t bytes = 0;
  unsigned char poison = 0;
  std::string what;
};

GuardedRegion map_guarded(size_t bytes, bool flush_end, size_t align, unsigned char poison, std::string what);
// Bytes of the region outside [user, user + bytes) that are no longer poison.
std::string check_canaries(const GuardedRegion& r);
void unmap_guarded(const GuardedRegion& r);
// Describes an address that hit a guard page.
std::string describe_address(uintptr_t a);
// The usable ranges of every live region but the one at `except`: global memory, for the profiler.
std::vector<profile::Range> guarded_ranges(const char* except);

// ---- kernels' attributes (runtime_shims.cpp) -------------------------------------

struct KernelInfo {
  size_t static_shared = 0;      // measured at its launches
  int max_dynamic_shared = -1;   // opt-in; -1: the default
};
KernelInfo& kernel_info(const void* kernel);

}  // namespace detail
}  // namespace emu
}  // namespace fastdice
