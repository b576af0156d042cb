// The CPU kernels compiled for AVX2 + FMA (8 floats per instruction),
// selected at run time only on processors that have them.
#if defined(__x86_64__) && defined(__GNUC__)
// Every header is included before the target pragma, so that inline code
// shared with other translation units is compiled for the baseline only.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../static_switch.h"
#include "chunk_reduction.h"
#include "dice_cpu_isa.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FD_CPU_ISA_NS avx2
#include "dice_cpu_kernels.h"
#pragma GCC pop_options
#endif
