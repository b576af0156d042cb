// The CUDA built-ins and runtime calls fastdice's kernels use, for a host C++
// compiler: the emulation side of csrc/cuda/device_runtime.cuh.
//
// Each CUDA thread of a block runs as a fiber with its own stack (scheduler.cpp).
// __syncthreads, the warp shuffles and votes and cub::BlockReduce are real
// rendezvous: a thread blocks until every thread it waits for has arrived at
// the same call site, and the emulator reports divergence (threads at
// different barriers, a lane missing from a shuffle, a thread that exits while
// others wait) and deadlock instead of hanging. Launch limits (threads per
// block, grid size, shared memory and its opt-in) are checked as the driver
// would; freshly allocated tensors and shared memory are poisoned, and every
// allocation and the dynamic shared memory sit against guard pages.
//
// What this cannot show: the memory model (a fiber's writes are visible to
// the others at once), real concurrency between blocks (they run one after
// another), timing, and the GPU's floating-point contractions (FMA).
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>

#include "../launch_log.h"

// The float overloads that CUDA's math library has in the global namespace.
using std::exp;
using std::log;
using std::log1p;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

// The running fiber's coordinates; the scheduler sets them at every switch.
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

typedef struct fd_emulated_stream* cudaStream_t;
enum cudaError_t : int { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaDeviceAttr : int { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct cudaFuncAttributes {
  size_t sharedSizeBytes;
  size_t constSizeBytes;
  size_t localSizeBytes;
  int maxThreadsPerBlock;
  int numRegs;
  int maxDynamicSharedSizeBytes;
};

namespace fastdice {
namespace emu {

#define FD_EMU_SITE const char *file = __builtin_FILE(), int line = __builtin_LINE()

enum class WarpOp : int { kShflXor, kShflDown, kShflUp, kShfl, kBallot, kSyncWarp };

// Blocks the calling fiber until its block (or its warp's lanes in mask)
// arrives at the same site; returns the exchanged value.
int block_barrier(int predicate, int mode, const char* file, int line);  // mode 0 plain, 1 or, 2 and, 3 count
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int param, int width, const char* file, int line);
// A cub collective on `storage`: reports reuse of its temp storage without a
// barrier since the previous collective on it.
void enter_block_collective(const void* storage, const char* what);
// Per-block scratch for a collective on `storage` (the emulator's, not shared memory).
void* collective_scratch(const void* storage, size_t bytes);
void fail(const char* message);
int linear_thread_index();

void* dynamic_shared_base();
void* static_shared(const void* tag, size_t bytes, size_t align);

struct DeviceLimits {
  int64_t max_grid_y;
  int64_t max_shared_optin;   // bytes per block, static + dynamic, after opt-in
  int64_t default_shared;     // dynamic bytes allowed without opt-in
};
const DeviceLimits& device_limits();

cudaError_t func_attributes(cudaFuncAttributes* attr, const void* kernel);
cudaError_t set_func_attribute(const void* kernel, cudaFuncAttribute attr, int value);

using ThreadBody = void (*)(void*);
void run_kernel(const char* file, int line, const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared,
                ThreadBody body, void* context);

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value, "shuffle of a wide type");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// Every argument converted to the kernel's parameter type once, as CUDA
// copies the parameters at launch; each thread then gets its own copy.
template <typename... Params, typename... Args>
void launch(const char* file, int line, void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_shared,
            cudaStream_t, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kernel launched with the wrong number of arguments");
  using Tuple = std::tuple<std::decay_t<Params>...>;
  struct Context {
    void (*kernel)(Params...);
    Tuple params;
  };
  Context context{kernel, Tuple(static_cast<std::decay_t<Params>>(std::forward<Args>(args))...)};
  run_kernel(
      file, line, reinterpret_cast<const void*>(kernel), grid, block, dynamic_shared,
      [](void* c) {
        auto* ctx = static_cast<Context*>(c);
        Tuple copy = ctx->params;
        std::apply(ctx->kernel, copy);
      },
      &context);
}

// Registers a .cu file's host wrappers as ops of the emulation library
// (fastdice_emu::<name>, CPU tensors). Each call runs with guarded, poisoned
// allocations (guarded_memory.cpp's DeviceMemoryScope).
struct DeviceMemoryScope {
  DeviceMemoryScope();
  ~DeviceMemoryScope();
  DeviceMemoryScope(const DeviceMemoryScope&) = delete;
  DeviceMemoryScope& operator=(const DeviceMemoryScope&) = delete;
};

class Registrar {
 public:
  explicit Registrar(torch::Library& lib) : lib_(lib) {}
  template <typename R, typename... Args>
  void impl(const char* name, R (*fn)(Args...)) {
    lib_.def(name, [fn](Args... args) -> R {
      DeviceMemoryScope scope;
      return fn(std::forward<Args>(args)...);
    });
  }

