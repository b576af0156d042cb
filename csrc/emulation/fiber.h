// Fibers: one stack per emulated CUDA thread and a switch between stacks that
// saves only what the C ABI says a call preserves (x86-64: a few registers and
// the floating-point control words; elsewhere ucontext, slower but portable).
#pragma once

#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace fastdice {
namespace emu {

struct FiberContext {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// Prepares `to` to run entry(arg) on [stack, stack + size) at its first switch.
void make_fiber(FiberContext& to, char* stack, size_t size, void (*entry)(void*), void* arg);
// Saves the running context into `from` and resumes `to`.
void switch_fiber(FiberContext& from, FiberContext& to);

}  // namespace emu
}  // namespace fastdice
