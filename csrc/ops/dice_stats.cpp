// The extension module (PyInit__C) and the schemas of fastdice::dice_stats and
// fastdice::dice_stats_backward (the other ops' schemas are in
// confusion_counts.cpp and dice_loss_from_stats.cpp). Kernels are registered
// per device where they are defined, in cpu/ and cuda/; autograd in
// dice_stats_autograd.cpp; fake (meta) kernels live in fastdice/_ops.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// An empty module so that `from fastdice import _C` loads this library and
// thereby registers the ops (the pattern of pytorch/extension-cpp).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(fastdice, m) {
  // stats[B, C, 11] (float32; float64 for float64 input): per (sample, class)
  // sum p*t, sum p, sum t, sum p^2, sum t^2, sum |p-t|, sum |p|, sum |t| and
  // the number of valid elements (those six only when full_stats is true, else
  // zero), then sum l and sum t*l of the per-element loss l that pixel_loss
  // selects ('none': zero; 'cross_entropy': -log softmax, or the softmax focal
  // term when focal_gamma > 0; 'binary_cross_entropy': BCE with logits, or the
  // sigmoid focal term). p = activation(input) over dim 1. target is dense
  // (input's shape) or an integer label map (B, *spatial) / (B, 1, *spatial).
  // mask (B, *spatial) / (B, 1, *spatial), bool / uint8 / floating 0-1: where
  // it is 0 a position adds to no statistic and gets zero gradient.
  // regions (one entry per input channel, with a label-map target): entry c
  // is the bit set of region c's labels (bit l: label l, l < 64); channel c's
  // target is 1 where the label belongs to region c (nnU-Net's regions).
  m.def(
      "dice_stats(Tensor input, Tensor target, str activation, bool full_stats, "
      "int? ignore_index, str pixel_loss=\"none\", float focal_gamma=0.0, Tensor? mask=None, "
      "int[]? regions=None) -> Tensor");
  // (grad_input, grad_target) for grad_stats[B, C, 11], recomputing the
  // activation from input. grad_target (a dense floating-point target's
  // gradient, in the target's dtype) only when target_grad is true, else an
  // empty tensor: the same pass writes both.
  m.def(
      "dice_stats_backward(Tensor grad_stats, Tensor input, Tensor target, str activation, "
      "bool full_stats, int? ignore_index, str pixel_loss=\"none\", float focal_gamma=0.0, "
      "bool target_grad=False, Tensor? mask=None, int[]? regions=None) -> (Tensor, Tensor)");
}
