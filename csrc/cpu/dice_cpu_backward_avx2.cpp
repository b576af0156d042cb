// The CPU backward kernels (backward_kernels.h) compiled for AVX2 + FMA.
#define FD_CPU_KERNELS_HEADER "backward_kernels.h"
#include "isa_avx2_unit.h"
