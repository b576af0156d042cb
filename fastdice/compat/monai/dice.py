"""MONAI's ``monai/losses/dice.py``: DiceLoss, MaskedDiceLoss, GeneralizedDiceLoss,
DiceCELoss, DiceFocalLoss and GeneralizedDiceFocalLoss on the fused statistics."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence

import torch
from torch.nn.modules.loss import _Loss

from ... import _api
from ... import functional as fd
from .base import (
    _as_label_map,
    _check_combined_shapes,
    _check_tensors,
    _form,
    _has_negative,
    _lambda_not_negative,
    _lookup_w_type,
    _monai_stats,
    _MonaiLoss,
    _num_classes_after_background,
    _reduce_broadcast,
    _submodule,
)
from .focal import _focal_in_torch, _focal_term, _FocalTerm
from .script import _scripts_as_monai


def _checked_class_weight(class_weight: torch.Tensor, num_of_classes: int, module) -> torch.Tensor:
    """MONAI DiceLoss' class-weight checks (num_of_classes != 1). Like MONAI, a
    0-dim weight is expanded to one entry per class on first use and the
    caller stores it back (so a later call with another class count raises)."""
    if class_weight.ndim == 0:
        class_weight = torch.as_tensor([class_weight] * num_of_classes)
    elif class_weight.shape[0] != num_of_classes:
        raise ValueError(
            "The length of the `weight` sequence should be the same as the number of classes. "
            "If `include_background=False`, the weight should not include the background category class 0."
        )
    if _has_negative(module, "class_weight", class_weight):
        raise ValueError("the value/values of the `weight` should be no less than 0.")
    return class_weight


def _apply_class_weight(f: torch.Tensor, class_weight: torch.Tensor | None, num_of_classes: int, module):
    """MONAI DiceLoss' class weighting. Returns ``(f, class_weight)`` (see _checked_class_weight)."""
    if class_weight is not None and num_of_classes != 1:
        class_weight = _checked_class_weight(class_weight, num_of_classes, module)
        f = f * class_weight.to(f)
    return f, class_weight


def _generalized_dice_epilogue(
    stats: torch.Tensor, *, w_type: str, soft_label: bool, smooth_nr: float, smooth_dr: float
) -> torch.Tensor:
    """MONAI GeneralizedDiceLoss' unreduced loss from pooled statistics: (B, 1), or (1,)
    pooled over the batch. MONAI's denominator 2 (tp + fp/2 + fn/2) and its weights
    from the float32 target volumes (``ground_o.float()``); the weights are
    differentiable when the target requires grad (MONAI's own in-place
    ``w[infs] = 0`` makes autograd fail there)."""
    tp, fp, fn = fd.tp_fp_fn(stats, _form(False, soft_label))
    if tp.dim() == 0:  # no spatial axes without batch: MONAI's max over dim 1 of a 0-dim tensor raises
        tp.max(dim=1)  # torch's IndexError, MONAI's
    denominator = 2 * (tp + fp * 0.5 + fn * 0.5)
    w = fd.generalized_dice_weights(stats[..., fd.SUM_T].float(), w_type)
    return 1.0 - fd.generalized_dice_score(tp, denominator, w, smooth_nr, smooth_dr, keepdim=True)


