"""Dice + cross-entropy (or focal) loss from ONE fused pass over the logits.

The statistics op accumulates the per-element cross-entropy next to the Dice
sums (stats PIXEL_LOSS = sum l and PIXEL_LOSS_TARGET = sum t*l per sample and
class), and its backward adds the cross-entropy's gradient to the Dice
gradient in the same pass: DiceCE reads the logits and the labels once
forward and once backward and writes the gradient once, like the Dice loss
alone. Everything here is O(B*C) arithmetic on the statistics.
"""

import math
import numbers
from typing import Optional

import torch
from torch import nn

from . import _ops
from .loss import _check_tensors, align_shapes, fused_epilogue_applies, fused_loss_from_stats, loss_from_stats_eager
from .options import DiceOptions, check_weight_values, weight_tensor


def _check_lambda(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"fastdice: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


_LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def is_label_map(input: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether the op reads target as a label map (the rule of prepare_problem)."""
    if target.dtype not in _LABEL_DTYPES:
        return False
    b, c, *spatial = input.shape
    shape = tuple(target.shape)
    label_shape = shape == (b, *spatial) or shape == (b, 1, *spatial)
    return label_shape and not (c == 1 and shape == tuple(input.shape))


def pixel_loss_from_stats(
    stats: torch.Tensor,
    *,
    family: str,
    label_map: bool,
    positions: int,
    weight: Optional[torch.Tensor] = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The cross-entropy (or focal) term of the per-(sample, class) statistics.

    family 'cross_entropy' follows torch.nn.CrossEntropyLoss: with a label map
    the mean is over non-ignored positions weighted by the weight of their
    class (sum_i w_{y_i}), with dense (probability) targets over all
    positions; label smoothing mixes in (eps / C) * sum_c w_c * (-log p_c).
    family 'binary_cross_entropy' follows BCEWithLogitsLoss with a per-class
    weight: the mean over all valid elements (positions x classes).
    positions: B * spatial size (the dense-target denominators).
    """
    num_classes = stats.shape[1]
    w = weight[None, :] if weight is not None else None

    def weighted_sum(column: torch.Tensor) -> torch.Tensor:
        return (column * w).sum() if w is not None else column.sum()

    total = weighted_sum(stats[..., _ops.PIXEL_LOSS_TARGET] if family == "cross_entropy" else stats[..., _ops.PIXEL_LOSS])
    if family == "cross_entropy" and label_smoothing > 0:
        total = (1 - label_smoothing) * total + (label_smoothing / num_classes) * weighted_sum(stats[..., _ops.PIXEL_LOSS])
    if reduction == "sum":
        return total
    if family == "cross_entropy":
        if label_map:
            denominator = weighted_sum(stats[..., _ops.SUM_T])  # sum over valid positions of w_{y_i}
        else:
            denominator = stats.new_tensor(float(positions))
    else:
        # Valid elements: a label map's valid positions (the sum over classes
        # of its one-hot target) times C; a dense target's every element. A
        # per-class weight scales elements, not the count (BCEWithLogitsLoss).
        valid = stats[..., _ops.SUM_T].sum() if label_map else stats.new_tensor(float(positions))
        denominator = valid * num_classes
    # No valid position: the sum is 0 too, and the term is a differentiable 0.
    return total / denominator.clamp_min(torch.finfo(stats.dtype).tiny)


class DiceCELoss(nn.Module):
    """``lambda_dice * Dice + lambda_ce * cross-entropy``, both from one fused pass.

    Takes every keyword option of :class:`fastdice.DiceLoss` for the Dice
    term (``activation`` defaults to ``'softmax'`` here and must be
    ``'softmax'`` or ``'sigmoid'``: the input is logits), plus:

      lambda_dice, lambda_ce: weights of the two terms (>= 0).
      ce_weight: per-class weight of the cross-entropy (one entry per input
        class), as ``torch.nn.CrossEntropyLoss(weight=...)``.
      label_smoothing: as ``torch.nn.CrossEntropyLoss`` (softmax only).
      focal_gamma: 0 is the cross-entropy; > 0 the focal loss
        ``(1 - p_t)^gamma * CE`` with the same normalization.

    With ``activation='softmax'`` the second term is the softmax cross-entropy
    over the classes (``torch.nn.CrossEntropyLoss``: label maps, mean over
    non-ignored positions weighted by ``ce_weight``; dense targets are class
    probabilities, mean over positions). With ``'sigmoid'`` it is the binary
    cross-entropy with logits per class, mean over valid elements. The
    cross-entropy always uses every class (``include_background`` and
    ``pooling`` concern the Dice term) and honours ``ignore_index``.
    ``reduction`` must be 'mean' or 'sum' (of both terms).
    """

    def __init__(
        self,
        *,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        ce_weight=None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 0.0,
        process_group=None,
        **options,
    ):
        super().__init__()
        options.setdefault("activation", "softmax")
        weight = options.pop("weight", None)
        for name, value in (("weight", weight), ("ce_weight", ce_weight)):
            if value is not None and not isinstance(value, (int, float)) and torch.as_tensor(value).dim() != 1:
                raise ValueError(f"fastdice: {name} must be a number or a 1-D sequence (one entry per class)")
            check_weight_values(value)
        self.opts = DiceOptions(**options)
        if self.opts.activation not in ("softmax", "sigmoid"):
            raise ValueError(
                f"fastdice: DiceCELoss needs activation='softmax' or 'sigmoid' (the input is logits), "
                f"got {self.opts.activation!r}"
            )
        if self.opts.reduction not in ("mean", "sum"):
            raise ValueError(f"fastdice: DiceCELoss reduction must be 'mean' or 'sum', got {self.opts.reduction!r}")
        self.lambda_dice = _check_lambda("lambda_dice", lambda_dice)
        self.lambda_ce = _check_lambda("lambda_ce", lambda_ce)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) or not (
            0.0 <= label_smoothing <= 1.0
        ):
            raise ValueError(f"fastdice: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
        if label_smoothing > 0 and self.opts.activation != "softmax":
            raise ValueError("fastdice: label_smoothing needs activation='softmax' (the softmax cross-entropy)")
        self.label_smoothing = float(label_smoothing)
        self.focal_gamma = _check_lambda("focal_gamma", focal_gamma)
        self.process_group = process_group
        self._register_weight("weight", weight)
        self._register_weight("ce_weight", ce_weight)

    def _register_weight(self, name, value):
        if value is None:
            self.register_buffer(name, None)
        elif isinstance(value, (int, float)):
            self.register_buffer(name, None)
            setattr(self, f"_{name}_scalar", float(value))
            return
        else:
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float64).flatten().clone())
        setattr(self, f"_{name}_scalar", None)

    def _weight(self, name, num_classes, like):
        tensor = getattr(self, name)
        if tensor is None:
            return weight_tensor(getattr(self, f"_{name}_scalar"), num_classes, like)
        if tensor.numel() != num_classes:
            raise ValueError(f"fastdice: {name} has {tensor.numel()} entries but the input has {num_classes} classes")
        return tensor.to(device=like.device, dtype=like.dtype)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["process_group"] = None  # process groups do not pickle; the default group is used after loading
        return state

    def extra_repr(self) -> str:
        defaults = DiceOptions(activation="softmax")
        parts = [
            f"{name}={getattr(self.opts, name)!r}"
            for name in DiceOptions.__dataclass_fields__
            if name != "weight" and getattr(self.opts, name) != getattr(defaults, name)
        ]
        for name in ("lambda_dice", "lambda_ce", "label_smoothing", "focal_gamma"):
            value = getattr(self, name)
            if value != (1.0 if name.startswith("lambda") else 0.0):
                parts.append(f"{name}={value!r}")
        for name in ("weight", "ce_weight"):
            tensor, scalar = getattr(self, name), getattr(self, f"_{name}_scalar")
            if tensor is not None:
                parts.append(f"{name}={tensor.tolist()}")
            elif scalar is not None:
                parts.append(f"{name}={scalar!r}")
        return ", ".join(parts)

    @property
    def pixel_loss(self) -> str:
        return "cross_entropy" if self.opts.activation == "softmax" else "binary_cross_entropy"

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_tensors(input, target, self.opts)
        if input.dim() < 2:
            raise ValueError(f"fastdice: DiceCELoss needs input of shape (B, C, *spatial), got {tuple(input.shape)}")
        input, target = align_shapes(input, target, self.opts, True)
        stats = _ops.dice_stats(
            input, target, self.opts.activation, self.opts.full_stats, self.opts.ignore_index,
            self.pixel_loss, self.focal_gamma,
        )
        num_classes = input.shape[1]
        weight = self._weight("weight", num_classes, stats)
        ce_weight = self._weight("ce_weight", num_classes, stats)
        positions = math.prod(input.shape[2:]) * input.shape[0]
        label_map = is_label_map(input, target)
        if fused_epilogue_applies(self.opts, weight, ce_weight):
            return fused_loss_from_stats(
                stats, self.opts, weight, ce_weight, self.lambda_dice, self.lambda_ce, self.pixel_loss, label_map,
                positions, self.label_smoothing,
            )
        dice = loss_from_stats_eager(stats, self.opts, weight, self.process_group)
        ce = pixel_loss_from_stats(
            stats,
            family=self.pixel_loss,
            label_map=label_map,
            positions=positions,
            weight=ce_weight,
            label_smoothing=self.label_smoothing,
            reduction=self.opts.reduction,
        )
        return self.lambda_dice * dice + self.lambda_ce * ce


class DiceFocalLoss(DiceCELoss):
    """``lambda_dice * Dice + lambda_focal * focal loss`` from one fused pass:
    :class:`DiceCELoss` with ``focal_gamma=gamma`` (default 2) and
    ``lambda_focal`` for ``lambda_ce`` (``focal_weight`` for ``ce_weight``)."""

    def __init__(self, *, gamma: float = 2.0, lambda_focal: float = 1.0, focal_weight=None, **options):
        for name, ours in (("focal_gamma", "gamma"), ("lambda_ce", "lambda_focal"), ("ce_weight", "focal_weight")):
            if name in options:
                raise TypeError(f"fastdice: DiceFocalLoss takes {ours!r}, not {name!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"fastdice: gamma must be a finite number >= 0, got {gamma!r}")
        super().__init__(focal_gamma=gamma, lambda_ce=lambda_focal, ce_weight=focal_weight, **options)
