#include "fiber.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)

// fd_emu_switch(void** save_sp, void* load_sp): pushes the callee-saved
// registers and the x87/SSE control words, stores the stack pointer, loads the
// other one and pops the same in reverse. A new fiber's stack is laid out as if
// it had called fd_emu_switch from fd_emu_fiber_start, with the entry in r12
// and its argument in r13.
asm(R"(
  .text
  .p2align 4
  .type fd_emu_switch,@function
fd_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  fnstcw (%rsp)
  stmxcsr 8(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  fldcw (%rsp)
  ldmxcsr 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fd_emu_switch,.-fd_emu_switch

  .p2align 4
  .type fd_emu_fiber_start,@function
fd_emu_fiber_start:
  movq %r13, %rdi
  callq *%r12
  ud2
  .size fd_emu_fiber_start,.-fd_emu_fiber_start
)");

extern "C" void fd_emu_switch(void** save_sp, void* load_sp);
extern "C" void fd_emu_fiber_start();

namespace fastdice {
namespace emu {

void make_fiber(FiberContext& to, char* stack, size_t size, void (*entry)(void*), void* arg) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  // After the switch pops 16 + 6 * 8 bytes and `ret` pops the start address,
  // rsp must be 16-byte aligned for fd_emu_fiber_start's call.
  uint64_t* sp = reinterpret_cast<uint64_t*>(top - 88);
  uint16_t fpu_cw;
  uint32_t mxcsr;
  asm volatile("fnstcw %0" : "=m"(fpu_cw));
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  std::memset(sp, 0, 88);
  std::memcpy(reinterpret_cast<char*>(sp), &fpu_cw, sizeof(fpu_cw));
  std::memcpy(reinterpret_cast<char*>(sp) + 8, &mxcsr, sizeof(mxcsr));
  sp[2] = 0;                                             // r15
  sp[3] = 0;                                             // r14
  sp[4] = reinterpret_cast<uint64_t>(arg);               // r13
  sp[5] = reinterpret_cast<uint64_t>(entry);             // r12
  sp[6] = 0;                                             // rbx
  sp[7] = 0;                                             // rbp
  sp[8] = reinterpret_cast<uint64_t>(&fd_emu_fiber_start);  // return address
  to.sp = sp;
}

void switch_fiber(FiberContext& from, FiberContext& to) { fd_emu_switch(&from.sp, to.sp); }

}  // namespace emu
}  // namespace fastdice

#else

namespace fastdice {
namespace emu {

void make_fiber(FiberContext& to, char* stack, size_t size, void (*entry)(void*), void* arg) {
  getcontext(&to.uc);
  to.uc.uc_stack.ss_sp = stack;
  to.uc.uc_stack.ss_size = size;
  to.uc.uc_link = nullptr;
  // makecontext passes ints only: the pointers travel as 32-bit halves.
  struct Start {
    static void run(int ehi, int elo, int ahi, int alo) {
      auto e = reinterpret_cast<void (*)(void*)>((uintptr_t(unsigned(ehi)) << 32) | unsigned(elo));
      auto a = reinterpret_cast<void*>((uintptr_t(unsigned(ahi)) << 32) | unsigned(alo));
      e(a);
    }
  };
  const uintptr_t e = reinterpret_cast<uintptr_t>(entry), a = reinterpret_cast<uintptr_t>(arg);
  makecontext(&to.uc, reinterpret_cast<void (*)()>(&Start::run), 4, int(e >> 32), int(e & 0xffffffffu),
              int(a >> 32), int(a & 0xffffffffu));
}

void switch_fiber(FiberContext& from, FiberContext& to) { swapcontext(&from.uc, &to.uc); }

}  // namespace emu
}  // namespace fastdice

#endif
