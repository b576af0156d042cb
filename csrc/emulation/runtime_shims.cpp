// The CUDA runtime calls of the kernels' host code, emulated: the device's
// limits and each kernel's attributes (its static shared memory as measured at
// its launches, its dynamic shared-memory opt-in).
#include "emulator_state.h"

#include <cstring>
#include <map>

namespace fastdice {
namespace emu {
namespace detail {

KernelInfo& kernel_info(const void* kernel) {
  static std::map<const void*, KernelInfo> kernels;
  return kernels[kernel];
}

}  // namespace detail

using namespace detail;

const DeviceLimits& device_limits() { return g_config.limits; }

cudaError_t func_attributes(cudaFuncAttributes* attr, const void* kernel) {
  const KernelInfo& k = kernel_info(kernel);
  std::memset(attr, 0, sizeof(*attr));
  attr->sharedSizeBytes = k.static_shared;
  attr->maxThreadsPerBlock = kMaxThreadsPerBlock;
  attr->maxDynamicSharedSizeBytes = k.max_dynamic_shared < 0 ? int(g_config.limits.default_shared) : k.max_dynamic_shared;
  return cudaSuccess;
}

cudaError_t set_func_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  KernelInfo& k = kernel_info(kernel);
  if (value < 0 || int64_t(value) + int64_t(k.static_shared) > g_config.limits.max_shared_optin) return cudaErrorInvalidValue;
  k.max_dynamic_shared = value;
  return cudaSuccess;
}

}  // namespace emu
}  // namespace fastdice
