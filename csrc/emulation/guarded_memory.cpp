// Guarded memory of the emulated GPU: every tensor allocated while an emulated
// op runs, and the dynamic shared memory, sits in its own mapping between two
// inaccessible pages, poisoned, its slack checked as canaries when freed.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "emulator_state.h"

namespace fastdice {
namespace emu {
namespace detail {
namespace {
std::mutex g_regions_mutex;
std::map<uintptr_t, GuardedRegion> g_regions;  // by map address
}  // namespace

GuardedRegion map_guarded(size_t bytes, bool flush_end, size_t align, unsigned char poison, std::string what) {
  const size_t inner = round_up(std::max<size_t>(bytes, 1) + align, kPage);
  GuardedRegion r;
  r.map_bytes = inner + 2 * kPage;
  void* m = mmap(nullptr, r.map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(m != MAP_FAILED, "emulator: mmap of ", r.map_bytes, " bytes failed");
  r.map = static_cast<char*>(m);
  TORCH_CHECK(mprotect(r.map, kPage, PROT_NONE) == 0 && mprotect(r.map + kPage + inner, kPage, PROT_NONE) == 0,
              "emulator: mprotect failed");
  std::memset(r.map + kPage, poison, inner);
  char* lo = r.map + kPage;
  char* hi = lo + inner;
  // flush_end: the last byte touches the upper guard page (up to align - 1
  // bytes of slack, checked as canaries); else the first byte touches the lower one.
  r.user = flush_end ? reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(hi - bytes) & ~uintptr_t(align - 1)) : lo;
  r.bytes = bytes;
  r.poison = poison;
  r.what = std::move(what);
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  g_regions[reinterpret_cast<uintptr_t>(r.map)] = r;
  return r;
}

std::string check_canaries(const GuardedRegion& r) {
  const char* lo = r.map + kPage;
  const char* hi = r.map + r.map_bytes - kPage;
  for (const char* p = lo; p < hi; ++p) {
    if (p >= r.user && p < r.user + r.bytes) continue;
    if (static_cast<unsigned char>(*p) != r.poison) {
      std::ostringstream s;
      s << "write " << (p < r.user ? "before the start" : "past the end") << " of " << r.what << " ("
        << r.bytes << " bytes) at offset " << (p - r.user);
      return s.str();
    }
  }
  return {};
}

void unmap_guarded(const GuardedRegion& r) {
  {
    std::lock_guard<std::mutex> lock(g_regions_mutex);
    g_regions.erase(reinterpret_cast<uintptr_t>(r.map));
  }
  munmap(r.map, r.map_bytes);
}

std::string describe_address(uintptr_t a) {
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  for (const auto& [base, r] : g_regions) {
    if (a < base || a >= base + r.map_bytes) continue;
    std::ostringstream s;
    const auto user = reinterpret_cast<uintptr_t>(r.user);
    if (a < user) s << (user - a) << " bytes before the start of " << r.what << " (" << r.bytes << " bytes)";
    else s << (a - user - r.bytes) << " bytes past the end of " << r.what << " (" << r.bytes << " bytes)";
    return s.str();
  }
  return "an address outside every emulated allocation";
}

namespace {

// The CPU allocator while an emulated op runs: every tensor in its own
// guarded region, poisoned.
struct GuardedAllocator final : c10::Allocator {
  static void deleter(void* ctx) {
    auto* r = static_cast<GuardedRegion*>(ctx);
    const std::string bad = check_canaries(*r);
    if (!bad.empty()) g_violations.push_back(bad);
    unmap_guarded(*r);
    delete r;
  }
  c10::DataPtr allocate(size_t n) override {
    auto* r = new GuardedRegion(map_guarded(n, g_config.schedule == 0, 16, g_config.poison, "a tensor"));
    return {r->user, r, &deleter, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};
GuardedAllocator g_guarded_allocator;
int g_scope_depth = 0;
c10::Allocator* g_saved_allocator = nullptr;

}  // namespace

std::vector<profile::Range> guarded_ranges(const char* except) {
  std::vector<profile::Range> out;
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  for (const auto& [base, r] : g_regions) {
    if (r.user == except) continue;
    const auto lo = reinterpret_cast<uintptr_t>(r.user);
    out.push_back(profile::Range{lo, lo + r.bytes});
  }
  return out;
}

}  // namespace detail

DeviceMemoryScope::DeviceMemoryScope() {
  if (detail::g_scope_depth++ == 0) {
    detail::g_saved_allocator = c10::GetCPUAllocator();
    c10::SetCPUAllocator(&detail::g_guarded_allocator, /*priority=*/255);
  }
}

DeviceMemoryScope::~DeviceMemoryScope() {
  if (--detail::g_scope_depth == 0) c10::SetCPUAllocator(detail::g_saved_allocator, /*priority=*/255);
}

}  // namespace emu
}  // namespace fastdice
