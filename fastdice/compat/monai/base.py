"""What MONAI's Dice-family losses share, as fastdice computes them: MONAI's
argument checks (its messages and exception types), its preprocessing of input
and target before the fused statistics (activation, the label map read in place
of MONAI's one-hot target, ignore_index, the shape checks), the pooling of the
statistics as MONAI reduces its sums, and the checks of the combined losses."""

from __future__ import annotations

import enum
import inspect

import torch
from torch.nn.modules.loss import _Loss

from ... import _api
from ... import functional as fd
from ...options import LABEL_DTYPES, W_TYPES


_REDUCTIONS = ("none", "mean", "sum")


def _lookup_reduction(reduction) -> str:
    """MONAI's ``LossReduction(reduction).value``: exact match, ValueError otherwise."""
    value = reduction.value if isinstance(reduction, enum.Enum) else reduction
    if isinstance(value, str) and value in _REDUCTIONS:
        return _REDUCTIONS[_REDUCTIONS.index(value)]  # a plain str, also for a str-Enum member
    raise ValueError(f"{reduction!r} is not a valid LossReduction")


def _lookup_w_type(w_type) -> str:
    """MONAI's ``look_up_option(w_type, Weight)``: surrounding blanks stripped, ValueError otherwise."""
    value = w_type.value if isinstance(w_type, enum.Enum) else w_type
    if isinstance(value, str) and value.strip() in W_TYPES:
        return value.strip()
    raise ValueError(f"Unsupported option '{w_type}', Available options are {set(W_TYPES)}.")


