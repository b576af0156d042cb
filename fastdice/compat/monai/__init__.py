"""Drop-in replacements for MONAI 1.6's ``monai.losses.DiceLoss``,
``GeneralizedDiceLoss``, ``TverskyLoss``, ``DiceCELoss``, ``DiceFocalLoss``
and ``GeneralizedDiceFocalLoss``, computed by the fused
``fastdice::dice_stats`` op.

Same constructor signatures, defaults, attributes (``class_weight`` buffer
included), warnings, exception types and numbers (values and input gradients)
as MONAI 1.6.1; MONAI itself does not need to be installed. Every N-sized step
(activation, one-hot, products, sums over space) is one pass of the op;
everything after it is O(B*C) arithmetic that mirrors MONAI's formulas line by
line on the pooled statistics.

How MONAI's pipeline maps onto the op:

* ``sigmoid`` / ``softmax`` are fused in the kernel (softmax over all channels,
  before the background channel is dropped, as in MONAI).
* ``to_onehot_y=True`` passes the ``(B, 1, *spatial)`` label map to the op as
  is; no one-hot tensor is ever built. A floating-point or bool label map is
  converted to int64 first (``.long()``, truncation, as MONAI's ``one_hot``).
* ``include_background=False`` computes statistics on all channels, then drops
  class 0 from them.
* ``ignore_index`` with a label map (``to_onehot_y=True``, C > 1) is the op's
  own ``ignore_index``: those positions leave every statistic and get zero
  gradient, exactly what MONAI's mask ``target != ignore_index`` does. An
  in-range ignored class keeps an all-zero channel that still counts in the
  mean, as in MONAI.

Fallbacks (documented, exact, but not fused):

* ``other_act``: the callable is applied in PyTorch, then the op runs with
  activation ``"none"``.
* ``ignore_index`` with a dense target (one-hot / soft targets with C > 1, or
  any target with C == 1): MONAI multiplies the activated input and the target
  by a mask built from the target (``1 - target[:, ignore_index]`` for an
  in-range index, ``target.sum(1) > 0`` for a sentinel, ``target !=
  ignore_index`` for a single channel), which can be fractional for soft
  targets. This is emulated in PyTorch: activation, mask and the two products
  are input-sized temporaries, then the op runs with activation ``"none"``.
* The focal term of ``DiceFocalLoss`` / ``GeneralizedDiceFocalLoss`` with
  ``reduction='none'``, and in eager mode for inputs of at most
  ``EXACT_FOCAL_MAX_NUMEL`` (4096) elements: MONAI's FocalLoss op for op in
  PyTorch, the same float32 bits as MONAI (a fused sum cannot reproduce
  MONAI's float32 rounding, which MONAI's own tests compare to rtol=1e-7).

Differences from MONAI (all raise, none silently changes a number):

* Dense targets must lie in [0, 1] (``ValueError`` from the op); MONAI accepts
  any values.
* A label (``to_onehot_y=True``) outside ``[0, C)`` that is not
  ``ignore_index`` raises ``ValueError``; MONAI's ``one_hot`` raises
  ``RuntimeError`` (scatter index out of bounds) on CPU and a device-side
  assert on CUDA.
* A floating-point label map with ``ignore_index`` must be integer-valued
  (``ValueError``); MONAI compares the raw float against ``ignore_index`` but
  one-hot-encodes the truncated value, which the op cannot express.
* The result is float32 (float64 for float64 input) whatever the input
  precision: float16/bfloat16 inputs are accumulated in float32 (MONAI
  computes and returns them in the input's precision). A float32 input with a
  float64 target gives a float32 result (MONAI promotes to float64).
* Sums are accumulated in the input's precision (float32 or float64) even for
  a lower-precision dense target; MONAI sums a float32 target in float32 even
  for a float64 input (differences of float32 rounding size, soft targets only).

TorchScript: TorchScript cannot compile the fused path's Python (module
objects passed to helpers, ``**`` options, the weight-check cache, frame-walking
warnings, ...). ``torch.jit.script`` of one of these classes therefore gives
the scripted ``monai.losses.<Name>`` (MONAI's own, unfused module) built with
the same constructor arguments and the same buffers (``class_weight``, ...):
the same semantics, MONAI's speed. This needs monai installed (``RuntimeError``
otherwise); the fused module itself is for eager mode, ``torch.compile`` and
``torch.export``. See ``__prepare_scriptable__``. ``MaskedDiceLoss`` is not
scriptable (``RuntimeError``): neither is MONAI's.
"""

from .dice import (
    DiceCELoss,
    DiceFocalLoss,
    DiceLoss,
    GeneralizedDiceFocalLoss,
    GeneralizedDiceLoss,
    MaskedDiceLoss,
)
from .focal import EXACT_FOCAL_MAX_NUMEL
from .metrics import DiceMetric, GeneralizedDiceScore, MeanIoU  # monai.metrics' drop-ins
from .tversky import TverskyLoss

# The losses only: tests/monai_upstream patches monai.losses with the names listed here.
__all__ = [
    "DiceLoss", "MaskedDiceLoss", "GeneralizedDiceLoss", "TverskyLoss", "DiceCELoss", "DiceFocalLoss",
    "GeneralizedDiceFocalLoss",
]
