// The block scheduler of the emulated GPU: one fiber per CUDA thread, blocks
// run one after another, barriers and warp collectives as rendezvous that
// report divergence and deadlock, shared memory, faults caught and named, and
// the launch checks a driver makes.
#include <c10/util/Exception.h>

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "emulator_state.h"
#include "fiber.h"
#include "profiler.h"

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace fastdice {
namespace emu {
using namespace detail;
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int64_t kMaxGridX = 2147483647;

// ---- the block scheduler ---------------------------------------------------------

enum class State { kRunnable, kBarrier, kWarp, kDone, kFailed };

struct Fiber {
  FiberContext ctx;
  uint3 tid;
  int linear = 0;
  State state = State::kRunnable;
  // what it waits at
  const char* file = nullptr;
  int line = 0;
  int mode = 0;  // barrier mode or WarpOp
  unsigned mask = 0;
  uint64_t bits = 0;
  int param = 0;
  int width = 32;
  uint64_t result = 0;
  std::string failure;
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<char*> stacks;  // one per fiber, lowest page a guard
  FiberContext scheduler;
  Fiber* current = nullptr;
  int64_t barriers = 0;  // completed block barriers
  std::map<const void*, std::vector<unsigned char>> static_shared;
  size_t static_shared_bytes = 0;
  std::map<const void*, std::vector<unsigned char>> collective_scratch;
  std::map<const void*, int64_t> collective_epoch;  // temp storage -> barriers completed when its last use began
  char* dynamic_shared = nullptr;
  ThreadBody body = nullptr;
  void* context = nullptr;
};
Block* g_block = nullptr;

// Stacks are kept between launches: mapping 256 of them per block would dominate.
std::vector<char*> g_stack_pool;

char* take_stack() {
  if (!g_stack_pool.empty()) {
    char* s = g_stack_pool.back();
    g_stack_pool.pop_back();
    return s;
  }
  void* m = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(m != MAP_FAILED, "emulator: cannot map a fiber stack");
  TORCH_CHECK(mprotect(m, kPage, PROT_NONE) == 0, "emulator: mprotect failed");
  return static_cast<char*>(m);
}

void fiber_entry(void* arg) {
  auto* f = static_cast<Fiber*>(arg);
  g_block->body(g_block->context);
  f->state = State::kDone;
  switch_fiber(f->ctx, g_block->scheduler);
  std::abort();  // a finished fiber is never resumed
}

void yield_to_scheduler() {
  Fiber* f = g_block->current;
  switch_fiber(f->ctx, g_block->scheduler);
}

std::string where(const Fiber& f) {
  std::ostringstream s;
  s << "thread (" << f.tid.x << "," << f.tid.y << "," << f.tid.z << ") of block (" << blockIdx.x << ","
    << blockIdx.y << "," << blockIdx.z << ")";
  return s.str();
}

std::string site(const char* file, int line) {
  std::string f = file ? file : "?";
  const auto slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(line);
}

struct LaunchError {
  std::string message;
};

[[noreturn]] void launch_error(const std::string& m) { throw LaunchError{m}; }

// Completes the warp collective that fiber `f` waits at, if every lane in its
// mask is there; reports lanes that can never arrive.
void try_complete_warp(Block& blk, Fiber& f) {
  const int warp_base = f.linear / 32 * 32;
  const int n = int(blk.fibers.size());
  if (!(f.mask >> (f.linear % 32) & 1u)) {
    launch_error(where(f) + " calls a warp collective at " + site(f.file, f.line) + " with a mask that omits it");
  }
  std::vector<Fiber*> lanes(32, nullptr);
  for (int l = 0; l < 32; ++l) {
    if (!(f.mask >> l & 1u)) continue;
    if (warp_base + l >= n) launch_error("warp collective at " + site(f.file, f.line) + " names lane " +
                                         std::to_string(l) + " past the block's last thread");
    Fiber& g = blk.fibers[warp_base + l];
    if (g.state == State::kRunnable) return;  // not there yet
    if (g.state == State::kDone) {
      launch_error(where(f) + " waits at " + site(f.file, f.line) + " for lane " + std::to_string(l) +
                   ", which has exited");
    }
    if (g.state == State::kBarrier) {
      launch_error("divergence: " + where(f) + " waits at warp collective " + site(f.file, f.line) + ", lane " +
                   std::to_string(l) + " at barrier " + site(g.file, g.line));
    }
    if (g.state != State::kWarp) return;
    if (g.file != f.file || g.line != f.line || g.mode != f.mode || g.mask != f.mask || g.width != f.width) {
      launch_error("divergence: lanes of one warp at different collectives: " + where(f) + " at " +
                   site(f.file, f.line) + ", lane " + std::to_string(l) + " at " + site(g.file, g.line) +
                   (g.mask != f.mask ? " (different masks)" : ""));
    }
    lanes[l] = &g;
  }
  const auto op = static_cast<WarpOp>(f.mode);
  uint64_t ballot = 0;
  for (int l = 0; l < 32; ++l) {
    if (lanes[l] && lanes[l]->bits) ballot |= 1ull << l;
  }
  for (int l = 0; l < 32; ++l) {
    Fiber* g = lanes[l];
    if (!g) continue;
    const int w = g->width;
    const int seg = l / w * w;  // the lane's segment of width w
    int src = l;
    switch (op) {
      case WarpOp::kShflXor: src = seg + ((l - seg) ^ g->param); break;
      case WarpOp::kShflDown: src = (l - seg) + g->param < w ? l + g->param : l; break;
      case WarpOp::kShflUp: src = (l - seg) - g->param >= 0 ? l - g->param : l; break;
      case WarpOp::kShfl: src = seg + ((g->param % w + w) % w); break;
      default: break;
    }
    if (op == WarpOp::kBallot) {
      g->result = ballot;
    } else if (op == WarpOp::kSyncWarp) {
      g->result = 0;
    } else {
      if (src < 0 || src >= 32 || !lanes[src]) {
        launch_error(where(*g) + " reads lane " + std::to_string(src) + " outside the mask of the shuffle at " +
                     site(g->file, g->line));
      }
      g->result = lanes[src]->bits;
    }
  }
  for (int l = 0; l < 32; ++l) {
    if (lanes[l]) lanes[l]->state = State::kRunnable;
  }
}

// Completes a block barrier when every thread is there.
bool try_complete_barrier(Block& blk) {
  Fiber* first = nullptr;
  for (Fiber& g : blk.fibers) {
    if (g.state != State::kBarrier) return false;
    if (!first) first = &g;
  }
  int64_t agg = 0;
  for (Fiber& g : blk.fibers) {
    if (g.file != first->file || g.line != first->line) {
      launch_error("divergence: " + where(*first) + " at barrier " + site(first->file, first->line) + ", " +
                   where(g) + " at barrier " + site(g.file, g.line));
    }
    if (g.mode != first->mode) launch_error("barrier kinds differ at " + site(g.file, g.line));
    agg += g.bits != 0;
  }
  const int64_t n = int64_t(blk.fibers.size());
  const int mode = first->mode;
  const uint64_t result = mode == 1 ? agg > 0 : mode == 2 ? agg == n : mode == 3 ? uint64_t(agg) : 0;
  for (Fiber& g : blk.fibers) {
    g.result = result;
    g.state = State::kRunnable;
  }
  ++blk.barriers;
  return true;
}

// The next fiber to run, by the schedule; nullptr when none can.
Fiber* pick(Block& blk, int& cursor) {
  const int n = int(blk.fibers.size());
  if (g_config.schedule == 0) {
    for (int k = 0; k < n; ++k) {
      const int i = (cursor + k) % n;
      if (blk.fibers[i].state == State::kRunnable) {
        cursor = (i + 1) % n;
        return &blk.fibers[i];
      }
    }
    return nullptr;
  }
  // The highest warp that can run, its highest lane first: one warp runs as
  // far as it can before any other starts, the order a missing barrier shows.
  for (int i = n - 1; i >= 0; --i) {
    if (blk.fibers[i].state == State::kRunnable) return &blk.fibers[i];
  }
  return nullptr;
}

std::string states(const Block& blk) {
  std::ostringstream s;
  int shown = 0;
  for (const Fiber& g : blk.fibers) {
    if (g.state == State::kDone || shown >= 6) continue;
    s << "\n  thread " << g.linear << ": "
      << (g.state == State::kBarrier ? "at barrier " : g.state == State::kWarp ? "at warp collective " : "running ")
      << site(g.file, g.line);
    ++shown;
  }
  return s.str();
}

sigjmp_buf g_fault_jump;
volatile sig_atomic_t g_in_block = 0;
volatile uintptr_t g_fault_address = 0;
volatile int g_fault_signal = 0;
struct sigaction g_previous_segv, g_previous_bus, g_previous_ill;

void on_fault(int sig, siginfo_t* info, void* uctx) {
  if (g_in_block) {
    g_fault_address = reinterpret_cast<uintptr_t>(info->si_addr);
    g_fault_signal = sig;
    g_in_block = 0;
    siglongjmp(g_fault_jump, 1);
  }
  // Not ours: the previous handler (or the default action) takes it.
  const struct sigaction& prev = sig == SIGSEGV ? g_previous_segv : sig == SIGBUS ? g_previous_bus : g_previous_ill;
  if (prev.sa_flags & SA_SIGINFO) {
    prev.sa_sigaction(sig, info, uctx);
  } else if (prev.sa_handler != SIG_IGN && prev.sa_handler != SIG_DFL) {
    prev.sa_handler(sig);
  } else {
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

void install_fault_handler() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  static std::vector<char> alt(1 << 16);
  stack_t ss{};
  ss.ss_sp = alt.data();
  ss.ss_size = alt.size();
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = &on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_previous_segv);
  sigaction(SIGBUS, &sa, &g_previous_bus);
  sigaction(SIGILL, &sa, &g_previous_ill);  // the alignment sanitizer's trap
}

void run_block(Block& blk, uint3 bidx, dim3 block) {
  blockIdx = bidx;
  const int n = int(block.x * block.y * block.z);
  blk.fibers.assign(n, Fiber{});
  blk.barriers = 0;
  blk.static_shared.clear();
  blk.collective_epoch.clear();
  blk.collective_scratch.clear();
  for (int i = 0; i < n; ++i) {
    Fiber& f = blk.fibers[i];
    f.linear = i;
    f.tid = uint3{unsigned(i % block.x), unsigned(i / block.x % block.y), unsigned(i / (block.x * block.y))};
    make_fiber(f.ctx, blk.stacks[i] + kPage, kStackBytes - kPage, &fiber_entry, &f);
  }
  int cursor = 0;
  if (sigsetjmp(g_fault_jump, 1)) {
    profile::set_thread(-1);
    const Fiber* f = blk.current;
    const bool on_stack = [&] {
      for (char* s : blk.stacks) {
        if (g_fault_address >= reinterpret_cast<uintptr_t>(s) && g_fault_address < reinterpret_cast<uintptr_t>(s) + kPage)
          return true;
      }
      return false;
    }();
    if (g_fault_signal == SIGILL) {
      launch_error("misaligned access (a vector load or store at an address its type's alignment forbids; the GPU "
                   "faults on it) or another trap, by " + (f ? where(*f) : std::string("?")));
    }
    launch_error(std::string(g_fault_signal == SIGBUS ? "bus error" : "invalid access") + " by " +
                 (f ? where(*f) : std::string("?")) + ": " +
                 (on_stack ? std::string("a fiber's stack overflowed") : describe_address(g_fault_address)));
  }
  for (;;) {
    Fiber* f = pick(blk, cursor);
    if (!f) {
      bool all_done = true;
      for (const Fiber& g : blk.fibers) all_done &= g.state == State::kDone;
      if (all_done) break;
      if (try_complete_barrier(blk)) continue;
      for (const Fiber& g : blk.fibers) {
        if (g.state == State::kDone) {
          for (const Fiber& h : blk.fibers) {
            if (h.state == State::kBarrier) {
              launch_error("divergence: " + where(g) + " has exited while " + where(h) + " waits at barrier " +
                           site(h.file, h.line));
            }
          }
        }
      }
      for (Fiber& g : blk.fibers) {
        if (g.state == State::kWarp) try_complete_warp(blk, g);  // names the lane that cannot arrive
      }
      launch_error("deadlock in block (" + std::to_string(bidx.x) + "," + std::to_string(bidx.y) + "):" +
                   states(blk));
    }
    blk.current = f;
    threadIdx = f->tid;
    ++g_counters.switches;
    g_in_block = 1;
    profile::set_thread(f->linear);
    switch_fiber(blk.scheduler, f->ctx);
    profile::set_thread(-1);
    g_in_block = 0;
    blk.current = nullptr;
    if (f->state == State::kFailed) launch_error(where(*f) + ": " + f->failure);
    if (f->state == State::kWarp) try_complete_warp(blk, *f);
    if (f->state == State::kDone) {
      // A warp collective waiting for this lane can never complete.
      const int base = f->linear / 32 * 32;
      for (int l = 0; l < 32 && base + l < n; ++l) {
        Fiber& g = blk.fibers[base + l];
        if (g.state == State::kWarp && (g.mask >> (f->linear % 32) & 1u)) try_complete_warp(blk, g);
      }
    }
  }
  blk.static_shared_bytes = 0;
  for (const auto& [tag, bytes] : blk.static_shared) blk.static_shared_bytes += round_up(bytes.size(), 16);
}

}  // namespace

int linear_thread_index() {
  TORCH_CHECK(g_block && g_block->current, "emulator: a device function called outside a kernel");
  return g_block->current->linear;
}

void fail(const char* message) {
  Fiber* f = g_block->current;
  f->state = State::kFailed;
  f->failure = message;
  yield_to_scheduler();
  std::abort();
}

int block_barrier(int predicate, int mode, const char* file, int line) {
  Fiber* f = g_block->current;
  f->state = State::kBarrier;
  f->file = file;
  f->line = line;
  f->mode = mode;
  f->bits = predicate != 0;
  if (profile::enabled()) profile::on_collective();
  yield_to_scheduler();
  return int(f->result);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int param, int width, const char* file, int line) {
  Fiber* f = g_block->current;
  if (width <= 0 || width > 32 || (width & (width - 1))) fail("warp collective with a width that is not 1..32, a power of 2");
  f->state = State::kWarp;
  f->file = file;
  f->line = line;
  f->mode = int(op);
  f->mask = mask;
  f->bits = bits;
  f->param = param;
  f->width = width;
  if (profile::enabled()) profile::on_collective();
  yield_to_scheduler();
  return f->result;
}

void enter_block_collective(const void* storage, const char* what) {
  // A use that began after e barriers completes barrier e + 1 inside; the
  // storage is free again only once barrier e + 2 has completed.
  const int64_t now = g_block->barriers;
  auto it = g_block->collective_epoch.find(storage);
  if (it != g_block->collective_epoch.end() && now == it->second) return;  // the same use, another thread
  if (it != g_block->collective_epoch.end() && now == it->second + 1) {
    static thread_local std::string m;
    m = std::string(what) + ": temp storage reused without a __syncthreads() since its previous use";
    fail(m.c_str());
  }
  g_block->collective_epoch[storage] = now;
}

void* collective_scratch(const void* storage, size_t bytes) {
  auto& v = g_block->collective_scratch[storage];
  if (v.size() < bytes) v.resize(bytes);
  return v.data();
}

void* dynamic_shared_base() { return g_block->dynamic_shared; }

void* static_shared(const void* tag, size_t bytes, size_t align) {
  auto it = g_block->static_shared.find(tag);
  if (it == g_block->static_shared.end()) {
    // Shared memory starts undefined: poison it.
    it = g_block->static_shared.emplace(tag, std::vector<unsigned char>(bytes + align, g_config.poison)).first;
    const auto p = reinterpret_cast<uintptr_t>(it->second.data());
    if (profile::enabled()) profile::add_shared(reinterpret_cast<void*>((p + align - 1) / align * align), bytes);
  }
  auto p = reinterpret_cast<uintptr_t>(it->second.data());
  return reinterpret_cast<void*>((p + align - 1) / align * align);
}

void run_kernel(const char* file, int line, const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared,
                ThreadBody body, void* context) {
  TORCH_CHECK(g_block == nullptr, "emulator: a kernel launched from inside a kernel");
  const std::string at = "kernel launched at " + site(file, line) + ": ";
  const int64_t threads = int64_t(block.x) * block.y * block.z;
  TORCH_CHECK(threads >= 1 && threads <= kMaxThreadsPerBlock && block.z <= 64,
              at, "invalid block size (", block.x, ",", block.y, ",", block.z, ")");
  TORCH_CHECK(grid.x >= 1 && int64_t(grid.x) <= kMaxGridX && grid.y >= 1 && int64_t(grid.y) <= g_config.limits.max_grid_y &&
                  grid.z >= 1 && int64_t(grid.z) <= g_config.limits.max_grid_y,
              at, "invalid grid (", grid.x, ",", grid.y, ",", grid.z, "); gridDim.y and .z are at most ",
              g_config.limits.max_grid_y);
  KernelInfo& info = kernel_info(kernel);
  const int64_t allowed_dynamic = info.max_dynamic_shared < 0 ? g_config.limits.default_shared : info.max_dynamic_shared;
  TORCH_CHECK(int64_t(dynamic_shared) <= allowed_dynamic, at, dynamic_shared,
              " bytes of dynamic shared memory without cudaFuncSetAttribute(MaxDynamicSharedMemorySize) opting in to ",
              "more than ", allowed_dynamic);
  TORCH_CHECK(int64_t(dynamic_shared + info.static_shared) <= g_config.limits.max_shared_optin, at,
              dynamic_shared + info.static_shared, " bytes of shared memory, more than the device's ",
              g_config.limits.max_shared_optin);
  install_fault_handler();

  Block blk;
  blk.body = body;
  blk.context = context;
  for (int64_t i = 0; i < threads; ++i) blk.stacks.push_back(take_stack());
  GuardedRegion shared_region;
  if (dynamic_shared > 0) shared_region = map_guarded(dynamic_shared, true, 16, g_config.poison, "the dynamic shared memory");
  blk.dynamic_shared = shared_region.user;
  g_block = &blk;
  gridDim = grid;
  blockDim = block;
  const int64_t count = int64_t(grid.x) * grid.y * grid.z;
  // Profiling may run an even sample of the blocks (profiler.h): every stride-th, the middle one of each stride.
  const int64_t stride = profile::block_stride(count);
  const bool profiled = profile::enabled();
  if (profiled) {
    std::vector<profile::Range> global = guarded_ranges(shared_region.user);
    profile::begin_launch(file, line, kernel, grid, block, dynamic_shared, std::move(global),
                          (count - stride / 2 + stride - 1) / stride);
  }
  std::string error;
  try {
    for (int64_t k = 0; k < count; ++k) {
      if (stride > 1 && k % stride != stride / 2) continue;
      const int64_t q = g_config.schedule == 0 ? k : count - 1 - k;
      const uint3 bidx{unsigned(q % grid.x), unsigned(q / grid.x % grid.y), unsigned(q / (int64_t(grid.x) * grid.y))};
      if (dynamic_shared > 0) std::memset(blk.dynamic_shared, g_config.poison, dynamic_shared);
      if (profiled) {
        profile::begin_block(int(threads));
        if (dynamic_shared > 0) profile::add_shared(blk.dynamic_shared, dynamic_shared);
      }
      run_block(blk, bidx, block);
      if (profiled) profile::end_block();
      ++g_counters.blocks;
      if (blk.static_shared_bytes > info.static_shared) info.static_shared = blk.static_shared_bytes;
    }
  } catch (const LaunchError& e) {
    error = e.message;
  }
  if (profiled) profile::end_launch(info.static_shared, error);
  g_block = nullptr;
  ++g_counters.launches;
  std::string canary;
  if (dynamic_shared > 0) {
    canary = check_canaries(shared_region);
    unmap_guarded(shared_region);
  }
  for (char* s : blk.stacks) g_stack_pool.push_back(s);
  TORCH_CHECK(error.empty(), at, error);
  TORCH_CHECK(canary.empty(), at, canary);
}

}  // namespace emu
}  // namespace fastdice