 private:
  torch::Library& lib_;
};

}  // namespace emu
}  // namespace fastdice

// ---- CUDA built-ins ------------------------------------------------------

inline void __syncthreads(FD_EMU_SITE) { fastdice::emu::block_barrier(0, 0, file, line); }
inline int __syncthreads_or(int p, FD_EMU_SITE) { return fastdice::emu::block_barrier(p, 1, file, line); }
inline int __syncthreads_and(int p, FD_EMU_SITE) { return fastdice::emu::block_barrier(p, 2, file, line); }
inline int __syncthreads_count(int p, FD_EMU_SITE) { return fastdice::emu::block_barrier(p, 3, file, line); }

inline void __syncwarp(unsigned mask = 0xffffffffu, FD_EMU_SITE) {
  fastdice::emu::warp_collective(fastdice::emu::WarpOp::kSyncWarp, mask, 0, 0, 32, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int p, FD_EMU_SITE) {
  return unsigned(fastdice::emu::warp_collective(fastdice::emu::WarpOp::kBallot, mask, p != 0, 0, 32, file, line));
}
inline int __any_sync(unsigned mask, int p, FD_EMU_SITE) { return __ballot_sync(mask, p, file, line) != 0u; }
inline int __all_sync(unsigned mask, int p, FD_EMU_SITE) { return __ballot_sync(mask, p, file, line) == mask; }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, FD_EMU_SITE) {
  using namespace fastdice::emu;
  return from_bits<T>(warp_collective(WarpOp::kShflXor, mask, to_bits(v), lane_mask, width, file, line));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, FD_EMU_SITE) {
  using namespace fastdice::emu;
  return from_bits<T>(warp_collective(WarpOp::kShflDown, mask, to_bits(v), int(delta), width, file, line));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, FD_EMU_SITE) {
  using namespace fastdice::emu;
  return from_bits<T>(warp_collective(WarpOp::kShflUp, mask, to_bits(v), int(delta), width, file, line));
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32, FD_EMU_SITE) {
  using namespace fastdice::emu;
  return from_bits<T>(warp_collective(WarpOp::kShfl, mask, to_bits(v), src_lane, width, file, line));
}

// Fibers of one OS thread never run at the same time: a plain update is atomic.
template <typename T>
T atomicAdd(T* address, T v) {
  const T old = *address;
  *address = old + v;
  return old;
}

// ---- CUDA runtime ----------------------------------------------------------

template <typename Kernel>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, Kernel kernel) {
  return fastdice::emu::func_attributes(attr, reinterpret_cast<const void*>(kernel));
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel kernel, cudaFuncAttribute attr, int value) {
  return fastdice::emu::set_func_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  if (attr != cudaDevAttrMaxSharedMemoryPerBlockOptin) return cudaErrorInvalidValue;
  *value = int(fastdice::emu::device_limits().max_shared_optin);
  return cudaSuccess;
}

#define C10_CUDA_CHECK(expr)                                                                 \
  do {                                                                                       \
    const cudaError_t fd_emu_status = (expr);                                                \
    TORCH_CHECK(fd_emu_status == cudaSuccess, "emulated CUDA error ", int(fd_emu_status),   \
                " from ", #expr);                                                            \
  } while (0)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)

// ---- cub::BlockReduce ------------------------------------------------------

namespace cub {

// cub's contract, checked: every thread of the block calls it, the aggregate
// is defined in thread 0 only (the others get a poison value), and the temp
// storage is reused only after a barrier.
template <typename T, int kBlockDimX, int kAlgorithm = 0, int kBlockDimY = 1, int kBlockDimZ = 1>
class BlockReduce {
  static constexpr int kThreads = kBlockDimX * kBlockDimY * kBlockDimZ;

