// The memory profiler of the emulated GPU (see profiler.h): the sanitizer's
// entry points, the per-block grouping of accesses into warp requests, and the
// per-launch counts.
//
// Everything here is excluded from the instrumentation it implements
// (no_sanitize_thread), and a reentrancy flag keeps any instrumented code it
// reaches (library templates instantiated elsewhere) from recording itself.
#include "profiler.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>
#include <unordered_map>
#include <utility>

#define FD_NO_TSAN __attribute__((no_sanitize_thread, noinline))

namespace fastdice {
namespace emu {
namespace profile {
namespace {

constexpr int kWarp = 32;
constexpr uintptr_t kSector = 32;
constexpr int kBanks = 32;
constexpr int kBankBytes = 4;
// Consecutive loads at one call site count as in flight together up to this
// many: nvcc unrolls a loop of unknown trip count by 4 by default.
constexpr int kMaxSameSiteBurst = 4;

enum Kind : uint8_t { kGlobalLoad = 0, kGlobalStore = 1, kSharedLoad = 2, kSharedStore = 3 };
const char* const kKindNames[] = {"global_load", "global_store", "shared_load", "shared_store"};

struct Access {
  uintptr_t site;
  uintptr_t addr;
  uint32_t thread;
  uint32_t k;  // the thread's k-th access at this site and kind
  uint16_t size;
  Kind kind;
};

// Counts of one call site over a launch.
struct SiteStats {
  int64_t requests = 0, accesses = 0;
  int64_t bytes = 0;         // bytes the lanes asked for (repeats within a request counted once)
  int64_t sectors = 0;       // global: distinct 32-byte sectors per request, summed
  int64_t ideal = 0;         // global: ceil(bytes / 32) per request; shared: ideal wavefronts
  int64_t wavefronts = 0;    // shared
  int64_t max_access = 0;    // the widest access of one lane, bytes
};

// Loads of one thread issued one after another without a barrier, collective
// or store between them, and without coming back to a site already in the
// group: the loads a thread can have in flight together.
struct Burst {
  std::vector<uintptr_t> sites;
  uintptr_t last_site = 0;
  int same_site_run = 0;
  int64_t bytes = 0;
};

struct Launch {
  std::string file;
  int line = 0;
  uintptr_t kernel_offset = 0;
  std::string library;
  dim3 grid, block;
  size_t dynamic_shared = 0;
  int64_t blocks_run = 0;
  std::map<std::pair<uintptr_t, int>, SiteStats> sites;  // (site, kind)
  std::unordered_map<uintptr_t, uint64_t> sector_masks;  // global sector -> read bytes (low 32), written (high 32)
  double burst_sq = 0, burst_bytes = 0;                    // sum of b^2 and b over closed bursts
  int64_t bursts = 0;
  int64_t loading_threads = 0;  // threads of the blocks run that issued a global load
};

struct State {
  bool on = false;
  int64_t max_blocks = 0;
  bool in_launch = false;
  int thread = -1;  // the running emulated thread, -1 when none
  std::vector<Range> global;  // sorted by lo
  std::vector<Range> shared;
  std::vector<std::unordered_map<uint64_t, uint32_t>> counters;  // per thread: (site, kind) -> accesses so far
  std::vector<Burst> bursts;
  std::vector<Access> accesses;
  Launch launch;
  std::vector<std::string> done;
};

State g;
thread_local bool t_inside = false;

FD_NO_TSAN void close_burst(Burst& b) {
  if (b.bytes > 0) {
    g.launch.burst_sq += double(b.bytes) * double(b.bytes);
    g.launch.burst_bytes += double(b.bytes);
    ++g.launch.bursts;
  }
  b.sites.clear();
  b.last_site = 0;
  b.same_site_run = 0;
  b.bytes = 0;
}

FD_NO_TSAN void note_load(Burst& b, uintptr_t site, int64_t bytes) {
  if (site == b.last_site) {
    if (++b.same_site_run > kMaxSameSiteBurst) {
      close_burst(b);
      b.same_site_run = 1;
    }
  } else if (std::find(b.sites.begin(), b.sites.end(), site) != b.sites.end()) {
    close_burst(b);
    b.same_site_run = 1;
  } else {
    b.same_site_run = 1;
  }
  if (b.sites.empty() || b.sites.back() != site) b.sites.push_back(site);
  b.last_site = site;
  b.bytes += bytes;
}

FD_NO_TSAN bool in_ranges(const std::vector<Range>& rs, uintptr_t a) {
  auto it = std::upper_bound(rs.begin(), rs.end(), a, [](uintptr_t v, const Range& r) { return v < r.lo; });
  if (it == rs.begin()) return false;
  --it;
  return a < it->hi;
}

FD_NO_TSAN void record(const void* p, size_t size, bool write, uintptr_t site) {
  if (t_inside || !g.in_launch || g.thread < 0) return;
  t_inside = true;
  const auto a = reinterpret_cast<uintptr_t>(p);
  bool shared = false;
  for (const Range& r : g.shared) shared |= a >= r.lo && a < r.hi;
  if (shared || in_ranges(g.global, a)) {
    const Kind kind = shared ? (write ? kSharedStore : kSharedLoad) : (write ? kGlobalStore : kGlobalLoad);
    const uint64_t key = (uint64_t(site) << 2) | kind;
    const uint32_t k = g.counters[g.thread][key]++;
    g.accesses.push_back(Access{site, a, uint32_t(g.thread), k, uint16_t(size), kind});
    Burst& b = g.bursts[g.thread];
    if (kind == kGlobalLoad) note_load(b, site, int64_t(size));
    else if (kind == kGlobalStore) close_burst(b);
  }
  t_inside = false;
}

// The bytes of [a, a + n) in one 32-byte sector as a bit mask.
FD_NO_TSAN uint32_t sector_bits(uintptr_t sector, uintptr_t a, uintptr_t n) {
  const uintptr_t lo = std::max(a, sector * kSector), hi = std::min(a + n, (sector + 1) * kSector);
  if (hi <= lo) return 0;
  const unsigned width = unsigned(hi - lo), shift = unsigned(lo - sector * kSector);
  return width >= 32 ? 0xffffffffu : ((1u << width) - 1u) << shift;
}

// One warp request: lanes' accesses [first, last) of one (site, kind, warp, k).
FD_NO_TSAN void count_request(const Access* first, const Access* last) {
  SiteStats& s = g.launch.sites[{first->site, int(first->kind)}];
  ++s.requests;
  s.accesses += last - first;
  const bool global = first->kind == kGlobalLoad || first->kind == kGlobalStore;
  if (global) {
    // sector -> bytes the request uses in it
    std::vector<std::pair<uintptr_t, uint32_t>> used;
    for (const Access* x = first; x != last; ++x) {
      s.max_access = std::max<int64_t>(s.max_access, x->size);
      for (uintptr_t sec = x->addr / kSector; sec <= (x->addr + x->size - 1) / kSector; ++sec) {
        const uint32_t bits = sector_bits(sec, x->addr, x->size);
        used.emplace_back(sec, bits);
        uint64_t& m = g.launch.sector_masks[sec];
        m |= first->kind == kGlobalLoad ? uint64_t(bits) : uint64_t(bits) << 32;
      }
    }
    std::sort(used.begin(), used.end());
    int64_t sectors = 0, bytes = 0;
    for (size_t i = 0; i < used.size();) {
      uint32_t bits = 0;
      size_t j = i;
      for (; j < used.size() && used[j].first == used[i].first; ++j) bits |= used[j].second;
      ++sectors;
      bytes += __builtin_popcount(bits);
      i = j;
    }
    s.sectors += sectors;
    s.bytes += bytes;
    s.ideal += (bytes + int64_t(kSector) - 1) / int64_t(kSector);
  } else {
    // distinct 4-byte words, then the most distinct words in one bank
    std::vector<uintptr_t> words;
    for (const Access* x = first; x != last; ++x) {
      s.max_access = std::max<int64_t>(s.max_access, x->size);
      for (uintptr_t w = x->addr / kBankBytes; w <= (x->addr + x->size - 1) / kBankBytes; ++w) words.push_back(w);
    }
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    int per_bank[kBanks] = {};
    int wavefronts = 0;
    for (uintptr_t w : words) wavefronts = std::max(wavefronts, ++per_bank[w % kBanks]);
    s.bytes += int64_t(words.size()) * kBankBytes;
    s.wavefronts += wavefronts;
    s.ideal += std::max<int64_t>(1, (int64_t(words.size()) + kBanks - 1) / kBanks);
  }
}

FD_NO_TSAN std::string hex(uintptr_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

FD_NO_TSAN std::string json_string(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

FD_NO_TSAN uintptr_t library_offset(const void* p, std::string* library) {
  Dl_info info{};
  if (!dladdr(p, &info) || !info.dli_fbase) return reinterpret_cast<uintptr_t>(p);
  if (library && info.dli_fname) *library = info.dli_fname;
  return reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(info.dli_fbase);
}

}  // namespace

FD_NO_TSAN void configure(bool on, int64_t max_blocks) {
  g.on = on;
  g.max_blocks = max_blocks;
}

FD_NO_TSAN bool enabled() { return g.on; }

FD_NO_TSAN int64_t block_stride(int64_t count) {
  if (!g.on || g.max_blocks <= 0 || count <= g.max_blocks) return 1;
  return (count + g.max_blocks - 1) / g.max_blocks;
}

FD_NO_TSAN void begin_launch(const char* file, int line, const void* kernel, dim3 grid, dim3 block,
                             size_t dynamic_shared, std::vector<Range> global, int64_t blocks_run) {
  t_inside = true;
  g.launch = Launch{};
  g.launch.file = file ? file : "?";
  g.launch.line = line;
  g.launch.kernel_offset = library_offset(kernel, &g.launch.library);
  g.launch.grid = grid;
  g.launch.block = block;
  g.launch.dynamic_shared = dynamic_shared;
  g.launch.blocks_run = blocks_run;
  std::sort(global.begin(), global.end(), [](const Range& a, const Range& b) { return a.lo < b.lo; });
  g.global = std::move(global);
  g.in_launch = true;
  g.thread = -1;
  t_inside = false;
}

FD_NO_TSAN void begin_block(int threads) {
  t_inside = true;
  g.shared.clear();
  g.accesses.clear();
  g.counters.assign(threads, {});
  g.bursts.assign(threads, Burst{});
  t_inside = false;
}

FD_NO_TSAN void set_thread(int linear) { g.thread = linear; }

FD_NO_TSAN void add_shared(const void* p, size_t bytes) {
  t_inside = true;
  const auto a = reinterpret_cast<uintptr_t>(p);
  g.shared.push_back(Range{a, a + bytes});
  t_inside = false;
}

FD_NO_TSAN void on_collective() {
  if (!g.in_launch || g.thread < 0) return;
  t_inside = true;
  close_burst(g.bursts[g.thread]);
  t_inside = false;
}

FD_NO_TSAN void end_block() {
  t_inside = true;
  for (Burst& b : g.bursts) close_burst(b);
  for (const auto& c : g.counters) {
    bool loads = false;
    for (const auto& [key, n] : c) loads |= (key & 3u) == kGlobalLoad;
    g.launch.loading_threads += loads;
  }
  auto& v = g.accesses;
  std::sort(v.begin(), v.end(), [](const Access& a, const Access& b) {
    return std::make_tuple(a.site, a.kind, a.thread / kWarp, a.k, a.thread) <
           std::make_tuple(b.site, b.kind, b.thread / kWarp, b.k, b.thread);
  });
  for (size_t i = 0; i < v.size();) {
    size_t j = i + 1;
    while (j < v.size() && v[j].site == v[i].site && v[j].kind == v[i].kind && v[j].thread / kWarp == v[i].thread / kWarp &&
           v[j].k == v[i].k)
      ++j;
    count_request(&v[i], &v[j]);
    i = j;
  }
  v.clear();
  t_inside = false;
}

FD_NO_TSAN void end_launch(size_t static_shared, const std::string& error) {
  t_inside = true;
  g.in_launch = false;
  g.thread = -1;
  const Launch& L = g.launch;
  int64_t read_bytes = 0, write_bytes = 0, read_sectors = 0, write_sectors = 0;
  for (const auto& [sector, m] : L.sector_masks) {
    const auto r = uint32_t(m), w = uint32_t(m >> 32);
    read_bytes += __builtin_popcount(r);
    write_bytes += __builtin_popcount(w);
    read_sectors += r != 0;
    write_sectors += w != 0;
  }
  std::ostringstream s;
  s << "{\"file\": " << json_string(L.file) << ", \"line\": " << L.line << ", \"library\": " << json_string(L.library)
    << ", \"kernel_offset\": " << json_string(hex(L.kernel_offset)) << ", \"grid\": [" << L.grid.x << ", " << L.grid.y
    << ", " << L.grid.z << "], \"block\": [" << L.block.x << ", " << L.block.y << ", " << L.block.z
    << "], \"dynamic_shared\": " << L.dynamic_shared << ", \"static_shared\": " << static_shared
    << ", \"blocks_run\": " << L.blocks_run << ", \"unique_read_bytes\": " << read_bytes
    << ", \"unique_write_bytes\": " << write_bytes << ", \"unique_read_sectors\": " << read_sectors
    << ", \"unique_write_sectors\": " << write_sectors << ", \"load_bursts\": " << L.bursts
    << ", \"load_burst_bytes\": " << L.burst_bytes << ", \"loading_threads\": " << L.loading_threads
    << ", \"load_burst_mean_bytes\": " << (L.burst_bytes > 0 ? L.burst_sq / L.burst_bytes : 0.0)
    << ", \"error\": " << json_string(error) << ", \"sites\": [";
  bool first = true;
  for (const auto& [key, st] : L.sites) {
    s << (first ? "" : ", ") << "{\"site\": " << json_string(hex(library_offset(reinterpret_cast<void*>(key.first), nullptr)))
      << ", \"kind\": \"" << kKindNames[key.second] << "\", \"requests\": " << st.requests
      << ", \"accesses\": " << st.accesses << ", \"bytes\": " << st.bytes << ", \"sectors\": " << st.sectors
      << ", \"ideal\": " << st.ideal << ", \"wavefronts\": " << st.wavefronts << ", \"max_access\": " << st.max_access
      << "}";
    first = false;
  }
  s << "]}";
  g.done.push_back(s.str());
  g.launch = Launch{};
  t_inside = false;
}

FD_NO_TSAN std::vector<std::string> take() {
  std::vector<std::string> out;
  out.swap(g.done);
  return out;
}

}  // namespace profile
}  // namespace emu
}  // namespace fastdice

// ---- the entry points of -fsanitize=thread ------------------------------------------------
// Only the profiling build defines them (FASTDICE_EMULATION_PROFILE): the plain
// build is not instrumented and exports no sanitizer symbols.
#if defined(FASTDICE_EMULATION_PROFILE)
// Each is called with the address of the access; the return address is the
// instrumented instruction: the access's call site.

using fastdice::emu::profile::record;

#define FD_SITE reinterpret_cast<uintptr_t>(__builtin_return_address(0))
#define FD_TSAN_ACCESS(N)                                                                                    \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_read##N(void* p) {              \
    record(p, N, false, FD_SITE);                                                                           \
  }                                                                                                         \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_write##N(void* p) {             \
    record(p, N, true, FD_SITE);                                                                            \
  }                                                                                                         \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_unaligned_read##N(void* p) {    \
    record(p, N, false, FD_SITE);                                                                           \
  }                                                                                                         \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_unaligned_write##N(void* p) {   \
    record(p, N, true, FD_SITE);                                                                            \
  }                                                                                                         \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_volatile_read##N(void* p) {     \
    record(p, N, false, FD_SITE);                                                                           \
  }                                                                                                         \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_volatile_write##N(void* p) {    \
    record(p, N, true, FD_SITE);                                                                            \
  }

