"""Drop-in replacements for nnU-Net v2.8's losses (``nnunetv2.training.loss``).

``SoftDiceLoss``, ``MemoryEfficientSoftDiceLoss``, ``DC_and_CE_loss``,
``DC_and_BCE_loss`` and ``DeepSupervisionWrapper`` take nnunetv2 2.8.1's
constructor arguments (same names, order, defaults and stored attributes:
``apply_nonlin``, ``batch_dice``, ``do_bg``, ``smooth``, ``ddp``, ``clip_tp``;
``weight_ce``, ``weight_dice``, ``ignore_label``, ``use_ignore_label``,
``dc``, ``ce``; ``weight_factors``, ``loss``) and ``forward(x, y,
loss_mask=None)`` semantics, and return nnU-Net's numbers and input
gradients. nnunetv2 does not need to be installed.

What nnU-Net computes, per (sample b, class c), with p = apply_nonlin(x) and
g the one-hot target (a label map (B, 1, ...) or (B, ...) is one-hot
encoded, a target of x's shape is used as it is), m the loss mask::

    tp = sum m*p*g,  P = sum m*p,  G = sum m*g      (float32 sums)
    batch_dice: tp, P, G summed over the batch (and, with ddp, over the
                ranks: all-gathered, gradient all-reduced)
    clip_tp:    tp' = max(tp, clip_tp)  (SoftDiceLoss only)
    dc   = (2 tp' + smooth) / max(2 tp' + (P - tp) + (G - tp) + smooth, 1e-8)
    loss = -mean(dc over the classes kept by do_bg (and the samples))

``DC_and_CE_loss`` adds ``weight_ce`` x ``torch.nn.CrossEntropyLoss(**ce_kwargs)``
of the logits and ``target[:, 0]``, with ``ignore_label`` as the CE's
ignore_index and as the Dice's loss mask (``target != ignore_label``; the CE
is 0 when every position is ignored). ``DC_and_BCE_loss`` adds
``torch.nn.BCEWithLogitsLoss(**bce_kwargs)`` on region targets, with
``use_ignore_label`` reading the last target channel as "ignore".

Fused (one pass of ``fastdice::dice_stats`` forward, one backward; no one-hot
target, no probability tensor, no N-sized temporary):
  * the Dice statistics when ``apply_nonlin`` is nnU-Net's
    ``softmax_helper_dim1`` (or ours, or ``nn.Softmax(dim=1)``), ``torch.sigmoid``
    (``F.sigmoid``, ``torch.Tensor.sigmoid``, ``nn.Sigmoid()``) or None, with
    no ``loss_mask`` or a bool one of shape (B, 1, *spatial) (or (1, 1, ...)),
    which the op reads in place as its loss mask;
  * ``DC_and_CE_loss``: Dice and cross-entropy from the same pass
    (``pixel_loss='cross_entropy'``) with an integer or float label map
    (B, 1, ...), ``ignore_label`` as the op's ignore_index (it removes the
    position from every statistic and gives it zero gradient: exactly
    nnU-Net's mask), ``ce_kwargs`` weight / label_smoothing, reduction 'mean';
  * ``DC_and_BCE_loss``: Dice and BCE from the same pass
    (``pixel_loss='binary_cross_entropy'``) with dense region targets (float,
    bool or uint8, read in place), ``bce_kwargs`` empty or
    ``reduction='mean'``; with ``use_ignore_label`` the last target channel
    is read as the op's loss mask and the BCE is averaged over it;
  * the loss from the statistics is one op (``fastdice::dice_loss_from_stats``)
    when it is exactly nnU-Net's formula there: smooth >= 1e-8, no clip_tp, no
    ddp batch Dice, non-negative weights; otherwise a few O(B*C) tensor ops.

Not fused (exact eager computation, N-sized temporaries as in nnU-Net):
  * any other ``apply_nonlin`` callable;
  * a ``loss_mask`` that is not bool (nnU-Net multiplies by it, so a uint8
    0/255 or float mask weights positions): the masked sums are computed in
    torch;
  * the cross-entropy of ``DC_and_CE_loss`` with a one-hot target (nnU-Net
    then takes ``target[:, 0]`` as the labels), with ``ce_kwargs`` the op
    cannot express (reduction other than 'mean', an ignore_index other than
    ``ignore_label``, a weight that requires grad); the BCE with
    ``pos_weight`` / ``weight`` / reduction other than 'mean';
  * a ``dc`` or ``ce`` attribute replaced by the caller (the trainer's
    ``torch.compile(loss.dc)`` of one of our Dice losses is unwrapped and
    stays fused), and a ``dice_class`` that is neither ours nor nnunetv2's.

Differences from nnunetv2 2.8.1 (everything else matches):
  * ``do_bg=False`` with a single channel raises ValueError (nnU-Net returns
    the mean of an empty tensor, NaN).
  * Label values outside [0, C) (other than ``ignore_label``) raise
    ``LabelOutOfRangeError``, both a ValueError and a RuntimeError (nnU-Net's
    ``scatter_`` raises RuntimeError); on CUDA the fused loss comes out NaN.
    Dense targets must lie in [0, 1] (the op checks on CPU).
  * Float label maps must hold integer values (they are converted with
    ``.long()`` as nnU-Net does, before ``ignore_label`` is compared).
  * ``ce_kwargs`` / ``bce_kwargs`` are copied, not modified in place.
  * ``DeepSupervisionWrapper(loss, weight_factors=None)`` weighs every output
    by 1, as its docstring says (nnU-Net's constructor raises TypeError).
  * The Dice loss is computed in float32 for every input dtype, as nnU-Net
    does, but from statistics the op accumulates more accurately (float64
    for float64 inputs, then rounded): equal to nnU-Net's to float32
    precision, not bit-identical.
"""

