// The CPU forward kernels (forward_kernels.h) for any processor of the target architecture.
#include "isa_prologue.h"

#define FD_CPU_ISA_NS baseline
#include "forward_kernels.h"