class _MonaiLoss(_Loss):
    """Base of the MONAI Dice-family losses: the arguments they share, kept as
    MONAI's attributes after MONAI's checks, and MONAI's preprocessing before
    the fused statistics (``_stats``). A subclass keeps its own arguments and
    its epilogue (``_loss``, from the op's unpooled statistics)."""

    #: The word of MONAI's shape-mismatch message ("differing" in GeneralizedDiceLoss and TverskyLoss).
    shape_wording = "different"

    def __init__(
        self, *, include_background, to_onehot_y, sigmoid, softmax, other_act, reduction, smooth_nr, smooth_dr, batch,
        soft_label, ignore_index=...,
    ) -> None:
        super().__init__(reduction=_lookup_reduction(reduction))
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError("Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None].")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = batch
        self.soft_label = soft_label
        if ignore_index is not ...:  # GeneralizedDiceLoss has no ignore_index
            self.ignore_index = ignore_index

    def _full_stats(self) -> bool:
        """Whether the statistics beyond sum p*t, sum p, sum t are needed."""
        return self.soft_label

    def _stats(self, input, target, to_onehot_y=None, pixel_loss="none", focal_gamma=0.0):
        """MONAI's validation and preprocessing, then the fused statistics: see
        _monai_stats. to_onehot_y overrides the attribute (DiceFocalLoss
        one-hot-encodes for its Dice term, which MONAI builds with to_onehot_y=False)."""
        return _monai_stats(
            self, input, target, self.to_onehot_y if to_onehot_y is None else to_onehot_y, pixel_loss, focal_gamma
        )

    def _pooled(self, stats: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """The op's [B, C, 11] statistics pooled as MONAI reduces its sums: ``(B, C', 11)``
        per sample, ``(C', 11)`` with ``batch=True``, and ``(11,)`` for an input without
        spatial axes and ``batch=False`` (MONAI's ``torch.sum(x, dim=[])`` reduces every
        axis). ``C'`` is C, or C - 1 when the background is dropped (C > 1)."""
        drop_background = not self.include_background and input.shape[1] > 1
        return _pool_monai(stats, drop_background, self.batch, input.dim())


def _ignore_mask(original_target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``monai.metrics.utils.create_ignore_mask`` (B, 1, *spatial): 1 = valid, 0 = ignored."""
    if original_target.shape[1] == 1:
        return (original_target != ignore_index).float()
    num_classes = original_target.shape[1]
    if 0 <= ignore_index < num_classes:
        return 1.0 - original_target[:, ignore_index : ignore_index + 1]
    return (original_target.sum(dim=1, keepdim=True) > 0).float()


def _check_tensors(input, target) -> None:
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"input and target must be tensors, got {type(input).__name__} and {type(target).__name__}"
        )


def _activation(module, n_pred_ch: int, flags=None) -> str:
    """The op's activation of MONAI's sigmoid / softmax flags (softmax over one channel: warned, none);
    ``flags``: (sigmoid, softmax) instead of the module's (MaskedDiceLoss's pre-activation)."""
    sigmoid, softmax = flags if flags is not None else (module.sigmoid, module.softmax)
    activation = "sigmoid" if sigmoid else "none"
    if softmax:
        if n_pred_ch == 1:
            _api.warn("single channel prediction, `softmax=True` ignored.")
        else:
            activation = "softmax"
    return activation


def _label_map_target(target: torch.Tensor, to_onehot_y: bool, n_pred_ch: int):
    """``(target, use_label_map)``: with to_onehot_y (C > 1) the (B, 1, ...) label map,
    shaped as MONAI's one_hot takes it; else the target as it is."""
    if not to_onehot_y:
        return target, False
    if n_pred_ch == 1:
        _api.warn("single channel prediction, `to_onehot_y=True` ignored.")
        return target, False
    # monai.networks.utils.one_hot: trailing singleton axes up to 2 dims, channel of size 1.
    if target.dim() < 2:
        target = target.reshape(list(target.shape) + [1] * (2 - target.dim()))
    if target.shape[1] != 1:
        raise AssertionError("labels should have a channel with length equal to one.")
    return target, True


def _check_shapes(module, input, target, use_label_map: bool, drop_background: bool) -> None:
    """The shape check MONAI does on the (one-hot, background-free) tensors."""
    target_shape = list(target.shape)
    if use_label_map:
        target_shape[1] = input.shape[1]
    input_shape = list(input.shape)
    if drop_background:
        input_shape[1] -= 1
        if len(target_shape) > 1:
            target_shape[1] = max(target_shape[1] - 1, 0)
    if target_shape != input_shape:
        raise AssertionError(
            f"ground truth has {module.shape_wording} shape ({torch.Size(target_shape)}) "
            f"from input ({torch.Size(input_shape)})"
        )


def _monai_stats(
    module, input, target, to_onehot_y: bool, pixel_loss: str = "none", focal_gamma: float = 0.0,
    activation_flags=None, loss_mask=None,
):
    """MONAI's validation and preprocessing of ``module``'s settings, then the fused statistics.

    Returns ``(stats, pixel)``: ``stats`` the op's unpooled statistics ``[B, C, 11]``
    (last axis: ``fastdice.STAT_NAMES``) of ``activation(input)`` and the (one-hot,
    ignore-masked) target over all C classes (``module._pooled`` drops the background and
    pools them as MONAI does); ``pixel`` the same tensor when ``pixel_loss`` (DiceCE /
    DiceFocal) rode along in the same pass (its activation family matches the Dice
    activation and no PyTorch fallback ran), else None (the caller then makes a second,
    separate fused pass for it). Issues MONAI's warnings (single channel with softmax /
    to_onehot_y / include_background=False) and raises its shape errors (``AssertionError``).
    ``activation_flags`` overrides the module's (sigmoid, softmax); ``loss_mask`` (B, 1, *spatial),
    bool / uint8, is the op's loss mask (MaskedDiceLoss; never with other_act or ignore_index).
    """
    _check_tensors(input, target)
    n_pred_ch = input.shape[1]  # IndexError for an input without a channel axis, as in MONAI
    activation = _activation(module, n_pred_ch, activation_flags)
    target, use_label_map = _label_map_target(target, to_onehot_y, n_pred_ch)
    drop_background = not module.include_background
    if drop_background and n_pred_ch == 1:
        _api.warn("single channel prediction, `include_background=False` ignored.")
        drop_background = False
    _check_shapes(module, input, target, use_label_map, drop_background)

    ignore_index = getattr(module, "ignore_index", None)
    op_ignore = None
    mask = None
    if use_label_map:
        if target.dtype not in LABEL_DTYPES:
            if ignore_index is not None and target.is_floating_point() and bool((target != target.trunc()).any()):
                raise ValueError(
                    "fastdice.compat.monai: with to_onehot_y=True and ignore_index, a floating-point target "
                    "must hold integer class labels (MONAI truncates non-integer labels but masks by the raw "
                    "value); round the labels or pass an integer label map"
                )
            target = target.long()
        op_ignore = ignore_index
    elif ignore_index is not None:
        mask = _ignore_mask(target, ignore_index)

    if module.other_act is not None or mask is not None:
        # Fallback: MONAI's activation and masking in PyTorch, the sums fused.
        if activation == "sigmoid":
            input = torch.sigmoid(input)
        elif activation == "softmax":
            input = torch.softmax(input, 1)
        activation = "none"
        if module.other_act is not None:
            input = module.other_act(input)
        if mask is not None:
            input = input * mask
            target = target * mask

    fused_pixel = pixel_loss != "none" and (
        activation == "softmax" if pixel_loss == "cross_entropy" else activation != "none"
    )
    if not fused_pixel:
        pixel_loss, focal_gamma = "none", 0.0
    if loss_mask is not None:
        assert module.other_act is None and ignore_index is None, "the op's mask replaces no PyTorch fallback"
    stats = fd.dice_stats(
        input, target, fd.peer_activation(activation), module._full_stats(), op_ignore, pixel_loss, focal_gamma,
        loss_mask,
    )
    return stats, (stats if fused_pixel else None)


def _pool_monai(stats: torch.Tensor, drop_background: bool, batch: bool, input_dim: int) -> torch.Tensor:
    """The op's [B, C, 11] statistics pooled as MONAI reduces its sums (see _MonaiLoss._pooled)."""
    if drop_background:
        stats = stats[:, 1:]
    if batch:
        return stats.sum(0)
    if input_dim == 2:
        return stats.sum((0, 1))
    return stats


def _form(squared: bool, soft_label: bool) -> str:
    """The fastdice form of ``monai.losses.utils.compute_tp_fp_fn``'s sums: ord 2
    (squared_pred) sums p^2 and t^2; soft_label takes (|p|_1 + |t|_1 - |p - t|_1) / 2
    for tp (see fastdice.functional.tp_fp_fn)."""
    return "squared" if squared else "soft_label" if soft_label else "plain"


def _has_negative(module, name: str, weight: torch.Tensor) -> bool:
    """Whether weight has a negative entry, as MONAI checks on every call, but
    read from the device once per weight tensor and version: on CUDA every
    read is a host sync, which would stall the training loop each step."""
    key = (weight.data_ptr(), str(weight.device), weight._version, tuple(weight.shape), weight.dtype)
    checked = module.__dict__.setdefault("_fd_nonnegative_weights", {})
    if checked.get(name) == key:
        return False
    if bool((weight < 0).any()):
        return True
    checked[name] = key
    return False


def _reduce_broadcast(f: torch.Tensor, reduction: str, input_dim: int) -> torch.Tensor:
    """MONAI Dice / GDL reduction; "none" keeps a broadcastable shape
    ``f.shape[:2] + (1,) * (input_dim - 2)``."""
    if reduction == "mean":
        return torch.mean(f)
    if reduction == "sum":
        return torch.sum(f)
    if reduction == "none":
        return f.view(list(f.shape[0:2]) + [1] * (input_dim - 2))
    raise ValueError(f'Unsupported reduction: {reduction}, available options are ["mean", "sum", "none"].')


def _num_classes_after_background(input: torch.Tensor, include_background: bool) -> int:
    c = input.shape[1]
    return c - 1 if (not include_background and c > 1) else c


def _check_combined_shapes(input: torch.Tensor, target: torch.Tensor) -> None:
    """The checks at the top of MONAI's DiceCELoss / DiceFocalLoss.forward."""
    if input.dim() != target.dim():
        raise ValueError(
            "the number of dimensions for input and target should be the same, "
            f"got shape {input.shape} (nb dims: {len(input.shape)}) and {target.shape} (nb dims: {len(target.shape)}). "
            "if target is not one-hot encoded, please provide a tensor with shape B1H[WD]."
        )
    if target.shape[1] != 1 and target.shape[1] != input.shape[1]:
        raise ValueError(
            "number of channels for target is neither 1 (without one-hot encoding) nor the same as input, "
            f"got shape {input.shape} and {target.shape}."
        )


def _lambda_not_negative(name: str, value: float) -> float:
    """MONAI's check of a term weight (only < 0 raises, with MONAI's message;
    fastdice.options.check_nonnegative is the native, stricter rule)."""
    if value < 0.0:
        raise ValueError(f"{name} should be no less than 0.0.")
    return value


def _as_label_map(target: torch.Tensor) -> torch.Tensor:
    return target if target.dtype in LABEL_DTYPES else target.long()


def _submodule(cls, arguments: dict, **overrides):
    """``cls`` as a MONAI combined loss builds its inner loss: every parameter of
    ``cls`` that the combined loss's constructor also has, with the value it
    holds there (``arguments``: the constructor's ``locals()``, taken where
    MONAI makes the call), then ``overrides``."""
    kwargs = {name: arguments[name] for name in inspect.signature(cls).parameters if name in arguments}
    kwargs.update(overrides)
    return cls(**kwargs)
