// The body of each dice_cpu_<part>_avx2.cpp: the kernel header it names in
// FD_CPU_KERNELS_HEADER compiled for AVX2 + FMA (8 floats per instruction),
// selected at run time only on processors that have them (dice_cpu_isa.h).
#if defined(__x86_64__) && defined(__GNUC__)
// Every header is included before the target pragma, so that inline code
// shared with other translation units is compiled for the baseline only.
#include "isa_prologue.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FD_CPU_ISA_NS avx2
#define FD_CPU_ISA_AVX2 1  // (the target pragma does not define __AVX2__)
#include FD_CPU_KERNELS_HEADER
#pragma GCC pop_options
#endif