import math
import numbers
import sys
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import functional as fd
from ..errors import LabelOutOfRangeError

__all__ = [
    "softmax_helper_dim1",
    "SoftDiceLoss",
    "MemoryEfficientSoftDiceLoss",
    "RobustCrossEntropyLoss",
    "DC_and_CE_loss",
    "DC_and_BCE_loss",
    "DeepSupervisionWrapper",
    "LabelOutOfRangeError",
]

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_CLAMP = 1e-8  # nnU-Net's floor of the Dice denominator


def softmax_helper_dim1(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the channel axis (nnU-Net's helper of the same name)."""
    return torch.softmax(x, 1)


def _nnunet_attr(module: str, name: str):
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def fused_activation(apply_nonlin) -> Optional[str]:
    """The op's activation equal to ``apply_nonlin``, or None when it is not one we know."""
    if apply_nonlin is None:
        return "none"
    if apply_nonlin is torch.sigmoid or apply_nonlin is F.sigmoid or apply_nonlin is torch.Tensor.sigmoid:
        return "sigmoid"
    if type(apply_nonlin) is nn.Sigmoid:
        return "sigmoid"
    if apply_nonlin is softmax_helper_dim1:
        return "softmax"
    theirs = _nnunet_attr("nnunetv2.utilities.helpers", "softmax_helper_dim1")
    if theirs is not None and apply_nonlin is theirs:
        return "softmax"
    if type(apply_nonlin) is nn.Softmax and apply_nonlin.dim == 1:
        return "softmax"
    return None


def _check_smooth(smooth) -> None:
    if isinstance(smooth, bool) or not isinstance(smooth, numbers.Real):
        raise TypeError(f"fastdice.compat.nnunet: smooth must be a number, got {smooth!r}")


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


def _as_channel_target(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """nnU-Net's rule: a target with one dimension less gets a channel axis of size 1."""
    if x.ndim != y.ndim:
        y = y.view((y.shape[0], 1, *y.shape[1:]))
    return y


def _op_target(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The target as the op reads it: x's shape -> dense (used as it is, as
    nnU-Net's ``y.to(float32)``); otherwise a label map (B, 1, ...) of an
    integer dtype (float -> ``.long()``, bool -> uint8, as nnU-Net's ``y.long()``)."""
    y = _as_channel_target(x, y)
    if y.shape == x.shape:
        if y.dtype.is_floating_point or y.dtype in (torch.bool, torch.uint8):
            return y
        return y.to(torch.float32)
    if y.dtype in _INTEGER_DTYPES:
        return y
    if y.dtype == torch.bool:
        return y.to(torch.uint8)
    return y.long()


def _check_input(x, y) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"fastdice.compat.nnunet: input and target must be tensors, got {type(x).__name__} and {type(y).__name__}"
        )
    if x.ndim < 2:
        raise ValueError(f"fastdice.compat.nnunet: input must have shape (B, C, *spatial), got {tuple(x.shape)}")


def _dice_stats(x, y, activation, ignore_index=None, pixel_loss="none", mask=None):
    return fd.dice_stats(x, y, fd.peer_activation(activation), False, ignore_index, pixel_loss, 0.0, mask)


# ---------------------------------------------------------------------------
# The Dice losses
# ---------------------------------------------------------------------------


def _op_loss_mask(x: torch.Tensor, mask) -> Optional[torch.Tensor]:
    """The op's loss mask for nnU-Net's loss_mask, or None where the op cannot be exact: a bool
    (B, 1, *spatial) mask (or (1, 1, ...) broadcast over the batch, read with stride 0). nnU-Net
    multiplies by the mask, so a uint8 0/255 or float mask weights positions: those go eager."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != x.dim():
        return None
    if mask.shape[1] != 1 or mask.shape[2:] != x.shape[2:] or mask.shape[0] not in (1, x.shape[0]):
        return None
    return mask.expand(x.shape[0], *mask.shape[1:])


def _detach_stat(stats: torch.Tensor, index: int) -> torch.Tensor:
    """stats with statistic `index` cut from the graph (nnU-Net computes it under no_grad)."""
    column = torch.zeros(stats.shape[-1], dtype=torch.bool, device=stats.device)
    column[index] = True
    return torch.where(column, stats.detach(), stats)


class _NnUNetDice(nn.Module):
    """Shared implementation of SoftDiceLoss and MemoryEfficientSoftDiceLoss."""

    #: SoftDiceLoss honours clip_tp; MemoryEfficientSoftDiceLoss has none.
    clip_tp: Optional[float] = None
    #: A target that requires grad: SoftDiceLoss differentiates sum(y) too,
    #: MemoryEfficientSoftDiceLoss computes it under no_grad (as nnU-Net's do).
    differentiates_sum_gt: bool = True

    def __init__(self, apply_nonlin: Callable = None, batch_dice: bool = False, do_bg: bool = True,
                 smooth: float = 1., ddp: bool = True):
        super().__init__()
        _check_smooth(smooth)
        self.do_bg = do_bg
        self.batch_dice = batch_dice
        self.apply_nonlin = apply_nonlin
        self.smooth = smooth
        self.ddp = ddp

    # -- configuration -------------------------------------------------------
    @property
    def activation(self) -> Optional[str]:
        """The fused activation of ``apply_nonlin`` (None: not fusable)."""
        return fused_activation(self.apply_nonlin)

    def _gathers(self) -> bool:
        return bool(self.ddp and self.batch_dice)

    def epilogue_fusable(self, activation: str) -> bool:
        """Whether fastdice::dice_loss_from_stats computes exactly this loss:
        the denominator is >= smooth >= 1e-8 (p >= 0 after an activation,
        dense targets in [0, 1]), so nnU-Net's clamp never acts."""
        return (
            activation in ("softmax", "sigmoid")
            and self.clip_tp is None
            and not self._gathers()
            and math.isfinite(self.smooth)
            and self.smooth >= _CLAMP
        )

    def _check_classes(self, num_classes: int) -> None:
        if not self.do_bg and num_classes < 2:
            raise ValueError(
                "fastdice.compat.nnunet: do_bg=False needs at least 2 channels (nnU-Net would average an empty "
                "tensor and return NaN)"
            )

    # -- the loss from statistics ------------------------------------------
    def loss_from_sums(self, tp: torch.Tensor, sum_pred: torch.Tensor, sum_gt: torch.Tensor) -> torch.Tensor:
        """nnU-Net's loss from per-(sample, class) float32 sums (B, C) (all classes)."""
        if not self.do_bg:
            tp, sum_pred, sum_gt = tp[:, 1:], sum_pred[:, 1:], sum_gt[:, 1:]
        if self.batch_dice:
            sums = torch.stack((tp, sum_pred, sum_gt)).sum(1)
            if self.ddp:
                sums = fd.all_reduce_stats(sums)
            tp, sum_pred, sum_gt = sums.unbind(0)
        if self.clip_tp is not None:
            tp_clipped = torch.clip(tp, min=self.clip_tp)
            denominator = 2 * tp_clipped + (sum_pred - tp) + (sum_gt - tp)
        else:
            tp_clipped = tp
            denominator = sum_pred + sum_gt
        dc = fd.dice_score(tp_clipped, denominator, self.smooth, self.smooth, min_denominator=_CLAMP)
        return -dc.mean()

    def epilogue_args(self, **second_term) -> tuple:
        """The epilogue op's arguments for this Dice term, mean(1 - dc) over the kept classes
        (and samples), plus ``second_term``'s options (lambda_dice, lambda_ce, ce_family, ...).
        nnU-Net's Dice loss is -mean(dc): the callers subtract the Dice term's weight."""
        return fd.epilogue_args(
            pooling="batch" if self.batch_dice else "sample", include_background=bool(self.do_bg),
            smooth_nr=self.smooth, smooth_dr=self.smooth, **second_term,
        )

    def loss_from_stats(self, stats: torch.Tensor, activation: str) -> torch.Tensor:
        """nnU-Net's loss (float32) from the op's statistics [B, C, NUM_STATS]."""
        self._check_classes(stats.shape[1])
        stats = stats.to(torch.float32)
        if self.epilogue_fusable(activation):
            return fd.dice_loss_from_stats(stats, args=self.epilogue_args()) - 1
        return self.loss_from_sums(stats[..., fd.TP], stats[..., fd.SUM_P], stats[..., fd.SUM_T])

    def _keeps_target_grad(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Whether nnU-Net's loss has a gradient in y: it builds its one-hot under
        no_grad, so only a float32 y of x's shape used as it is keeps one (for
        MemoryEfficientSoftDiceLoss only with do_bg, whose slicing is under no_grad)."""
        return y.dtype == torch.float32 and y.shape == x.shape and (self.differentiates_sum_gt or bool(self.do_bg))

    # -- eager (exact) path --------------------------------------------------
    def eager_sums(self, x, y, loss_mask):
        """tp, sum p, sum g per (sample, class) in float32, computed in torch
        (any apply_nonlin, any loss_mask)."""
        if self.apply_nonlin is not None:
            x = self.apply_nonlin(x)
        axes = tuple(range(2, x.ndim))
        y = _as_channel_target(x, y)
        if x.shape == y.shape:
            onehot = y.to(torch.float32)  # keeps a target's gradient, as nnU-Net's y_onehot = y
        else:
            with torch.no_grad():
                onehot = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
                onehot.scatter_(1, y.long(), 1)
        target = onehot if loss_mask is None else onehot * loss_mask
        if self.differentiates_sum_gt:
            sum_gt = target.sum(axes, dtype=torch.float32)
        else:
            with torch.no_grad():
                sum_gt = target.sum(axes, dtype=torch.float32)
        pred = x if loss_mask is None else x * loss_mask
        tp = (pred * onehot).sum(axes, dtype=torch.float32)
        sum_pred = pred.sum(axes, dtype=torch.float32)
        return tp, sum_pred, sum_gt

    def forward(self, x: torch.Tensor, y: torch.Tensor, loss_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_input(x, y)
        if y.requires_grad and not self._keeps_target_grad(x, y):
            y = y.detach()
        activation = self.activation
        op_mask = _op_loss_mask(x, loss_mask) if loss_mask is not None else None
        if activation is not None and (loss_mask is None or op_mask is not None):
            # A bool loss_mask is read by the op in place (nnU-Net multiplies by it: the same
            # sums); other masks may weight positions, so they take the eager path.
            stats = _dice_stats(x, _op_target(x, y), activation, mask=op_mask)
            if y.requires_grad and not self.differentiates_sum_gt:
                stats = _detach_stat(stats, fd.SUM_T)
            return self.loss_from_stats(stats, activation)
        self._check_classes(x.shape[1])
        return self.loss_from_sums(*self.eager_sums(x, y, loss_mask))

    def extra_repr(self) -> str:
        name = getattr(self.apply_nonlin, "__name__", type(self.apply_nonlin).__name__)
        parts = [f"apply_nonlin={name}", f"batch_dice={self.batch_dice}", f"do_bg={self.do_bg}",
                 f"smooth={self.smooth}", f"ddp={self.ddp}"]
        if self.clip_tp is not None:
            parts.append(f"clip_tp={self.clip_tp}")
        return ", ".join(parts)


class SoftDiceLoss(_NnUNetDice):
    """nnunetv2 2.8 ``SoftDiceLoss``, fused (see the module docstring).

    Args (as nnU-Net): apply_nonlin, batch_dice, do_bg, smooth, ddp (all-gather
    the batch-Dice statistics over the default process group, with gradient),
    clip_tp (lower bound of tp in the numerator and in the 2*tp of the
    denominator). ``forward(x, y, loss_mask=None)``.
    """

    def __init__(self, apply_nonlin: Callable = None, batch_dice: bool = False, do_bg: bool = True,
                 smooth: float = 1., ddp: bool = True, clip_tp: float = None):
        super().__init__(apply_nonlin, batch_dice, do_bg, smooth, ddp)
        self.clip_tp = clip_tp


class MemoryEfficientSoftDiceLoss(_NnUNetDice):
    """nnunetv2 2.8 ``MemoryEfficientSoftDiceLoss``, fused: the same loss as
    :class:`SoftDiceLoss` without clip_tp (the one nnU-Net's trainer uses)."""

    differentiates_sum_gt = False


def _our_dice(module) -> Optional[_NnUNetDice]:
    """The Dice loss behind ``module`` when it is ours (also under torch.compile)."""
    if isinstance(module, _NnUNetDice):
        return module
    inner = getattr(module, "_orig_mod", None)  # torch.compile's OptimizedModule
    return inner if isinstance(inner, _NnUNetDice) else None


def _map_dice_class(dice_class):
    """nnunetv2's own Dice classes become ours; anything else is kept (and run eagerly)."""
    if dice_class is _nnunet_attr("nnunetv2.training.loss.dice", "SoftDiceLoss"):
        return SoftDiceLoss
    if dice_class is _nnunet_attr("nnunetv2.training.loss.dice", "MemoryEfficientSoftDiceLoss"):
        return MemoryEfficientSoftDiceLoss
    return dice_class


# ---------------------------------------------------------------------------
# Compound losses
# ---------------------------------------------------------------------------


class RobustCrossEntropyLoss(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` that takes a (B, 1, ...) target of any dtype
    (nnU-Net's ``RobustCrossEntropyLoss``)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == input.ndim:
            assert target.shape[1] == 1
            target = target[:, 0]
        return super().forward(input, target.long())


def _weight_ok(weight: float) -> bool:
    return not isinstance(weight, bool) and isinstance(weight, numbers.Real) and math.isfinite(weight) and weight >= 0


class DC_and_CE_loss(nn.Module):
    """nnunetv2 2.8 ``DC_and_CE_loss``: ``weight_ce * CE + weight_dice * Dice``
    with Dice and cross-entropy from ONE fused pass (see the module docstring).

    Args (as nnU-Net): soft_dice_kwargs (for ``dice_class``, whose apply_nonlin
    is the softmax), ce_kwargs (``torch.nn.CrossEntropyLoss``'s), weight_ce,
    weight_dice, ignore_label (label maps (B, 1, ...) only), dice_class
    (ours or nnunetv2's SoftDiceLoss / MemoryEfficientSoftDiceLoss are fused).
    """

    def __init__(self, soft_dice_kwargs, ce_kwargs, weight_ce=1, weight_dice=1, ignore_label=None,
                 dice_class=SoftDiceLoss):
        super().__init__()
        ce_kwargs = dict(ce_kwargs)
        if ignore_label is not None:
            ce_kwargs["ignore_index"] = ignore_label
        self.weight_dice = weight_dice
        self.weight_ce = weight_ce
        self.ignore_label = ignore_label
        self.ce = RobustCrossEntropyLoss(**ce_kwargs)
        self.dc = _map_dice_class(dice_class)(apply_nonlin=softmax_helper_dim1, **soft_dice_kwargs)

    def _ce_fusable(self) -> bool:
        ce = self.ce
        if type(ce) is not RobustCrossEntropyLoss or ce.reduction != "mean":
            return False
        if ce.ignore_index != (self.ignore_label if self.ignore_label is not None else -100):
            return False
        w = ce.weight
        return w is None or (w.dim() == 1 and not w.requires_grad)

    def _ignore_index(self) -> Optional[int]:
        il = self.ignore_label
        if il is None:
            return None
        if isinstance(il, bool) or not isinstance(il, numbers.Integral):
            if isinstance(il, numbers.Real) and float(il).is_integer():
                return int(il)
            raise ValueError(f"fastdice.compat.nnunet: ignore_label must be an integer label value, got {il!r}")
        return int(il)

    def _eager_ce(self, net_output, target):
        if self.weight_ce == 0:
            return 0
        if self.ignore_label is not None and not bool((target != self.ignore_label).any()):
            return 0  # nnU-Net: no foreground (non-ignored) position, no CE
        return self.ce(net_output, target[:, 0])

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_input(net_output, target)
        if target.ndim != net_output.ndim:
            # nnU-Net indexes target[:, 0] for the CE: a target without its channel axis fails there.
            raise ValueError(
                f"fastdice.compat.nnunet: DC_and_CE_loss needs a target of shape (B, 1, *spatial) or a one-hot "
                f"target of the input's shape, got {tuple(target.shape)} for input {tuple(net_output.shape)}"
            )
        if self.ignore_label is not None:
            assert target.shape[1] == 1, (
                "ignore label is not implemented for one hot encoded target variables (DC_and_CE_loss)"
            )
        dice = _our_dice(self.dc)
        label_map = target.shape != net_output.shape
        if dice is None or dice.activation != "softmax" or (self.ignore_label is not None and not label_map):
            return self._forward_eager(net_output, target)

        ignore_index = self._ignore_index()
        fuse_ce = label_map and self.weight_ce != 0 and self._ce_fusable()
        y = _op_target(net_output, target)
        stats = _dice_stats(net_output, y, "softmax", ignore_index, "cross_entropy" if fuse_ce else "none")
        num_classes = net_output.shape[1]
        dice._check_classes(num_classes)

        ce_weight = self.ce.weight
        if ce_weight is not None:
            if ce_weight.numel() != num_classes:
                raise ValueError(
                    f"fastdice.compat.nnunet: the CE weight has {ce_weight.numel()} entries but the input has "
                    f"{num_classes} classes"
                )
            ce_weight = ce_weight.to(device=stats.device, dtype=stats.dtype)
        if (
            fuse_ce
            and dice.epilogue_fusable("softmax")
            and _weight_ok(self.weight_dice)
            and _weight_ok(self.weight_ce)
        ):
            # weight_ce * CE + weight_dice * mean(1 - dc) in one op; nnU-Net's Dice term is -mean(dc).
            loss = fd.dice_loss_from_stats(stats, None, ce_weight, args=dice.epilogue_args(
                lambda_dice=float(self.weight_dice), lambda_ce=float(self.weight_ce), ce_family="cross_entropy",
                ce_label_map=True, ce_positions=0, label_smoothing=self.ce.label_smoothing,
            ))
            return loss - self.weight_dice if self.weight_dice != 0 else loss

        dc_loss = dice.loss_from_stats(stats, "softmax") if self.weight_dice != 0 else 0
        if fuse_ce:
            ce_loss = fd.pixel_loss_from_stats(
                stats, family="cross_entropy", label_map=True, positions=0, weight=ce_weight,
                label_smoothing=self.ce.label_smoothing,
            )
        else:
            ce_loss = self._eager_ce(net_output, target)
        return self.weight_ce * ce_loss + self.weight_dice * dc_loss

    def _forward_eager(self, net_output, target):
        """nnU-Net's forward with our modules called as they are (a replaced dc / ce, a one-hot target with ignore)."""
        if self.ignore_label is not None:
            mask = target != self.ignore_label
            target_dice = torch.where(mask, target, 0)
        else:
            target_dice, mask = target, None
        dc_loss = self.dc(net_output, target_dice, loss_mask=mask) if self.weight_dice != 0 else 0
        ce_loss = self._eager_ce(net_output, target)
        return self.weight_ce * ce_loss + self.weight_dice * dc_loss


class DC_and_BCE_loss(nn.Module):
    """nnunetv2 2.8 ``DC_and_BCE_loss``: ``weight_ce * BCE + weight_dice * Dice``
    on sigmoid logits and region targets (B, C, ...), fused in one pass when
    ``use_ignore_label`` is False (see the module docstring).

    Args (as nnU-Net): bce_kwargs (``torch.nn.BCEWithLogitsLoss``'s),
    soft_dice_kwargs, weight_ce, weight_dice, use_ignore_label (the last target
    channel marks ignored positions), dice_class.
    """

    def __init__(self, bce_kwargs, soft_dice_kwargs, weight_ce=1, weight_dice=1, use_ignore_label: bool = False,
                 dice_class=MemoryEfficientSoftDiceLoss):
        super().__init__()
        bce_kwargs = dict(bce_kwargs)
        if use_ignore_label:
            bce_kwargs["reduction"] = "none"
        self.weight_dice = weight_dice
        self.weight_ce = weight_ce
        self.use_ignore_label = use_ignore_label
        self.ce = nn.BCEWithLogitsLoss(**bce_kwargs)
        self.dc = _map_dice_class(dice_class)(apply_nonlin=torch.sigmoid, **soft_dice_kwargs)

    def _bce_fusable(self) -> bool:
        ce = self.ce
        return (
            type(ce) is nn.BCEWithLogitsLoss
            and ce.reduction == "mean"
            and ce.weight is None
            and ce.pos_weight is None
        )

    def _masked_bce_fusable(self) -> bool:
        """use_ignore_label: nnU-Net sets the BCE's reduction to 'none' and averages it over the mask."""
        ce = self.ce
        return type(ce) is nn.BCEWithLogitsLoss and ce.reduction == "none" and ce.weight is None and ce.pos_weight is None

    def _forward_ignore_channel(self, net_output, target, dice):
        """use_ignore_label, fused: the last target channel marks ignored positions, read as the
        op's loss mask; Dice and the masked BCE sum come from one pass."""
        ignored = target[:, -1:]
        mask = ~ignored if ignored.dtype == torch.bool else (1 - ignored).bool()  # nnU-Net's mask, (B, 1, ...)
        target_regions = target[:, :-1]
        fuse_ce = self._masked_bce_fusable()
        stats = _dice_stats(
            net_output, _op_target(net_output, target_regions), "sigmoid", None,
            "binary_cross_entropy" if fuse_ce else "none", mask=mask,
        )
        dice._check_classes(net_output.shape[1])
        dc_loss = dice.loss_from_stats(stats, "sigmoid")
        if fuse_ce:
            ce_sum = stats[..., fd.PIXEL_LOSS].sum(dtype=torch.float32)
            ce_loss = ce_sum / torch.clip(mask.sum(), min=1e-8)
        else:
            ce_loss = (self.ce(net_output, target_regions.float()) * mask).sum() / torch.clip(mask.sum(), min=1e-8)
        return self.weight_ce * ce_loss + self.weight_dice * dc_loss

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_input(net_output, target)
        dice = _our_dice(self.dc)
        if (
            self.use_ignore_label
            and dice is not None
            and dice.activation == "sigmoid"
            and target.shape[0] == net_output.shape[0]
            and target.shape[1] == net_output.shape[1] + 1
            and target.shape[2:] == net_output.shape[2:]
        ):
            return self._forward_ignore_channel(net_output, target, dice)
        if self.use_ignore_label or dice is None or dice.activation != "sigmoid" or target.shape != net_output.shape:
            return self._forward_eager(net_output, target)
        fuse_ce = self._bce_fusable()
        y = _op_target(net_output, target)
        stats = _dice_stats(net_output, y, "sigmoid", None, "binary_cross_entropy" if fuse_ce else "none")
        dice._check_classes(net_output.shape[1])
        positions = math.prod(net_output.shape[2:]) * net_output.shape[0]
        if fuse_ce and dice.epilogue_fusable("sigmoid") and _weight_ok(self.weight_dice) and _weight_ok(self.weight_ce):
            loss = fd.dice_loss_from_stats(stats, args=dice.epilogue_args(
                lambda_dice=float(self.weight_dice), lambda_ce=float(self.weight_ce),
                ce_family="binary_cross_entropy", ce_label_map=False, ce_positions=positions,
            ))
            # nnU-Net's BCE of (logits, target.float()) is float32 (torch returns the target's dtype).
            return (loss - self.weight_dice if self.weight_dice != 0 else loss).to(torch.float32)
        dc_loss = dice.loss_from_stats(stats, "sigmoid")
        if fuse_ce:
            ce_loss = fd.pixel_loss_from_stats(
                stats, family="binary_cross_entropy", label_map=False, positions=positions
            ).to(torch.float32)
        else:
            ce_loss = self.ce(net_output, target.float())
        return self.weight_ce * ce_loss + self.weight_dice * dc_loss

    def _forward_eager(self, net_output, target):
        """nnU-Net's forward with the Dice mask computed in torch (use_ignore_label, replaced modules)."""
        if self.use_ignore_label:
            if target.dtype == torch.bool:
                mask = ~target[:, -1:]
            else:
                mask = (1 - target[:, -1:]).bool()
            target_regions = target[:, :-1]
        else:
            target_regions, mask = target, None
        dc_loss = self.dc(net_output, target_regions, loss_mask=mask)
        target_regions = target_regions.float()
        if mask is not None:
            ce_loss = (self.ce(net_output, target_regions) * mask).sum() / torch.clip(mask.sum(), min=1e-8)
        else:
            ce_loss = self.ce(net_output, target_regions)
        return self.weight_ce * ce_loss + self.weight_dice * dc_loss


class DeepSupervisionWrapper(nn.Module):
    """nnunetv2 2.8 ``DeepSupervisionWrapper``: ``sum_i w_i * loss(*inputs_i)``
    over the entries of the tuple / list arguments, skipping w_i == 0.
    ``weight_factors=None`` weighs every output by 1."""

    def __init__(self, loss, weight_factors=None):
        super().__init__()
        if weight_factors is not None:
            assert any([x != 0 for x in weight_factors]), "At least one weight factor should be != 0.0"
            weight_factors = tuple(weight_factors)
        self.weight_factors = weight_factors
        self.loss = loss

    def forward(self, *args):
        assert all([isinstance(i, (tuple, list)) for i in args]), (
            f"all args must be either tuple or list, got {[type(i) for i in args]}"
        )
        weights = self.weight_factors if self.weight_factors is not None else (1,) * len(args[0])
        return sum([weights[i] * self.loss(*inputs) for i, inputs in enumerate(zip(*args)) if weights[i] != 0.0])
