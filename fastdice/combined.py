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
from typing import Literal, NamedTuple, Optional

import torch

from . import _api, _ops
from ._api import native_arguments
from .loss import NativeLoss, fused_epilogue_applies, fused_loss_from_stats, loss_from_stats, statistics
from .options import LABEL_DTYPES, DiceOptions, Pooling, RegionsLike, WeightLike, check_nonnegative, check_weight_values


def is_label_map(input: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether the op reads target as a label map (the rule of prepare_problem)."""
    if target.dtype not in LABEL_DTYPES:
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
            denominator = stats.new_ones(()) * positions  # no float(): a symbolic size stays symbolic
    else:
        # Valid elements: a label map's valid positions (the sum over classes
        # of its one-hot target) times C; a dense target's every element. A
        # per-class weight scales elements, not the count (BCEWithLogitsLoss).
        valid = stats[..., _ops.SUM_T].sum() if label_map else stats.new_ones(()) * positions
        denominator = valid * num_classes
    # No valid position: the sum is 0 too, and the term is a differentiable 0.
    return total / denominator.clamp_min(torch.finfo(stats.dtype).tiny)


class DiceCETerms(NamedTuple):
    """What ``DiceCELoss(return_terms=True)`` returns: the loss
    ``lambda_dice * dice + lambda_ce * ce`` and its two terms, unweighted;
    all three are tensors of the same graph (no host sync, no second pass)."""

    loss: torch.Tensor
    dice: torch.Tensor
    ce: torch.Tensor


class DiceFocalTerms(NamedTuple):
    """What ``DiceFocalLoss(return_terms=True)`` returns: the loss
    ``lambda_dice * dice + lambda_focal * focal`` and its two terms, unweighted."""

    loss: torch.Tensor
    dice: torch.Tensor
    focal: torch.Tensor


class DiceCELoss(NativeLoss):
    """``lambda_dice * Dice + lambda_ce * cross-entropy``, both from one fused pass.

    Args (keyword-only). The Dice term's options are those of
    :class:`fastdice.DiceLoss` (``activation`` defaults to ``'softmax'`` here
    and must be ``'softmax'`` or ``'sigmoid'``: the input is logits):
      activation, pooling, include_background, weight, ignore_index,
      smooth_nr, smooth_dr, squared, jaccard, log_loss, soft_label, log_eps,
      distributed, regions: as :class:`fastdice.DiceLoss`.
      reduction: 'mean' or 'sum' (of both terms).
      lambda_dice, lambda_ce: weights of the two terms (>= 0).
      ce_weight: per-class weight of the cross-entropy (one entry per input
        class), as ``torch.nn.CrossEntropyLoss(weight=...)``.
      label_smoothing: as ``torch.nn.CrossEntropyLoss`` (softmax only).
      focal_gamma: 0 is the cross-entropy; > 0 the focal loss
        ``(1 - p_t)^gamma * CE`` with the same normalization.
      return_terms: forward returns :class:`DiceCETerms` ``(loss, dice, ce)``
        instead of the loss alone: both terms for logging, from the same
        statistics (no second pass, no host sync; a few O(B*C) ops more).
      process_group: the group of ``distributed=True`` (default: the world).

    With ``activation='softmax'`` the second term is the softmax cross-entropy
    over the classes (``torch.nn.CrossEntropyLoss``: label maps, mean over
    non-ignored positions weighted by ``ce_weight``; dense targets are class
    probabilities, mean over positions). With ``'sigmoid'`` it is the binary
    cross-entropy with logits per class, mean over valid elements. The
    cross-entropy always uses every class (``include_background`` and
    ``pooling`` concern the Dice term) and honours ``ignore_index``. With
    ``regions`` the target is dense (one 0/1 channel per region): with
    ``'sigmoid'`` this is nnU-Net's Dice + BCE over regions, the mean over
    the valid (position, region) pairs.
    """

    needs_class_axis = True  # the cross-entropy is per class

    @native_arguments
    def __init__(
        self,
        *,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        pooling: Pooling = "global",
        include_background: bool = True,
        weight: WeightLike = None,
        ignore_index: Optional[int] = None,
        smooth_nr: float = 1.0,
        smooth_dr: float = 1.0,
        squared: bool = False,
        jaccard: bool = False,
        log_loss: bool = False,
        soft_label: bool = False,
        reduction: Literal["mean", "sum"] = "mean",
        log_eps: float = 1e-7,
        distributed: bool = False,
        regions: RegionsLike = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        ce_weight: WeightLike = None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 0.0,
        return_terms: bool = False,
        process_group=None,
    ) -> None:
        for name, value in (("weight", weight), ("ce_weight", ce_weight)):
            if value is not None and not isinstance(value, (int, float)) and torch.as_tensor(value).dim() != 1:
                raise ValueError(f"fastdice: {name} must be a number or a 1-D sequence (one entry per class)")
            check_weight_values(value)
        if reduction == "none":
            raise ValueError(
                "fastdice: DiceCELoss reduction must be 'mean' or 'sum', got 'none' (the two terms have different "
                "shapes); for the terms themselves pass return_terms=True, for per-class Dice losses use "
                "fastdice.DiceLoss(reduction='none')"
            )
        opts = DiceOptions(
            activation=activation, pooling=pooling, include_background=include_background,
            ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
            log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps, distributed=distributed,
            regions=regions,
        )
        if opts.activation not in ("softmax", "sigmoid"):
            raise ValueError(
                f"fastdice: {type(self).__name__} needs activation='softmax' or 'sigmoid' (the input is logits), "
                f"got {opts.activation!r}"
            )
        if opts.reduction not in ("mean", "sum"):
            raise ValueError(f"fastdice: DiceCELoss reduction must be 'mean' or 'sum', got {opts.reduction!r}")
        lambda_dice = check_nonnegative("lambda_dice", lambda_dice)
        lambda_ce = check_nonnegative("lambda_ce", lambda_ce)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) or not (
            0.0 <= label_smoothing <= 1.0
        ):
            raise ValueError(f"fastdice: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
        if label_smoothing > 0 and opts.activation != "softmax":
            raise ValueError("fastdice: label_smoothing needs activation='softmax' (the softmax cross-entropy)")
        focal_gamma = check_nonnegative("focal_gamma", focal_gamma)
        if not isinstance(return_terms, bool):
            raise TypeError(f"fastdice: return_terms must be a bool, got {return_terms!r}")
        super().__init__(opts, process_group, weight=weight, ce_weight=ce_weight)
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce
        self.label_smoothing = float(label_smoothing)
        self.focal_gamma = focal_gamma
        self.return_terms = return_terms

    def _constructor_values(self) -> dict:
        return dict(
            super()._constructor_values(), lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce,
            label_smoothing=self.label_smoothing, focal_gamma=self.focal_gamma, return_terms=self.return_terms,
        )

    @property
    def pixel_loss(self) -> str:
        return "cross_entropy" if self.opts.activation == "softmax" else "binary_cross_entropy"

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """The loss (a scalar); ``(loss, dice, ce)`` with ``return_terms=True``. ``mask``: see
        :meth:`fastdice.DiceLoss.forward`; the second term's mean is then over the positions it keeps."""
        regions = self.opts.regions is not None
        # Regions with ignored or masked-out positions: the mean is over the valid positions,
        # which the kernel counts (VALID_COUNT, one of the full statistics).
        count_valid = regions and (mask is not None or self.opts.ignore_index is not None)
        # All that does not need the statistics is done before their op (see fastdice.loss.dice_loss_of).
        input, target = self._inputs(input, target, mask)
        num_classes = input.shape[1]
        weight = self._class_weight("weight", num_classes, input)
        ce_weight = self._class_weight("ce_weight", num_classes, input)
        positions = math.prod(input.shape[2:]) * input.shape[0]
        # Region targets are dense (one 0/1 channel per region), though read from a label map.
        label_map = is_label_map(input, target) and not regions
        fused = fused_epilogue_applies(self.opts, weight, ce_weight)
        stats = statistics(input, target, self.opts, self.pixel_loss, self.focal_gamma, mask, count_valid)
        if count_valid:
            # A tensor (no host sync), which the fused epilogue (a number) cannot take.
            positions = stats[:, 0, _ops.VALID_COUNT].sum()
            fused = False
        elif mask is not None and not label_map:
            # A dense target's mean is over the kept positions: a tensor (no host sync), which the
            # fused epilogue (a number) cannot take.
            positions = (mask != 0).sum()
            fused = False
        if fused and not self.return_terms:
            loss = fused_loss_from_stats(
                stats, self.opts, weight, ce_weight, ce_label_map=label_map, ce_positions=positions,
                lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce, ce_family=self.pixel_loss,
                label_smoothing=self.label_smoothing,
            )
            return _api.zero_if_empty(loss, input, self.opts.distributed)
        dice = loss_from_stats(stats, self.opts, weight, self.process_group)
        ce = pixel_loss_from_stats(
            stats,
            family=self.pixel_loss,
            label_map=label_map,
            positions=positions,
            weight=ce_weight,
            label_smoothing=self.label_smoothing,
            reduction=self.opts.reduction,
        )
        dice = _api.zero_if_empty(dice, input, self.opts.distributed)
        loss = self.lambda_dice * dice + self.lambda_ce * ce
        if self.return_terms:
            return self._terms(loss, dice, ce)
        return loss

    def _terms(self, loss, dice, ce):
        return DiceCETerms(loss, dice, ce)


class DiceFocalLoss(DiceCELoss):
    """``lambda_dice * Dice + lambda_focal * focal loss`` from one fused pass:
    :class:`DiceCELoss` with the focal loss ``(1 - p_t)^gamma * CE`` as the
    second term.

    Args (keyword-only): the Dice term's options, as :class:`DiceCELoss`:
      activation ('softmax' default, or 'sigmoid'), pooling,
      include_background, weight, ignore_index, smooth_nr, smooth_dr,
      squared, jaccard, log_loss, soft_label, reduction ('mean' or 'sum'),
      log_eps, distributed, regions; and
      gamma: the focal exponent (>= 0; 0 is the cross-entropy).
      lambda_dice, lambda_focal: weights of the two terms (>= 0).
      focal_weight: per-class weight of the focal term (one entry per class).
      return_terms: forward returns :class:`DiceFocalTerms` ``(loss, dice, focal)``.
      process_group: the group of ``distributed=True``.
    """

    @native_arguments(renamed={"focal_gamma": "gamma", "lambda_ce": "lambda_focal", "ce_weight": "focal_weight"})
    def __init__(
        self,
        *,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        pooling: Pooling = "global",
        include_background: bool = True,
        weight: WeightLike = None,
        ignore_index: Optional[int] = None,
        smooth_nr: float = 1.0,
        smooth_dr: float = 1.0,
        squared: bool = False,
        jaccard: bool = False,
        log_loss: bool = False,
        soft_label: bool = False,
        reduction: Literal["mean", "sum"] = "mean",
        log_eps: float = 1e-7,
        distributed: bool = False,
        regions: RegionsLike = None,
        gamma: float = 2.0,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        focal_weight: WeightLike = None,
        return_terms: bool = False,
        process_group=None,
    ) -> None:
        check_nonnegative("gamma", gamma)
        super().__init__(
            activation=activation, pooling=pooling, include_background=include_background, weight=weight,
            ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
            log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps, distributed=distributed,
            regions=regions,
            lambda_dice=lambda_dice, lambda_ce=lambda_focal, ce_weight=focal_weight, focal_gamma=gamma,
            return_terms=return_terms, process_group=process_group,
        )

    def _constructor_values(self) -> dict:
        values = super()._constructor_values()
        values["gamma"] = values.pop("focal_gamma")
        values["lambda_focal"] = values.pop("lambda_ce")
        values["focal_weight"] = values.pop("ce_weight")
        del values["label_smoothing"]
        return values

    def _terms(self, loss, dice, ce):
        return DiceFocalTerms(loss, dice, ce)
