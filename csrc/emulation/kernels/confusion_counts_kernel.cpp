// The CUDA file compiled for the emulator (see ../cuda_emulation.h).
#include "../../cuda/confusion_counts_kernel.cu"
