// The CPU kernels for any processor of the target architecture.
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

#define FD_CPU_ISA_NS baseline
#include "dice_cpu_kernels.h"
