// The headers that the per-instruction-set kernel headers (vector_math.h,
// tile_loading.h, pixel_terms.h, softmax_label_kernels.h, forward_kernels.h,
// backward_kernels.h) need. Each dice_cpu_{forward,backward}_<isa>.cpp
// includes this before its `#pragma GCC target` (isa_avx2_unit.h), so that inline code shared
// with other translation units (ATen, the standard library) is compiled for
// the baseline only, and then the kernel header inside the pragma, with
// FD_CPU_ISA_NS naming a namespace of its own: each compilation has distinct
// symbols and the host wrappers pick one at run time (dice_cpu_isa.h).
//
// The kernels use tensors only through their data, strides and dtype: the
// core Tensor header, not ATen/ATen.h (every op's declaration, most of a
// translation unit's compile time).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#if defined(__x86_64__)
#include <immintrin.h>  // the AVX2 build's few intrinsics (under #if FD_CPU_ISA_AVX2)
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../dice_math.h"
#include "../dice_problem.h"
#include "../static_switch.h"
#include "chunk_reduction.h"
#include "dice_cpu_isa.h"
