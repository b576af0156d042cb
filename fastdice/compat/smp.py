"""Drop-in replacements for segmentation_models_pytorch 0.6's Dice-family losses.

``DiceLoss``, ``JaccardLoss`` and ``TverskyLoss`` take the constructor
arguments of ``segmentation_models_pytorch.losses`` (same names, order,
defaults and stored attributes: ``mode``, ``classes``, ``log_loss``,
``from_logits``, ``smooth``, ``ignore_index``, ``eps``, ``class_weights``;
Tversky's ``alpha``, ``beta``, ``gamma``) and return the same numbers and
input gradients. segmentation_models_pytorch does not need to be installed.

What smp computes, per class c, pooled over the batch and space (dims (0, 2)
of its (B, C, N) views)::

    I  = (sum p + sum t - sum |p - t|) / 2      # exact for soft targets too
    fp = sum p - I,  fn = sum t - I
    score = (I + smooth) / (I + alpha*fp + beta*fn + smooth).clamp_min(eps)
    loss  = -log(score.clamp_min(eps)) if log_loss else 1 - score
    loss *= (sum t > 0)                          # absent classes contribute 0
    loss  = loss[classes]                        # if classes is given
    out   = weighted mean (class_weights) or mean, Tversky: out ** gamma

(Dice: alpha = beta = 0.5, Jaccard: alpha = beta = 1.) The three sums come
from one call of the fused op ``fastdice::dice_stats`` (statistics 1, 2 and 5:
sum p, sum t, sum |p - t|) with the activation fused (from_logits: softmax
over dim 1 in multiclass mode, sigmoid otherwise); everything after the op is
O(B*C) torch arithmetic, differentiated by autograd, and the op's fused
backward gives the input gradient.

Fused (no N-sized temporaries):
  * every mode without ``ignore_index``;
  * multiclass mode with ``ignore_index`` and an integer label map: the op's
    own ignore_index (smp multiplies p and the one-hot target by the mask, so
    ignored positions add nothing and get zero gradient: the same thing).

Not fused, costs N-sized temporaries (the op still does the reductions):
  * binary and multilabel mode with ``ignore_index``: smp masks a *dense*
    target elementwise (``mask = y_true != ignore_index`` multiplies p and
    t), which the op's label-map ignore cannot express; p = activation(input)
    and the masked p, t are built in torch, then reduced by the op with
    activation 'none'.
  * multiclass mode with ``ignore_index`` and a float or bool label map: smp
    converts it with ``(y_true * mask).long()``; so do we (one int64 copy).

Differences from segmentation_models_pytorch 0.6 (everything else matches):
  * Dense targets (binary / multilabel mode) must lie in [0, 1] after the
    ignore mask: the op raises ValueError on CPU (on CUDA the loss comes out
    NaN) where smp silently computes with e.g. a 0/255 mask.
  * Labels outside [0, C) in multiclass mode raise an error that is both a
    RuntimeError (what smp's F.one_hot raises) and a ValueError (the op's
    type); on CUDA the loss comes out NaN instead of raising.
  * Multiclass label maps of any integer dtype (uint8, int16, int32, ...) are
    accepted without ``ignore_index``, where smp's F.one_hot accepts int64
    only; float and bool label maps without ``ignore_index`` raise
    RuntimeError as in smp.
  * ``classes`` / ``class_weights`` that are not a list, tuple, numpy array or
    tensor raise TypeError: smp's ``to_tensor`` returns None for them (an int
    ``classes=1`` silently means "all classes" there).
  * A target that requires grad raises ValueError: the op is differentiable
    with respect to the input only (smp would also differentiate the target).
  * float16 / bfloat16 inputs: the statistics and the epilogue are computed
    in float32 (smp works in the input dtype), then the loss is cast to the
    dtype smp returns (the input dtype, promoted with float32 when
    class_weights are given). More accurate, so not bit-identical.
  * smp's ``compute_score(output, target, ...)`` hook on N-sized tensors is
    not called (the score comes from the pooled statistics,
    ``score_from_stats``); ``aggregate_loss`` is called exactly as in smp.
  * Gradient at exact ties p == t: smp differentiates
    ``torch.linalg.vector_norm(p - t, ord=1)``, whose subgradient at 0 is
    sgn(0) = 0; the op's backward uses sign_of(p - t) with sign_of(0) = 0
    (csrc/dice_math.h, grad_wrt_prob) -- the same, so no difference.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from .. import functional as fd
from ..errors import LabelOutOfRangeError
from ..options import LABEL_DTYPES

__all__ = ["BINARY_MODE", "MULTICLASS_MODE", "MULTILABEL_MODE", "DiceLoss", "JaccardLoss", "TverskyLoss"]

BINARY_MODE: str = "binary"
MULTICLASS_MODE: str = "multiclass"
MULTILABEL_MODE: str = "multilabel"
_MODES = (BINARY_MODE, MULTILABEL_MODE, MULTICLASS_MODE)



def _to_tensor(x, dtype: torch.dtype, name: str) -> torch.Tensor:
    """smp's ``to_tensor`` for the types it converts; TypeError for the rest."""
    if isinstance(x, torch.Tensor):
        return x.type(dtype)
    if isinstance(x, (list, tuple)):
        return torch.as_tensor(x).type(dtype)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None and isinstance(x, np.ndarray):
        return torch.from_numpy(x).type(dtype)
    raise TypeError(
        f"fastdice.compat.smp: {name} must be a list, tuple, numpy array or tensor, got {type(x).__name__} "
        f"({x!r}); segmentation_models_pytorch would silently treat it as None"
    )


