// A value the CPU kernels refuse (a label outside its range, a probability,
// mask or dense-target value outside what the options allow) and where they
// met it. The kernels see the tensors as [B, C, S] views and know only the
// flat spatial position; the op's host wrapper, which holds the tensors'
// shapes, turns the BadValue into the complete message (target / input index,
// spatial coordinates, what to do) with raise_complete (bad_value.cpp), so
// that no caller has to parse or rebuild it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace fastdice {

enum class BadValueKind : int {
  kLabel,              // a label map entry outside [0, limit) that is not ignore_index
  kBinaryLabel,        // a label other than 0 / 1 (confusion counts, binary mode)
  kProbability,        // an input value outside [0, 1] with activation 'none'
  kMask,               // a mask value other than 0 / 1
  kDenseTarget,        // a dense target value outside [0, 1]
  kBinaryDenseTarget,  // a dense target value other than 0 / 1 (confusion counts)
};

// A c10::ValueError (Python: ValueError) whose own message names the flat
// position; raise_complete gives the one users see.
class BadValue : public c10::ValueError {
 public:
  BadValue(BadValueKind kind, double value, int64_t sample, int64_t cls, int64_t position, int64_t limit = 0,
           bool has_ignore = false, bool regions = false);

  BadValueKind kind;
  double value;
  int64_t sample;
  int64_t cls;       // -1 where the value has no class (labels, mask)
  int64_t position;  // flat position over the spatial axes
  int64_t limit;     // labels: valid labels are [0, limit)
  bool has_ignore;   // labels: an ignore_index was given
  bool regions;      // labels: of a region target
};

// Raises the complete message of `bad` for the op's arguments `input`
// (B, C, *spatial) and `target`: an IndexError for a label outside its range
// (Python turns it into fastdice.LabelOutOfRangeError), a ValueError otherwise.
[[noreturn]] void raise_complete(const BadValue& bad, const at::Tensor& input, const at::Tensor& target);

// Runs body(); a BadValue it throws is raised as its complete message.
template <typename F>
auto with_complete_errors(const at::Tensor& input, const at::Tensor& target, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const BadValue& bad) {
    raise_complete(bad, input, target);
  }
}

}  // namespace fastdice
