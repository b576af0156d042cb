// The CPU forward kernels (forward_kernels.h) compiled for AVX2 + FMA.
#define FD_CPU_KERNELS_HEADER "forward_kernels.h"
#include "isa_avx2_unit.h"
