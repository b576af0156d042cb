// fastdice_debug::launch_log: which CUDA kernel variants ran (csrc/launch_log.h).
// For tests that must know that a case ran the kernel it names; a library of
// its own, apart from the ops a user calls.
#include <torch/library.h>

#include "../launch_log.h"

namespace {

// The launches since the last call; recording continues only if `enable`.
std::vector<std::string> launch_log(bool enable) { return fastdice::LaunchLog::instance().take(enable); }

}  // namespace

TORCH_LIBRARY(fastdice_debug, m) { m.def("launch_log(bool enable) -> str[]", &launch_log); }