FD_TSAN_ACCESS(1)
FD_TSAN_ACCESS(2)
FD_TSAN_ACCESS(4)
FD_TSAN_ACCESS(8)
FD_TSAN_ACCESS(16)

extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_read_range(void* p, unsigned long n) {
  record(p, n, false, FD_SITE);
}
extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_write_range(void* p, unsigned long n) {
  record(p, n, true, FD_SITE);
}
extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_init() {}
extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_func_entry(void*) {}
extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_func_exit() {}
extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_vptr_update(void**, void*) {}
extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_vptr_read(void**) {}

// Atomics: performed as asked (the emulated kernels use none on tensors; the
// host code's reference counts and flags do), not recorded.
#define FD_TSAN_ATOMIC(BITS, T)                                                                                     \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_load(const volatile T* a, int mo) { \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                                    \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_atomic##BITS##_store(volatile T* a, T v, int mo) { \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                                       \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_exchange(volatile T* a, T v, int mo) { \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                             \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_fetch_add(volatile T* a, T v, int mo) { \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_fetch_sub(volatile T* a, T v, int mo) { \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_fetch_and(volatile T* a, T v, int mo) { \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_fetch_or(volatile T* a, T v, int mo) { \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                                               \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_fetch_xor(volatile T* a, T v, int mo) { \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_fetch_nand(volatile T* a, T v, int mo) { \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                                             \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) int __tsan_atomic##BITS##_compare_exchange_strong(     \
      volatile T* a, T* c, T v, int mo, int fmo) {                                                                  \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                         \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) int __tsan_atomic##BITS##_compare_exchange_weak(       \
      volatile T* a, T* c, T v, int mo, int fmo) {                                                                  \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                         \
  }                                                                                                                 \
  extern "C" FD_NO_TSAN __attribute__((visibility("default"))) T __tsan_atomic##BITS##_compare_exchange_val(         \
      volatile T* a, T c, T v, int mo, int fmo) {                                                                   \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                               \
    return c;                                                                                                       \
  }

FD_TSAN_ATOMIC(8, unsigned char)
FD_TSAN_ATOMIC(16, unsigned short)
FD_TSAN_ATOMIC(32, unsigned int)
FD_TSAN_ATOMIC(64, unsigned long long)

extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_atomic_thread_fence(int) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
extern "C" FD_NO_TSAN __attribute__((visibility("default"))) void __tsan_atomic_signal_fence(int) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

#endif  // FASTDICE_EMULATION_PROFILE