 public:
  // The size of cub's own (warp-reductions algorithm), so that the kernels'
  // static shared memory, and with it the class limits, are as on the GPU;
  // the emulation keeps each thread's value in a scratch of its own.
  struct TempStorage {
    T warp_aggregate[kThreads / 32 + 1];
  };
  explicit BlockReduce(TempStorage& storage) : storage_(storage) {}

  T Sum(T v, FD_EMU_SITE) {
    return Reduce(v, [](const T& a, const T& b) { return a + b; }, file, line);
  }

  template <typename Op>
  T Reduce(T v, Op op, FD_EMU_SITE) {
    using namespace fastdice::emu;
    if (int64_t(blockDim.x) * blockDim.y * blockDim.z != kThreads) fail("cub::BlockReduce: block size differs");
    enter_block_collective(&storage_, "cub::BlockReduce");
    const int t = linear_thread_index();
    T* slot = static_cast<T*>(collective_scratch(&storage_, sizeof(T) * kThreads));
    slot[t] = v;
    std::memcpy(&storage_.warp_aggregate[t / 32], &v, sizeof(T));  // touches the storage as cub does
    block_barrier(0, 0, file, line);
    if (t != 0) return poison();
    // A fixed pairwise order, as a tree of warp reductions would give.
    T partial[kThreads];
    for (int i = 0; i < kThreads; ++i) partial[i] = slot[i];
    for (int width = 1; width < kThreads; width *= 2) {
      for (int i = 0; i + width < kThreads; i += 2 * width) partial[i] = op(partial[i], partial[i + width]);
    }
    return partial[0];
  }

 private:
  static T poison() {
    if constexpr (std::is_floating_point<T>::value) return std::numeric_limits<T>::quiet_NaN();
    else return static_cast<T>(0x5a5a5a5a5a5a5a5aull);
  }
  TempStorage& storage_;
};

}  // namespace cub

// ---- The seam (device_runtime.cuh) -----------------------------------------

namespace fastdice {
namespace cuda {

struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
inline cudaStream_t current_stream(int = -1) { return nullptr; }
// The emulated device runs over CPU tensors.
inline bool on_kernel_device(const at::Tensor& t) { return t.is_cpu(); }
inline int64_t max_grid_y() { return emu::device_limits().max_grid_y; }

}  // namespace cuda
}  // namespace fastdice

#define FD_LAUNCH_KERNEL(kernel, grid, block, shared_bytes, stream, ...)                                          \
  do {                                                                                                             \
    ::fastdice::LaunchLog::instance().record(__FILE__, __PRETTY_FUNCTION__);                                       \
    ::fastdice::emu::launch(__FILE__, __LINE__, kernel, dim3(grid), dim3(block), (shared_bytes), (stream), __VA_ARGS__); \
  } while (0)

#define FD_DYNAMIC_SHARED(type, name) type* const name = static_cast<type*>(::fastdice::emu::dynamic_shared_base())

#define FD_STATIC_SHARED(type, name)    \
  static const char fd_emu_tag_##name = 0; \
  type& name = *static_cast<type*>(::fastdice::emu::static_shared(&fd_emu_tag_##name, sizeof(type), alignof(type)))

// The op namespace: fastdice_emu, or fastdice_emu_profile for the profiling
// build (fastdice_dev/emulation.py), so that both libraries load in one process.
#ifndef FD_EMU_NAMESPACE
#define FD_EMU_NAMESPACE fastdice_emu
#endif

#define FD_EMU_CONCAT_(a, b) a##b
#define FD_EMU_CONCAT(a, b) FD_EMU_CONCAT_(a, b)
#define FD_REGISTER_DEVICE_KERNELS(m)                                                          \
  static void FD_EMU_CONCAT(fd_emu_register_, __LINE__)(::fastdice::emu::Registrar&);          \
  TORCH_LIBRARY_FRAGMENT(FD_EMU_NAMESPACE, lib) {                                                \
    ::fastdice::emu::Registrar registrar(lib);                                                 \
    FD_EMU_CONCAT(fd_emu_register_, __LINE__)(registrar);                                      \
  }                                                                                            \
  static void FD_EMU_CONCAT(fd_emu_register_, __LINE__)(::fastdice::emu::Registrar & m)
