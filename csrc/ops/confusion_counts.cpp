// Schema of fastdice::confusion_counts, the fused op behind fastdice.metrics.
// Kernels: cpu/confusion_counts_kernel.cpp, cuda/confusion_counts_kernel.cu;
// fake kernel in fastdice/_ops.py (the op is not differentiable).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastdice, m) {
  // counts[B, C, 3] (int64): per (sample, class) the true positives, false
  // positives and false negatives of hard predictions, in one pass over input
  // and target, without probabilities or one-hot tensors. mode:
  //   "multiclass": the prediction at a position is argmax over dim 1 (torch.argmax's rule)
  //   "multilabel": class c is predicted where input[:, c] > threshold
  //   "binary":     C == 1, predicted where input > threshold
  // threshold is in the input's units (a logit threshold for logits).
  // target: dense (input's shape, values exactly 0 or 1, any dtype) or an
  // integer label map (B, *spatial) / (B, 1, *spatial), values in [0, C)
  // ({0, 1} in binary mode) or ignore_index; ignored positions count nowhere.
  m.def("confusion_counts(Tensor input, Tensor target, str mode, float threshold, int? ignore_index) -> Tensor");
}
