// The CUDA file compiled for the emulator (see ../cuda_emulation.h).
#include "../../cuda/dice_stats_backward_kernel.cu"
