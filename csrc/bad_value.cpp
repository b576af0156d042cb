// The complete messages of the values the CPU kernels refuse (bad_value.h).
#include "bad_value.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace fastdice {
namespace {

std::string short_message(BadValueKind kind, double value, int64_t sample, int64_t cls, int64_t position) {
  std::ostringstream out;
  out << "fastdice: value " << value << " refused at sample " << sample;
  if (cls >= 0) out << ", class " << cls;
  out << ", flat position " << position << " (kind " << static_cast<int>(kind) << ")";
  return out.str();
}

// Python's tuple notation: (), (5,), (3, 4).
std::string tuple_text(const std::vector<int64_t>& values) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  if (values.size() == 1) out << ",";
  out << ")";
  return out.str();
}

std::string index_text(const std::vector<int64_t>& values) {
  std::ostringstream out;
  for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  return out.str();
}

// The spatial coordinates of a flat position over `spatial` (row-major).
std::vector<int64_t> unravel(int64_t flat, const std::vector<int64_t>& spatial) {
  std::vector<int64_t> coords(spatial.size(), 0);
  for (size_t i = spatial.size(); i-- > 0;) {
    const int64_t size = spatial[i];
    coords[i] = size ? flat % size : 0;
    flat = size ? flat / size : 0;
  }
  return coords;
}

std::string value_text(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

}  // namespace

BadValue::BadValue(BadValueKind kind, double value, int64_t sample, int64_t cls, int64_t position, int64_t limit,
                   bool has_ignore, bool regions)
    : c10::ValueError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                      short_message(kind, value, sample, cls, position)),
      kind(kind),
      value(value),
      sample(sample),
      cls(cls),
      position(position),
      limit(limit),
      has_ignore(has_ignore),
      regions(regions) {}

void raise_complete(const BadValue& bad, const at::Tensor& input, const at::Tensor& target) {
  const std::vector<int64_t> shape = input.sizes().vec();
  const std::vector<int64_t> spatial(shape.begin() + std::min<size_t>(2, shape.size()), shape.end());
  const int64_t num_classes = shape.size() > 1 ? shape[1] : 1;
  const std::vector<int64_t> coords = unravel(bad.position, spatial);
  const bool target_has_channel = target.dim() == input.dim();
  const std::string where = "spatial position " + tuple_text(coords) + " of " + tuple_text(spatial);
  // The index into target / input: (b, [c,] *coords).
  auto index = [&](bool with_channel, int64_t channel) {
    std::vector<int64_t> values{bad.sample};
    if (with_channel) values.push_back(channel);
    values.insert(values.end(), coords.begin(), coords.end());
    return index_text(values);
  };
  const std::string value = value_text(bad.value);
  std::ostringstream out;
  switch (bad.kind) {
    case BadValueKind::kLabel:
    case BadValueKind::kBinaryLabel: {
      out << "fastdice: target label " << static_cast<int64_t>(bad.value) << " at target["
          << index(target_has_channel, 0) << "] (sample " << bad.sample << ", " << where << ")";
      if (bad.kind == BadValueKind::kBinaryLabel) {
        out << " is not 0 or 1 in binary mode" << (bad.has_ignore ? " and is not ignore_index" : "");
        break;
      }
      out << " is outside [0, " << bad.limit << ")" << (bad.has_ignore ? " and is not ignore_index" : "")
          << (bad.regions ? " (labels of a region target)" : "");
      if (bad.limit == 1) {
        out << "; the input has a single channel, so there is one class: class indices need a model with one "
               "output channel per class (input (B, C, *spatial) with activation='softmax'), a binary task a "
               "0/1 mask of the input's shape with activation='sigmoid'";
      }
      break;
    }
    case BadValueKind::kProbability:
      out << "fastdice: with activation='none' the input must hold probabilities in [0, 1]; got " << value
          << " at input[" << index(true, bad.cls) << "] (sample " << bad.sample << ", class " << bad.cls << ", "
          << where << "). Logits? pass activation='sigmoid' (binary / multilabel) or 'softmax' (multiclass)";
      break;
    case BadValueKind::kMask:
      out << "fastdice: mask values must be 0 or 1; got " << value << " at sample " << bad.sample << ", " << where
          << " (a 0/255 mask? compare with > 0; soft weights are not a mask)";
      break;
    case BadValueKind::kDenseTarget:
    case BadValueKind::kBinaryDenseTarget: {
      out << (bad.kind == BadValueKind::kDenseTarget ? "fastdice: dense target values must lie in [0, 1]; got "
                                                     : "fastdice: a dense target of the confusion counts must hold "
                                                       "0 or 1; got ")
          << value << " at target[" << index(target_has_channel, bad.cls) << "] (sample " << bad.sample
          << ", class " << bad.cls << ", " << where << ")";
      const bool integral = std::isfinite(bad.value) && bad.value == std::floor(bad.value) && bad.value > 1;
      if (num_classes == 1 && integral) {
        out << ". The input has a single channel (shape " << tuple_text(shape)
            << "), so the target is read as a binary mask; class indices 0..K-1 need a model with K output "
               "channels (input (B, K, *spatial), activation='softmax') and the labels as an integer tensor "
               "(B, *spatial); for a binary task pass a 0/1 mask with activation='sigmoid'";
      } else if (bad.kind == BadValueKind::kDenseTarget) {
        out << " (a 0/255 mask? divide by 255; class indices? pass an integer label map of shape (B, *spatial))";
      } else {
        out << " (a 0/255 mask? divide by 255; soft labels? threshold them; class indices? pass an integer "
               "label map)";
      }
      break;
    }
  }
  // A label outside its range is an IndexError, so that Python can tell it from the other bad values by type
  // (fastdice.LabelOutOfRangeError: MONAI, smp and nnU-Net raise RuntimeError there, fastdice ValueError).
  if (bad.kind == BadValueKind::kLabel || bad.kind == BadValueKind::kBinaryLabel) TORCH_CHECK_INDEX(false, out.str());
  TORCH_CHECK_VALUE(false, out.str());
}

}  // namespace fastdice
