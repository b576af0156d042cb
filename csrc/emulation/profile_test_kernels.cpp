// Kernels whose memory traffic is known exactly, compiled into the profiling
// build of the emulation library only (tests/test_gpu_model.py checks the
// profiler's counts against it): fastdice_emu_profile::access_pattern.
#include <ATen/ATen.h>

#include "cuda_emulation.h"

namespace {

constexpr int kThreads = 128;

// out[i] = in[i * stride + offset]: stride 1 coalesced, 32 one sector per lane.
__global__ void strided_copy_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t n, int64_t stride,
                                    int64_t offset) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i * stride + offset];
}

struct alignas(16) Float4 {
  float v[4];
};

// 16 bytes per lane, contiguous across the warp.
__global__ void vector_copy_kernel(const Float4* __restrict__ in, Float4* __restrict__ out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i];
}

// Every element read twice by the same thread (a re-read that L1 may serve), written once.
__global__ void reread_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  // volatile: two loads in the emulated build too, as two LDGs would be on the GPU.
  const float a = *reinterpret_cast<const volatile float*>(in + i);
  const float b = *reinterpret_cast<const volatile float*>(in + i);
  out[i] = a + b;
}

// Shared memory: each lane writes word threadIdx.x * stride of a float array and reads it back
// (stride 1: no conflict; 2: 2-way; 32: 32-way; 0: every lane the same word, a broadcast).
__global__ void shared_stride_kernel(float* __restrict__ out, int64_t stride) {
  using Tile = float[kThreads * 32];
  FD_STATIC_SHARED(Tile, tile);
  const int t = threadIdx.x;
  tile[t * stride] = float(t);
  __syncthreads();
  out[int64_t(blockIdx.x) * blockDim.x + t] = tile[t * stride];
}

at::Tensor access_pattern(const at::Tensor& input, std::string pattern, int64_t param) {
  TORCH_CHECK(input.scalar_type() == at::kFloat && input.is_contiguous(), "access_pattern: contiguous float input");
  const int64_t n_in = input.numel();
  if (pattern == "strided") {
    const int64_t stride = param;
    const int64_t n = (n_in - 1) / stride + 1;  // offset 0
    at::Tensor out = at::empty({n}, input.options());
    auto k = strided_copy_kernel;
    FD_LAUNCH_KERNEL(k, unsigned((n + kThreads - 1) / kThreads), kThreads, 0, nullptr, input.data_ptr<float>(),
                     out.data_ptr<float>(), n, stride, int64_t(0));
    return out;
  }
  if (pattern == "offset") {  // stride 1, shifted by param elements
    const int64_t n = n_in - param;
    at::Tensor out = at::empty({n}, input.options());
    auto k = strided_copy_kernel;
    FD_LAUNCH_KERNEL(k, unsigned((n + kThreads - 1) / kThreads), kThreads, 0, nullptr, input.data_ptr<float>(),
                     out.data_ptr<float>(), n, int64_t(1), param);
    return out;
  }
  if (pattern == "vector") {
    TORCH_CHECK(n_in % 4 == 0, "access_pattern: vector needs a multiple of 4 floats");
    at::Tensor out = at::empty_like(input);
    auto k = vector_copy_kernel;
    const int64_t n = n_in / 4;
    FD_LAUNCH_KERNEL(k, unsigned((n + kThreads - 1) / kThreads), kThreads, 0, nullptr,
                     reinterpret_cast<const Float4*>(input.data_ptr<float>()),
                     reinterpret_cast<Float4*>(out.data_ptr<float>()), n);
    return out;
  }
  if (pattern == "reread") {
    at::Tensor out = at::empty_like(input);
    auto k = reread_kernel;
    FD_LAUNCH_KERNEL(k, unsigned((n_in + kThreads - 1) / kThreads), kThreads, 0, nullptr, input.data_ptr<float>(),
                     out.data_ptr<float>(), n_in);
    return out;
  }
  if (pattern == "shared") {
    TORCH_CHECK(param >= 0 && param <= 32, "access_pattern: shared stride in [0, 32]");
    at::Tensor out = at::empty({n_in}, input.options());
    TORCH_CHECK(n_in % kThreads == 0, "access_pattern: shared needs a multiple of ", kThreads, " elements");
    auto k = shared_stride_kernel;
    FD_LAUNCH_KERNEL(k, unsigned(n_in / kThreads), kThreads, 0, nullptr, out.data_ptr<float>(), param);
    return out;
  }
  TORCH_CHECK(false, "access_pattern: unknown pattern '", pattern, "'");
}

}  // namespace

FD_REGISTER_DEVICE_KERNELS(m) {
  m.impl("access_pattern(Tensor input, str pattern, int param) -> Tensor", &access_pattern);
}