@_scripts_as_monai("monai.losses.dice")
class DiceLoss(_MonaiLoss):
    """``monai.losses.DiceLoss`` (MONAI 1.6) on the fused fastdice op.

    Arguments, defaults, attributes, warnings and errors as MONAI's; see the
    module docstring for the fused/fallback paths and the few differences.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        soft_label: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid, softmax=softmax,
            other_act=other_act, reduction=reduction, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
            soft_label=soft_label, ignore_index=ignore_index,
        )
        self.squared_pred = squared_pred
        self.jaccard = jaccard
        weight = torch.as_tensor(weight) if weight is not None else None
        self.register_buffer("class_weight", weight)
        self.class_weight: None | torch.Tensor

    def _full_stats(self) -> bool:
        return self.squared_pred or self.soft_label

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        stats, _ = self._stats(input, target)
        return self._loss(stats, input)

    def _loss(self, stats: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """The loss from the op's unpooled statistics, by the epilogue op
        (fastdice::dice_loss_from_stats), in one call with the class weight and
        the reduction where MONAI's weighting and reduction map onto it. Where
        they do not (no spatial axes without batch: MONAI then sums over samples
        and classes and weights the one ratio per class; a class weight that
        requires grad; a reduction the op does not know), the op gives the
        unweighted, unreduced losses and MONAI's weighting and reduction follow
        in tensor ops."""
        drop_background = not self.include_background and input.shape[1] > 1
        num_classes = _num_classes_after_background(input, self.include_background)
        weight = None
        if self.class_weight is not None and num_classes != 1:
            class_weight = _checked_class_weight(self.class_weight, num_classes, self)
            if class_weight is not self.class_weight:
                self.class_weight = class_weight
            weight = class_weight.to(stats)
            if drop_background:  # the op's weight has one entry per input class
                weight = torch.cat((weight.new_zeros(1), weight))
        # MONAI's Jaccard, 1 - (2 tp + nr) / (2 (tp + fp + fn) + dr), is the op's
        # (tp + nr/2) / (sum p + sum t - tp + dr/2).
        half = 0.5 if self.jaccard else 1.0
        options = dict(
            pooling="batch" if self.batch else "sample", include_background=self.include_background,
            form=_form(self.squared_pred, self.soft_label), jaccard=self.jaccard, smooth_nr=self.smooth_nr * half,
            smooth_dr=self.smooth_dr * half, reduction=self.reduction,
        )
        pooled_all = input.dim() == 2 and not self.batch
        if not pooled_all and not (weight is not None and weight.requires_grad) and self.reduction in ("mean", "sum", "none"):
            f = fd.dice_loss_from_stats(stats, weight, None, **options)
            return f if self.reduction != "none" else _reduce_broadcast(f, "none", input.dim())
        if pooled_all:  # one ratio of the sums over samples and classes
            stats = self._pooled(stats, input).reshape(1, 1, -1)
            options.update(pooling="global", include_background=True)
        f = fd.dice_loss_from_stats(stats, None, None, **dict(options, reduction="none"))
        f, class_weight = _apply_class_weight(f, self.class_weight, num_classes, self)
        if class_weight is not self.class_weight:
            self.class_weight = class_weight
        return _reduce_broadcast(f, self.reduction, input.dim())


class MaskedDiceLoss(DiceLoss):
    """``monai.losses.MaskedDiceLoss`` (MONAI 1.6): the activation, then input and
    target multiplied by ``mask`` (B1H[WD] or 11H[WD]), then :class:`DiceLoss`.

    Fused (the op reads ``mask`` in place, no masked copies): a bool mask of
    the input's batch size, without ``other_act``, and without
    ``to_onehot_y`` unless the background is dropped (MONAI's masked label
    map turns masked positions into class 0, which only the background sees).
    Otherwise MONAI's steps in PyTorch (a float or uint8 mask scales input and
    target by its values), the sums fused.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        soft_label: bool = False,
    ) -> None:
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
        if sigmoid and softmax:
            raise ValueError("Incompatible values: sigmoid=True and softmax=True.")
        if other_act is not None and (sigmoid or softmax):
            raise ValueError("Incompatible values: other_act is not None and sigmoid=True or softmax=True.")
        super().__init__(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=False, softmax=False,
            other_act=None, squared_pred=squared_pred, jaccard=jaccard, reduction=reduction, smooth_nr=smooth_nr,
            smooth_dr=smooth_dr, batch=batch, weight=weight, soft_label=soft_label,
        )
        self.pre_sigmoid = sigmoid
        self.pre_softmax = softmax
        self.pre_other_act = other_act

    def __prepare_scriptable__(self):
        """Not scriptable: raises RuntimeError. The other classes script as MONAI's own
        class (see DiceLoss.__prepare_scriptable__), but MONAI's MaskedDiceLoss is not
        scriptable either (its MaskedLoss holds a bound method)."""
        raise RuntimeError(
            "torch.jit.script: fastdice.compat.monai.MaskedDiceLoss is not scriptable, nor is "
            "monai.losses.MaskedDiceLoss (its MaskedLoss holds a bound method); use it in eager mode, "
            "under torch.compile or with torch.export"
        )

    def _check_mask(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """MONAI's MaskedLoss checks: warnings for dims and spatial size, errors for batch and channels."""
        if input.dim() != mask.dim():
            _api.warn(f"Dim of input ({input.shape}) is different from mask ({mask.shape}).")
        if input.shape[0] != mask.shape[0] and mask.shape[0] != 1:
            raise ValueError(f"Batch size of mask ({mask.shape}) must be one or equal to input ({input.shape}).")
        if target.dim() > 1:
            if mask.shape[1] != 1:
                raise ValueError(f"Mask ({mask.shape}) must have only one channel.")
            if input.shape[2:] != mask.shape[2:]:
                _api.warn(f"Spatial size of input ({input.shape}) is different from mask ({mask.shape}).")

    def _fusable(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> bool:
        n_pred_ch = input.shape[1] if input.dim() > 1 else 1
        # bool only: MONAI multiplies by the mask, so a uint8 0/255 mask scales input and target.
        return (
            self.pre_other_act is None
            and mask.dtype == torch.bool
            and mask.dim() == input.dim()
            and input.dim() > 2
            and mask.shape[0] == input.shape[0]
            and mask.shape[1] == 1
            and mask.shape[2:] == input.shape[2:]
            and (not self.to_onehot_y or n_pred_ch == 1 or not self.include_background)
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: B1H[WD] or 11H[WD] (None: MONAI's warning, then the unmasked loss)."""
        _check_tensors(input, target)
        if mask is not None:
            self._check_mask(input, target, mask)
            if self._fusable(input, target, mask):
                stats, _ = self._stats_with(input, target, mask)
                return self._loss(stats, input)
        # MONAI's steps: the activation, the mask multiplied in, then DiceLoss (its own flags are off).
        if self.pre_sigmoid:
            input = torch.sigmoid(input)
        if self.pre_softmax:
            if input.shape[1] == 1:
                _api.warn("single channel prediction, `softmax=True` ignored.")
            else:
                input = torch.softmax(input, 1)
        if self.pre_other_act is not None:
            input = self.pre_other_act(input)
        if mask is None:
            _api.warn("No mask value specified for the MaskedLoss.")
            return super().forward(input, target)
        return super().forward(input * mask, target * mask)

    def _stats_with(self, input, target, mask):
        return _monai_stats(
            self, input, target, self.to_onehot_y, activation_flags=(self.pre_sigmoid, self.pre_softmax),
            loss_mask=mask,
        )


@_scripts_as_monai("monai.losses.dice")
class GeneralizedDiceLoss(_MonaiLoss):
    """``monai.losses.GeneralizedDiceLoss`` (MONAI 1.6) on the fused fastdice op."""

    shape_wording = "differing"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        w_type: str = "square",
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
    ) -> None:
        super().__init__(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid, softmax=softmax,
            other_act=other_act, reduction=reduction, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
            soft_label=soft_label,
        )
        self.w_type = _lookup_w_type(w_type)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        stats, _ = self._stats(input, target)
        return self._loss(stats, input)

    def _loss(self, stats: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """The loss from the op's unpooled statistics."""
        f = _generalized_dice_epilogue(
            self._pooled(stats, input),
            w_type=self.w_type,
            soft_label=self.soft_label,
            smooth_nr=self.smooth_nr,
            smooth_dr=self.smooth_dr,
        )
        return _reduce_broadcast(f, self.reduction, input.dim())


@_scripts_as_monai("monai.losses.dice")
class DiceCELoss(_Loss):
    """``monai.losses.DiceCELoss`` (MONAI 1.6) with the cross-entropy fused.

    The Dice term is :class:`DiceLoss`. The cross-entropy (``C > 1``:
    ``nn.CrossEntropyLoss(weight, label_smoothing)`` on the logits, class
    indices for a ``(B, 1, ...)`` target, class probabilities for a one-hot
    target; ``C == 1``: ``BCEWithLogitsLoss(pos_weight=weight)``) is
    accumulated in the same kernel pass as the Dice statistics when
    ``softmax=True`` (``sigmoid=True`` for C == 1), and its gradient is added
    in the same backward pass. Other activations (none, sigmoid with C > 1,
    other_act) get the cross-entropy from a second fused pass over the logits
    (still no N-sized temporaries). ``C == 1`` with a ``weight``
    (``pos_weight``) uses torch's BCEWithLogitsLoss.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        value = reduction.value if isinstance(reduction, enum.Enum) else reduction
        if value not in ("mean", "sum"):
            raise ValueError(f"Unsupported option '{reduction}', Available options are {{'mean', 'sum'}}.")
        reduction = value
        dice_weight = weight[1:] if (weight is not None and not include_background) else weight
        self.dice = _submodule(DiceLoss, locals(), weight=dice_weight)
        # MONAI's submodules, kept for their attributes, state_dict keys and
        # argument checks; their forward is never called (the CE is fused).
        self.cross_entropy = torch.nn.CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=label_smoothing)
        self.binary_cross_entropy = torch.nn.BCEWithLogitsLoss(pos_weight=weight, reduction=reduction)
        self.lambda_dice = _lambda_not_negative("lambda_dice", lambda_dice)
        self.lambda_ce = _lambda_not_negative("lambda_ce", lambda_ce)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_combined_shapes(input, target)
        num_classes = input.shape[1]
        label_target = target.shape[1] == 1 and num_classes != 1
        family = "cross_entropy" if num_classes != 1 else "binary_cross_entropy"
        ce_weight = self.cross_entropy.weight if num_classes != 1 else self.binary_cross_entropy.pos_weight
        label_smoothing = self.cross_entropy.label_smoothing
        if num_classes != 1 and not 0.0 <= label_smoothing <= 1.0:
            raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        reduction = self.cross_entropy.reduction
        fusable = not (num_classes == 1 and ce_weight is not None)  # pos_weight: torch's BCE
        stats, raw = self.dice._stats(input, target, pixel_loss=family if fusable else "none")
        dice_loss = self.dice._loss(stats, input)
        if not fusable:
            ce_target = target if target.is_floating_point() else target.to(input.dtype)
            ce_loss = torch.nn.functional.binary_cross_entropy_with_logits(
                input, ce_target, pos_weight=ce_weight, reduction=reduction
            )
        else:
            if raw is None:  # the Dice pass used another activation: a second fused pass
                ce_target = _as_label_map(target) if label_target else target
                activation = "softmax" if family == "cross_entropy" else "sigmoid"
                raw = fd.dice_stats(input, ce_target, activation, False, None, family)
            positions = input.shape[0] * math.prod(input.shape[2:])
            weight = ce_weight.to(device=raw.device, dtype=raw.dtype) if ce_weight is not None else None
            ce_loss = fd.pixel_loss_from_stats(
                raw,
                family=family,
                label_map=label_target,
                positions=positions,
                weight=weight if family == "cross_entropy" else None,
                label_smoothing=label_smoothing if family == "cross_entropy" else 0.0,
                reduction=reduction,
            )
            if reduction == "mean" and input.numel() == 0:
                ce_loss = ce_loss + math.nan  # torch's mean over no element, as MONAI returns
        return self.lambda_dice * dice_loss + self.lambda_ce * ce_loss


@_scripts_as_monai("monai.losses.dice")
class DiceFocalLoss(_Loss):
    """``monai.losses.DiceFocalLoss`` (MONAI 1.6) with the focal term fused.

    The Dice term is :class:`DiceLoss`; the focal term is MONAI's FocalLoss
    as DiceFocalLoss builds it (always the sigmoid focal loss on the logits,
    ``weight`` per class, ``alpha``-balanced), accumulated in the same kernel
    pass as the Dice statistics when ``sigmoid=True`` or ``softmax=True``
    (else in a second fused pass). ``reduction='none'`` returns MONAI's
    broadcast per-element tensor and computes the focal term in PyTorch, as
    do eager inputs of at most ``EXACT_FOCAL_MAX_NUMEL`` elements (MONAI's
    float32 bits). The focal term is computed in the input's precision (MONAI casts to
    float32 first, so float64 results differ at float32 rounding).
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        gamma: float = 2.0,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        # to_onehot_y=False as in MONAI (whose forward one-hot encodes once for both terms);
        # ours hands the label map to the Dice statistics in forward.
        self.dice = _submodule(DiceLoss, locals(), to_onehot_y=False)
        self.focal = _FocalTerm(include_background, gamma, weight, alpha, reduction)
        self.lambda_dice = _lambda_not_negative("lambda_dice", lambda_dice)
        self.lambda_focal = _lambda_not_negative("lambda_focal", lambda_focal)
        self.to_onehot_y = to_onehot_y

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_combined_shapes(input, target)
        num_classes = input.shape[1]
        label_target = False
        if self.to_onehot_y:
            if num_classes == 1:
                _api.warn("single channel prediction, `to_onehot_y=True` ignored.")
            else:
                label_target = True
        # The Dice term sees a label map as MONAI's one-hot target, never built.
        focal_in_torch = _focal_in_torch(self, input)
        stats, raw = self.dice._stats(
            input, target, to_onehot_y=label_target,
            pixel_loss="none" if focal_in_torch else "binary_cross_entropy", focal_gamma=float(self.focal.gamma),
        )
        dice_loss = self.dice._loss(stats, input)
        focal = _focal_term(self, input, target, raw, label_target, focal_in_torch)
        return self.lambda_dice * dice_loss + self.lambda_focal * focal


@_scripts_as_monai("monai.losses.dice")
class GeneralizedDiceFocalLoss(_Loss):
    """``monai.losses.GeneralizedDiceFocalLoss`` (MONAI 1.6) with the focal term fused.

    ``lambda_gdl * GeneralizedDiceLoss + lambda_focal * FocalLoss``: the
    Generalized Dice term is :class:`GeneralizedDiceLoss`, the focal term
    MONAI's sigmoid ``FocalLoss(include_background, to_onehot_y, gamma,
    weight, reduction)`` on the logits. With ``sigmoid=True`` or
    ``softmax=True`` the focal sums ride along in the Generalized Dice's
    fused pass (else a second fused pass makes them); a label map
    (``to_onehot_y=True``) is never one-hot encoded. ``reduction='none'``
    returns MONAI's broadcast per-element tensor (focal term in PyTorch);
    eager inputs of at most ``EXACT_FOCAL_MAX_NUMEL`` elements also get the
    focal term in PyTorch (MONAI's float32 bits).
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        w_type: str = "square",
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        gamma: float = 2.0,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        lambda_gdl: float = 1.0,
        lambda_focal: float = 1.0,
    ) -> None:
        super().__init__()
        self.generalized_dice = _submodule(GeneralizedDiceLoss, locals())
        self.focal = _FocalTerm(include_background, gamma, weight, None, reduction)
        self.focal.to_onehot_y = to_onehot_y
        self.lambda_gdl = _lambda_not_negative("lambda_gdl", lambda_gdl)
        self.lambda_focal = _lambda_not_negative("lambda_focal", lambda_focal)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_combined_shapes(input, target)
        gdl = self.generalized_dice
        focal_in_torch = _focal_in_torch(self, input)
        stats, raw = gdl._stats(
            input, target, pixel_loss="none" if focal_in_torch else "binary_cross_entropy",
            focal_gamma=float(self.focal.gamma),
        )
        gdl_loss = gdl._loss(stats, input)
        label_target = False
        if self.focal.to_onehot_y:
            if input.shape[1] == 1:
                _api.warn("single channel prediction, `to_onehot_y=True` ignored.")
            else:
                label_target = True
        focal = _focal_term(self, input, target, raw, label_target, focal_in_torch)
        return self.lambda_gdl * gdl_loss + self.lambda_focal * focal
