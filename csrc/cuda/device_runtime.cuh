// The one seam between the CUDA kernels and what runs them.
//
// Kernels and their host wrappers reach the CUDA runtime only through the
// names below (and the CUDA built-ins: threadIdx, __syncthreads, warp
// shuffles and votes, atomicAdd, cudaFuncGetAttributes, ...). A real build
// (nvcc) maps them onto CUDA and c10::cuda. The emulation build
// (FASTDICE_EMULATION, host C++ compiler) maps them onto
// csrc/emulation/cuda_emulation.h, which runs every CUDA thread as a fiber
// over CPU tensors, so the same kernel text and the same host launch code are
// executed in CI on machines without a GPU (tests/test_emulation.py).
#pragma once

#if defined(FASTDICE_EMULATION)

#include "../emulation/cuda_emulation.h"

#else

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>

#include "../launch_log.h"

namespace fastdice {
namespace cuda {

using DeviceGuard = c10::cuda::CUDAGuard;

inline cudaStream_t current_stream(int device = -1) {
  return device < 0 ? c10::cuda::getCurrentCUDAStream().stream() : c10::cuda::getCurrentCUDAStream(device).stream();
}

// Whether a tensor lives where these kernels run.
inline bool on_kernel_device(const at::Tensor& t) { return t.is_cuda(); }

// gridDim.y (and z) limit of every CUDA device since compute capability 3.0.
inline int64_t max_grid_y() { return 65535; }

}  // namespace cuda
}  // namespace fastdice

// Launches `kernel` (a variable holding the __global__ function, so that a
// template id's commas stay out of the macro) and checks the launch. The
// launching function's name and template arguments go to the launch log
// (launch_log.h) when a test has enabled it.
#define FD_LAUNCH_KERNEL(kernel, grid, block, shared_bytes, stream, ...)        \
  do {                                                                          \
    ::fastdice::LaunchLog::instance().record(__FILE__, __PRETTY_FUNCTION__);    \
    kernel<<<(grid), (block), (shared_bytes), (stream)>>>(__VA_ARGS__);         \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                             \
  } while (0)

// The block's dynamic shared memory, 16-byte aligned; its size is the launch's.
#define FD_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]

// One variable in the block's static shared memory.
#define FD_STATIC_SHARED(type, name) __shared__ type name

// The registration block of a .cu file's ops for tensors on the kernels' device.
#define FD_REGISTER_DEVICE_KERNELS(m) TORCH_LIBRARY_IMPL(fastdice, CUDA, m)

#endif