def _check_mode(mode) -> None:
    if not isinstance(mode, str) or mode not in _MODES:
        raise AssertionError(f"fastdice.compat.smp: mode must be one of {_MODES}, got {mode!r}")


def _reshaped_size(t: torch.Tensor, *shape) -> torch.Size:
    """``t.reshape(*shape).shape`` with reshape's errors, without touching t's data."""
    return torch.empty(t.shape, device="meta").reshape(*shape).shape


def _label_ignore_value(ignore_index, dtype: torch.dtype) -> Optional[int]:
    """The label value of an integer label map that ``labels != ignore_index``
    (smp's mask) treats as ignored, or None when no value of dtype matches.

    torch compares an integer tensor with an int scalar in the tensor's dtype
    (uint8 labels != -1 ignores 255); a float scalar compares as a float.
    """
    probe = torch.tensor([ignore_index]).to(dtype)
    if bool((probe != ignore_index).item()):
        return None
    return int(probe.item())


def _smp_output_dtype(input_dtype: torch.dtype, class_weights: Optional[torch.Tensor]) -> torch.dtype:
    if class_weights is None:
        return input_dtype
    return torch.promote_types(input_dtype, class_weights.dtype)


class _SmpSoftTverskyLoss(_Loss):
    """Shared implementation: smp's forward as one fused op call plus an O(C) epilogue."""

    def __init__(
        self,
        mode: str,
        classes: Optional[List[int]] = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        ignore_index: Optional[int] = None,
        eps: float = 1e-7,
        class_weights: Optional[List[float]] = None,
    ):
        _check_mode(mode)
        super().__init__()
        self.mode = mode
        if class_weights is not None and mode == BINARY_MODE:
            raise ValueError("class_weights are not supported with mode=binary")
        if classes is not None:
            if mode == BINARY_MODE:
                raise AssertionError("Masking classes is not supported with mode=binary (classes must be None)")
            classes = _to_tensor(classes, torch.long, "classes")
        self.classes = classes
        self.from_logits = from_logits
        self.smooth = smooth
        self.eps = eps
        self.log_loss = log_loss
        self.ignore_index = ignore_index
        self.class_weights = (
            _to_tensor(class_weights, torch.float, "class_weights") if class_weights is not None else None
        )

    # -- the per-class weights of fp and fn; overridden by the subclasses --
    def _fp_fn_weights(self):
        return 0.5, 0.5

    def pooled_stats(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """Statistics [C, NUM_STATS] pooled over batch and space, as smp's dims (0, 2)."""
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y_true, torch.Tensor):
            raise TypeError("fastdice.compat.smp: y_pred and y_true must be tensors")
        if y_true.size(0) != y_pred.size(0):
            raise AssertionError(
                f"fastdice.compat.smp: y_true and y_pred must have the same batch size, "
                f"got {y_true.size(0)} and {y_pred.size(0)}"
            )
        bs = y_true.size(0)
        num_classes = y_pred.size(1)  # smp reads it unconditionally (IndexError for 1-D y_pred)
        if self.mode == MULTICLASS_MODE:
            stats = self._multiclass_stats(y_pred, y_true, bs, num_classes)
        else:
            stats = self._dense_stats(y_pred, y_true, bs, num_classes)
        return stats.sum(0)

    def _check_same_size(self, pred_size, true_size) -> None:
        if pred_size != true_size:
            raise AssertionError(
                f"fastdice.compat.smp: y_pred and y_true do not match in mode {self.mode!r}: viewed as "
                f"{tuple(pred_size)} and {tuple(true_size)}"
            )

    def _dense_stats(self, y_pred, y_true, bs, num_classes):
        if self.mode == BINARY_MODE:
            view = (bs, 1, -1)
            # smp's (B, 1, N) view; a (B, 1, *spatial) input is used as it is (no copy).
            inp = y_pred if y_pred.dim() >= 2 and y_pred.size(1) == 1 else y_pred.reshape(bs, 1, -1)
        else:
            view = (bs, num_classes, -1)
            inp = y_pred
        self._check_same_size(_reshaped_size(y_pred, *view), _reshaped_size(y_true, *view))
        target = y_true if y_true.shape == inp.shape else y_true.reshape(inp.shape)
        if self.ignore_index is None:
            activation = "sigmoid" if self.from_logits else "none"
            return fd.dice_stats(inp, target, fd.peer_activation(activation), True, None)
        # Not fused: smp masks the dense target elementwise.
        p = F.logsigmoid(inp).exp() if self.from_logits else inp
        mask = target != self.ignore_index
        return fd.dice_stats(p * mask, target * mask, "identity", True, None)

    def _multiclass_stats(self, y_pred, y_true, bs, num_classes):
        # smp: y_pred viewed as (B, C, N), y_true as (B, N) labels.
        pred_size = _reshaped_size(y_pred, bs, num_classes, -1)
        true_size = _reshaped_size(y_true, bs, -1)
        self._check_same_size(pred_size, torch.Size((bs, num_classes, true_size[1])))
        inp = y_pred if y_pred.dim() >= 3 else y_pred.unsqueeze(-1)
        labels = y_true.reshape(bs, *inp.shape[2:])  # a label map (B, *spatial), never (B, 1, ...)
        op_ignore = None
        if labels.dtype in LABEL_DTYPES:
            if self.ignore_index is not None:
                op_ignore = _label_ignore_value(self.ignore_index, labels.dtype)
        elif self.ignore_index is None:
            raise RuntimeError(
                "fastdice.compat.smp: a multiclass target must be an integer label map (smp: one_hot is only "
                f"applicable to index tensor of type LongTensor), got dtype {labels.dtype}"
            )
        else:
            # Not fused: smp's conversion (y_true * mask).long() of a float / bool label map.
            mask = labels != self.ignore_index
            converted = (labels * mask).long()
            bad = mask & ((converted < 0) | (converted >= num_classes))
            if bool(bad.any()):
                raise LabelOutOfRangeError(
                    f"fastdice.compat.smp: multiclass target labels must lie in [0, {num_classes}) or equal "
                    f"ignore_index={self.ignore_index!r}; got {converted[bad][0].item()}"
                )
            labels = converted.masked_fill(~mask, -1)
            op_ignore = -1
        activation = "softmax" if self.from_logits else "none"
        return fd.dice_stats(inp, labels, fd.peer_activation(activation), True, op_ignore)

    def score_from_stats(self, s: torch.Tensor) -> torch.Tensor:
        """smp's soft_tversky_score from pooled statistics s[C, NUM_STATS]."""
        alpha, beta = self._fp_fn_weights()
        # smp's soft intersection (sum p + sum t - sum |p - t|) / 2, from the sums of p and t as they are.
        tp, fp, fn = fd.tp_fp_fn(s, "difference")
        return fd.tversky_score(tp, fp, fn, alpha, beta, self.smooth, self.smooth, min_denominator=self.eps)

    def aggregate_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Aggregate per-class losses into a single scalar (smp's rule)."""
        if self.class_weights is not None:
            weights = self.class_weights.to(loss.device)
            if self.classes is not None:
                weights = weights[self.classes]
            return (loss * weights).sum() / weights.sum()
        return loss.mean()

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        s = self.pooled_stats(y_pred, y_true)
        scores = self.score_from_stats(s)
        if self.log_loss:
            loss = -torch.log(scores.clamp_min(self.eps))
        else:
            loss = 1.0 - scores
        # smp: channels without true pixels contribute zero.
        loss = loss * (s[..., fd.SUM_T] > 0).to(loss.dtype)
        if self.classes is not None:
            loss = loss[self.classes]
        out = self.aggregate_loss(loss)
        return out.to(_smp_output_dtype(y_pred.dtype, self.class_weights))


class DiceLoss(_SmpSoftTverskyLoss):
    """segmentation_models_pytorch 0.6 ``DiceLoss``, fused.

    Args (as smp): mode ('binary' | 'multiclass' | 'multilabel'), classes,
    log_loss, from_logits, smooth, ignore_index, eps, class_weights.

    Fused: the activation (softmax / sigmoid when from_logits), sum p, sum t
    and sum |p - t| per (sample, class) in one pass of ``fastdice::dice_stats``
    and its backward in one pass; multiclass targets are read as label maps
    (never one-hot encoded) and multiclass ``ignore_index`` is the op's. Binary
    / multilabel ``ignore_index`` builds masked N-sized tensors (see the
    module docstring).
    """


class JaccardLoss(_SmpSoftTverskyLoss):
    """segmentation_models_pytorch 0.6 ``JaccardLoss`` (soft IoU), fused.

    Same arguments and fused path as :class:`DiceLoss`; the score is
    I / (I + fp + fn) instead of I / (I + (fp + fn) / 2).
    """

    def _fp_fn_weights(self):
        return 1.0, 1.0


class TverskyLoss(DiceLoss):
    """segmentation_models_pytorch 0.6 ``TverskyLoss``, fused.

    Same arguments and fused path as :class:`DiceLoss` plus alpha (weight of
    false positives), beta (of false negatives) and gamma (the aggregated loss
    is raised to the power gamma).
    """

    def __init__(
        self,
        mode: str,
        classes: Optional[List[int]] = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        ignore_index: Optional[int] = None,
        eps: float = 1e-7,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
        class_weights: Optional[List[float]] = None,
    ):
        _check_mode(mode)
        super().__init__(mode, classes, log_loss, from_logits, smooth, ignore_index, eps, class_weights)
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma

    def _fp_fn_weights(self):
        return self.alpha, self.beta

    def aggregate_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Aggregate per-class losses into a single scalar, raised to the power of gamma (smp's rule)."""
        return super().aggregate_loss(loss) ** self.gamma
