// The emulated GPU's memory profiler: every global and shared memory access of
// every emulated thread, aggregated per launch as Nsight Compute counts them.
//
// The accesses come from the compiler: the profiling build of the emulation
// library compiles everything with -fsanitize=thread (fastdice_dev/emulation.py,
// profile=True), which calls __tsan_read<N> / __tsan_write<N> before each load
// and store, and profiler.cpp defines those entry points itself (no sanitizer
// runtime is linked). An access is kept only while a profiled block runs and
// only when it falls in a tensor allocated under the emulator's guarded
// allocator (global memory) or in the block's shared memory; its call site is
// the instrumented instruction's address.
//
// Requests: the k-th access of each lane of a warp at one call site form one
// warp-level request, as one SASS load or store would. Global requests count
// the distinct 32-byte sectors their lanes touch; shared requests count the
// wavefronts their lanes need over 32 banks of 4 bytes (lanes reading the same
// word are one broadcast).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_emulation.h"

namespace fastdice {
namespace emu {
namespace profile {

struct Range {
  uintptr_t lo, hi;  // [lo, hi)
};

// Whether launches are profiled; max_blocks > 0 runs only that many blocks of
// a larger grid, evenly spread (the counts then stand for the whole grid
// scaled by blocks / blocks_run).
void configure(bool on, int64_t max_blocks);
bool enabled();
// The blocks a profiled launch of `count` blocks runs: every stride-th.
int64_t block_stride(int64_t count);

void begin_launch(const char* file, int line, const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared,
                  std::vector<Range> global, int64_t blocks_run);
void begin_block(int threads);
// The emulated thread that runs now; -1 between fibers.
void set_thread(int linear);
void add_shared(const void* p, size_t bytes);
// A barrier or warp collective of the running thread: its loads before it are
// no longer in flight together with those after it.
void on_collective();
void end_block();
void end_launch(size_t static_shared, const std::string& error);

// One JSON object per profiled launch since the last call.
std::vector<std::string> take();

}  // namespace profile
}  // namespace emu
}  // namespace fastdice
