"""Drop-in replacements for MONAI 1.6's ``monai.metrics.DiceMetric``, ``MeanIoU`` and
``GeneralizedDiceScore`` (and the functions ``compute_dice``, ``compute_iou``,
``compute_generalized_dice``), counting with fastdice's fused op.

Same constructors, same ``__call__(y_pred, y)`` (a batch-first tensor or a list of
channel-first tensors; returns the per-(sample, class) scores of the batch and
buffers them), ``aggregate(reduction)``, ``reset()``, ``get_buffer()``, and the
same numbers: each (sample, class) score is MONAI's formula applied to the same
sums, in the same dtype.

    from fastdice.compat.monai import DiceMetric      # instead of monai.metrics
    metric = DiceMetric(include_background=False, reduction="mean")
    for batch in val_loader:
        metric(y_pred=post_pred(model(batch["image"])), y=batch["label"])
    dice = metric.aggregate().item()
    metric.reset()

The sums (intersection, target and prediction volumes per sample and class) come
from one pass of ``torch.ops.fastdice.confusion_counts`` over ``y_pred`` (B, C,
*spatial) and ``y``, where ``y`` is a label map (B, 1, *spatial) of any dtype
(float, as ``LoadImage`` gives, or integer) or a one-hot (B, C, *spatial) tensor.
``y_pred`` holds binarized predictions, as MONAI requires (``AsDiscrete`` /
one-hot); a position is predicted for class c where ``y_pred[:, c] > 0`` (MONAI's
``.bool()``; the same for the 0/1 values MONAI expects; MeanIoU and
GeneralizedDiceScore of a soft, non-binarized ``y_pred`` differ from MONAI's
``sum(y * y_pred)``). Label-map predictions with ``num_classes`` take one
histogram of (sample, predicted, true) labels. Rarer inputs take an unfused torch
path with MONAI's semantics: a single channel, ``ignore_index`` with a one-hot
``y`` (MONAI masks positions), a label outside [0, C) in ``y`` (no class for
MONAI), a soft ``y``. ``per_component=True`` calls MONAI's own ``DiceHelper``
(connected components are not a count; it needs monai installed).

Under torch.distributed, ``get_buffer`` / ``aggregate`` gather every rank's
scores, as MONAI's ``Cumulative`` does. monai itself is not needed.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ...metrics import TP, FP, FN, _counts_op

__all__ = [
    "DiceMetric",
    "MeanIoU",
    "GeneralizedDiceScore",
    "compute_dice",
    "compute_iou",
    "compute_generalized_dice",
    "do_metric_reduction",
]

REDUCTIONS = ("none", "mean", "sum", "mean_batch", "sum_batch", "mean_channel", "sum_channel")
WEIGHT_TYPES = ("simple", "square", "uniform")


def _choice(name: str, value, choices) -> str:
    value = getattr(value, "value", value)  # MONAI's MetricReduction / Weight enums are str enums
    if value not in choices:
        raise ValueError(f"fastdice: {name} must be one of {list(choices)}, got {value!r}")
    return str(value)


# ----------------------------------------------------------------------------
# The sums: fused where the layout allows, MONAI's masking otherwise
# ----------------------------------------------------------------------------


def _check_batch(y_pred, y) -> None:
    if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"fastdice: y_pred and y must be tensors, got {type(y_pred).__name__} and {type(y).__name__}")
    if y_pred.dim() < 3:
        raise ValueError(f"y_pred should have at least 3 dimensions (batch, channel, spatial), got {y_pred.dim()}.")
    if y.dim() != y_pred.dim() or y.shape[0] != y_pred.shape[0] or y.shape[2:] != y_pred.shape[2:]:
        raise ValueError(
            f"fastdice: y must be (B, 1, *spatial) or (B, C, *spatial) with y_pred's batch and spatial sizes; "
            f"got y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)}"
        )


def _fused_sums(y_pred: torch.Tensor, y: torch.Tensor, ignore_index):
    """(intersection, y_sum, pred_sum) int64 [B, C] of the dense prediction y_pred (B, C, *)
    (class c predicted where y_pred > 0) and y, a label map (B, 1, *) or a 0/1 tensor (B, C, *)."""
    scores = y_pred if y_pred.is_floating_point() else y_pred.float()
    target = y.long() if y.shape[1] == 1 and y_pred.shape[1] > 1 else y
    counts = _counts_op(scores, target, "multilabel", 0.0, ignore_index)
    # The CPU kernel raises ValueError on a target it cannot count; the CUDA kernel marks the
    # sample with negative counts instead (no sync in the op): the same answer here.
    if counts.is_cuda and bool((counts < 0).any()):
        raise ValueError("fastdice: a label outside [0, C) or a one-hot target value other than 0 or 1")
    tp, fp, fn = counts[..., TP], counts[..., FP], counts[..., FN]
    return tp, tp + fn, tp + fp


def _label_map_sums(y_pred: torch.Tensor, y: torch.Tensor, num_classes: int, ignore_index):
    """(intersection, y_sum, pred_sum) int64 [B, C] of two label maps (B, 1, *): one
    histogram of (sample, predicted, true) class triples, no one-hot tensor. A label
    outside [0, C) is no class (MONAI's ``y_pred == c`` never holds); positions whose
    y is ``ignore_index`` count nowhere."""
    extra = num_classes  # the bin of "no class"
    bins = num_classes + 1

    def classes(t):
        t = t.reshape(t.shape[0], -1)
        index = t.long()
        inside = (index >= 0) & (index < num_classes)
        if t.is_floating_point():
            inside &= t == index.to(t.dtype)  # 1.5 (or NaN) is no class, as MONAI's y == c
        return torch.where(inside, index, torch.full_like(index, extra))

    pred, truth = classes(y_pred), classes(y)
    if ignore_index is not None:
        ignored = (y.reshape(y.shape[0], -1) == ignore_index)
        pred = torch.where(ignored, torch.full_like(pred, extra), pred)
        truth = torch.where(ignored, torch.full_like(truth, extra), truth)
    batch = torch.arange(pred.shape[0], device=pred.device).unsqueeze(1) * (bins * bins)
    hist = torch.bincount((batch + pred * bins + truth).reshape(-1), minlength=pred.shape[0] * bins * bins)
    confusion = hist.reshape(pred.shape[0], bins, bins)[:, :num_classes, :]  # [B, predicted, true(+none)]
    tp = torch.diagonal(confusion[:, :, :num_classes], dim1=1, dim2=2)
    pred_sum = confusion.sum(2)
    y_sum = hist.reshape(pred.shape[0], bins, bins)[:, :, :num_classes].sum(1)
    return tp, y_sum, pred_sum


def _product_sums(y_pred: torch.Tensor, y: torch.Tensor, mask=None):
    """MONAI's own sums for IoU and generalized Dice: ``sum(y * y_pred)``, ``sum(y)``,
    ``sum(y_pred)`` (soft values as they are), after its ignore mask."""
    if mask is not None:
        y_pred, y = y_pred * mask, y * mask
    return _spatial_sum(y * y_pred), _spatial_sum(y), _spatial_sum(y_pred)


def _fused_or_product_sums(y_pred: torch.Tensor, y: torch.Tensor):
    """The fused sums of a 0/1 (one-hot) y; MONAI's products where y holds other values (soft
    labels), which the op refuses."""
    try:
        return _fused_sums(y_pred, y, None)
    except ValueError:
        return _product_sums(y_pred, y)


def _ignore_mask(y: torch.Tensor, ignore_index):
    """MONAI's ``create_ignore_mask``: (B, 1, *) 1 where a position counts."""
    if ignore_index is None:
        return None
    if y.shape[1] == 1:
        return (y != ignore_index).float()
    if 0 <= ignore_index < y.shape[1]:
        return 1.0 - y[:, ignore_index : ignore_index + 1]
    return (y.sum(dim=1, keepdim=True) > 0).float()


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=tuple(range(2, t.dim())))


def _dice_dtype(y: torch.Tensor) -> torch.dtype:
    """The dtype of MONAI's Dice: a floating one-hot y's (its sums), else the default float
    dtype (2.0 times a sum of booleans)."""
    return y.dtype if y.shape[1] > 1 and y.is_floating_point() else torch.get_default_dtype()


def _overlap_dtype(y_pred: torch.Tensor, y: torch.Tensor) -> torch.dtype:
    """The dtype of MONAI's ``sum(y * y_pred)`` ratios (IoU, generalized Dice)."""
    dtype = torch.promote_types(y_pred.dtype, y.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


# ----------------------------------------------------------------------------
# Dice
# ----------------------------------------------------------------------------


def _dice_from_sums(tp, y_sum, pred_sum, ignore_empty: bool, dtype) -> torch.Tensor:
    """MONAI's ``DiceHelper.compute_channel`` on the sums, elementwise."""
    tp, y_sum, pred_sum = tp.to(dtype), y_sum.to(dtype), pred_sum.to(dtype)
    den = y_sum + pred_sum
    dice = (2.0 * tp) / den
    empty = torch.full_like(dice, math.nan) if ignore_empty else torch.where(
        den <= 0, torch.ones_like(dice), torch.zeros_like(dice)
    )
    return torch.where(y_sum > 0, dice, empty)


def _dice_sums(y_pred, y, include_background, num_classes, ignore_index):
    """The sums [B, C'] of MONAI's DiceHelper (apply_argmax=False, threshold=False) layout rules."""
    n_pred_ch = y_pred.shape[1] if num_classes is None else num_classes
    if n_pred_ch > 1 and y_pred.shape[1] == n_pred_ch and y.shape[1] in (1, n_pred_ch) and (
        ignore_index is None or y.shape[1] == 1
    ):
        try:
            tp, y_sum, pred_sum = _fused_sums(y_pred, y, ignore_index)
            first = 0 if include_background else 1
            return tp[:, first:], y_sum[:, first:], pred_sum[:, first:]
        except ValueError:
            pass  # a label outside [0, C) (no class for MONAI) or a soft one-hot y: MONAI's rules below
    if n_pred_ch > 1 and y_pred.shape[1] == 1 and y.shape[1] == 1:
        tp, y_sum, pred_sum = _label_map_sums(y_pred, y, n_pred_ch, ignore_index)
        first = 0 if include_background else 1
        return tp[:, first:], y_sum[:, first:], pred_sum[:, first:]
    # MONAI's per-channel rules, vectorized over (sample, class).
    channels = list(range(0 if include_background else 1, n_pred_ch)) if n_pred_ch > 1 else [1]
    if y_pred.shape[1] == 1:
        pred = torch.cat([y_pred[:, :1] == c for c in channels], dim=1)
    else:
        pred = y_pred[:, channels].bool()
    truth = torch.cat([y[:, :1] == c for c in channels], dim=1) if y.shape[1] == 1 else y[:, channels]
    mask = _ignore_mask(y, ignore_index)
    if mask is not None:
        pred = pred & mask.bool()
        truth = truth * mask.to(truth.dtype) if truth.dtype != torch.bool else truth & mask.bool()
    return _spatial_sum(truth * pred), _spatial_sum(truth), _spatial_sum(pred)


def compute_dice(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = True,
    ignore_empty: bool = True,
    num_classes: int | None = None,
    per_component: bool = False,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """MONAI's ``compute_dice``: the Dice per (sample, class), [B, C'] (see the module docstring)."""
    _check_batch(y_pred, y)
    if per_component:
        return _monai_per_component_dice(y_pred, y, include_background, ignore_empty, num_classes, ignore_index)
    tp, y_sum, pred_sum = _dice_sums(y_pred, y, include_background, num_classes, ignore_index)
    return _dice_from_sums(tp, y_sum, pred_sum, ignore_empty, _dice_dtype(y))


def _monai_per_component_dice(y_pred, y, include_background, ignore_empty, num_classes, ignore_index):
    try:
        from monai.metrics.meandice import DiceHelper
    except ImportError as error:
        raise RuntimeError(
            "fastdice: DiceMetric(per_component=True) runs MONAI's connected-component Dice, which needs monai "
            "installed (pip install monai)"
        ) from error
    return DiceHelper(
        include_background=include_background, reduction="none", get_not_nans=False, apply_argmax=False,
        ignore_empty=ignore_empty, num_classes=num_classes, per_component=True, ignore_index=ignore_index,
    )(y_pred=y_pred, y=y)


# ----------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------


def compute_iou(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = True,
    ignore_empty: bool = True,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """MONAI's ``compute_iou``: the IoU per (sample, class), [B, C']; y one-hot, y_pred's shape."""
    _check_batch(y_pred, y)
    n = y_pred.shape[1]
    shape_pred = (y_pred.shape[0], n - 1 if not include_background and n > 1 else n, *y_pred.shape[2:])
    shape_y = (y.shape[0], y.shape[1] - 1 if not include_background and y.shape[1] > 1 else y.shape[1], *y.shape[2:])
    if shape_pred != shape_y:
        raise ValueError(
            f"y_pred and y should have same shapes, got {torch.Size(shape_pred)} and {torch.Size(shape_y)}."
        )
    first = 0 if include_background or n == 1 else 1
    if ignore_index is None or 0 <= ignore_index < n:
        tp, y_sum, pred_sum = _fused_or_product_sums(y_pred, y)
        if ignore_index is not None:
            # A class index: that class's channel counts nothing (MONAI zeroes it), nothing else changes.
            keep = torch.arange(n, device=tp.device) != ignore_index
            tp, y_sum, pred_sum = tp * keep, y_sum * keep, pred_sum * keep
    else:  # a sentinel: positions where y is all zero count nowhere
        tp, y_sum, pred_sum = _product_sums(y_pred, y, _ignore_mask(y, ignore_index))
    tp, y_sum, pred_sum = tp[:, first:], y_sum[:, first:], pred_sum[:, first:]
    dtype = _overlap_dtype(y_pred, y)
    tp, y_sum, pred_sum = tp.to(dtype), y_sum.to(dtype), pred_sum.to(dtype)
    union = y_sum + pred_sum - tp
    if ignore_empty:
        return torch.where(y_sum > 0, tp / union, torch.full_like(union, math.nan))
    return torch.where(union > 0, tp / union, torch.ones_like(union))


# ----------------------------------------------------------------------------
# Generalized Dice
# ----------------------------------------------------------------------------


def compute_generalized_dice(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = True,
    weight_type: str = "square",
    sum_over_classes: bool = False,
    ignore_index: int | None = None,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """MONAI's ``compute_generalized_dice``: [B, 1] (summed over classes) or [B, C']."""
    _check_batch(y_pred, y)
    weight_type = _choice("weight_type", weight_type, WEIGHT_TYPES)
    if y.shape != y_pred.shape:
        raise ValueError(f"y_pred - {y_pred.shape} - and y - {y.shape} - should have the same shapes.")
    n = y_pred.shape[1]
    channels = [c for c in range(0 if include_background else 1, n) if c != ignore_index]
    if not channels:
        return torch.zeros(y_pred.shape[0], 1, device=y_pred.device)
    if ignore_index is None:
        tp, y_sum, pred_sum = _fused_or_product_sums(y_pred, y)
    else:  # MONAI masks positions (those of the ignored class, or where y is all zero)
        tp, y_sum, pred_sum = _product_sums(y_pred, y, _ignore_mask(y, ignore_index))
    dtype = _overlap_dtype(y_pred, y)
    index = torch.tensor(channels, device=tp.device)
    tp, y_sum, pred_sum = (t.index_select(1, index).to(dtype) for t in (tp, y_sum, pred_sum))
    denominator = y_sum + pred_sum
    y_float = y_sum.float()
    if weight_type == "simple":
        w = torch.reciprocal(y_float)
    elif weight_type == "square":
        w = torch.reciprocal(y_float * y_float)
    else:
        w = torch.ones_like(y_float)
    # An empty class takes the largest weight of its sample (1 if none is finite and positive).
    infs = torch.isinf(w)
    w = torch.where(infs, torch.zeros_like(w), w)
    max_w = w.max(dim=1, keepdim=True).values
    w = torch.where(infs, torch.where(max_w > 0, max_w, torch.ones_like(max_w)).expand_as(w), w)
    if sum_over_classes:
        numer = 2.0 * (tp * w).sum(dim=1, keepdim=True)
        denom = (denominator * w).sum(dim=1, keepdim=True)
        score = numer / denom
        return torch.where(denom == 0, torch.ones_like(score), score)
    numer, denom = 2.0 * (tp * w), denominator * w
    score = numer / denom
    return torch.where(denom == 0, ((pred_sum * w) == 0).to(score.dtype), score)


# ----------------------------------------------------------------------------
# Reduction and the cumulative buffer (MONAI's do_metric_reduction and Cumulative)
# ----------------------------------------------------------------------------


def do_metric_reduction(f: torch.Tensor, reduction="mean"):
    """MONAI's ``do_metric_reduction``: reduces [B, C, ...] scores over their non-NaN values;
    returns (reduced, not_nans)."""
    reduction = _choice("reduction", reduction, REDUCTIONS)
    nans = torch.isnan(f)
    not_nans = ~nans
    t_zero = torch.zeros(1, device=f.device, dtype=torch.float)
    if reduction == "none":
        return f, not_nans.float()
    f = torch.where(nans, torch.zeros_like(f), f)
    if reduction == "mean":
        not_nans = not_nans.sum(dim=1).float()
        f = torch.where(not_nans > 0, f.sum(dim=1).float() / not_nans, t_zero)
        not_nans = (not_nans > 0).sum(dim=0).float()
        f = torch.where(not_nans > 0, f.sum(dim=0).float() / not_nans, t_zero)
    elif reduction == "sum":
        not_nans = not_nans.sum(dim=[0, 1]).float()
        f = torch.sum(f, dim=[0, 1])
    elif reduction == "mean_batch":
        not_nans = not_nans.sum(dim=0).float()
        f = torch.where(not_nans > 0, f.sum(dim=0).float() / not_nans, t_zero)
    elif reduction == "sum_batch":
        not_nans = not_nans.sum(dim=0).float()
        f = f.sum(dim=0).float()
    elif reduction == "mean_channel":
        not_nans = not_nans.sum(dim=1).float()
        f = torch.where(not_nans > 0, f.sum(dim=1).float() / not_nans, t_zero)
    else:  # "sum_channel"
        not_nans = not_nans.sum(dim=1).float()
        f = f.sum(dim=1).float()
    return f, not_nans


def _all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (rows may differ in number), concatenated in rank order."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return t
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    local = t.to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64, device=device))
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device)


class _CumulativeIterationMetric:
    """MONAI's ``CumulativeIterationMetric`` contract: ``__call__`` scores a batch (a batch-first
    tensor, or lists of channel-first tensors), returns the scores and buffers them per sample;
    ``get_buffer`` concatenates the buffer (over all ranks); ``reset`` empties it."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._buffers: list[list[torch.Tensor]] | None = None
        self._synced_tensors = None
        self._synced = False

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, y_pred, y=None):
        if isinstance(y_pred, (list, tuple)) or isinstance(y, (list, tuple)):
            if y is None or len(y_pred) != len(y):
                raise ValueError("fastdice: y_pred and y must be lists of the same length of channel-first tensors")
            result = torch.cat(
                [self._compute_tensor(p.detach().unsqueeze(0), t.detach().unsqueeze(0)) for p, t in zip(y_pred, y)]
            )
        elif isinstance(y_pred, torch.Tensor):
            if not isinstance(y, torch.Tensor):
                raise ValueError(f"fastdice: y must be a tensor like y_pred, got {type(y).__name__}")
            result = self._compute_tensor(y_pred.detach(), y.detach())
        else:
            raise ValueError("y_pred or y must be a list/tuple of `channel-first` Tensors or a `batch-first` Tensor.")
        self.extend(result)
        return result

    def extend(self, *data: torch.Tensor) -> None:
        if self._buffers is None:
            self._buffers = [[] for _ in data]
        for buffer, d in zip(self._buffers, data):
            d = torch.as_tensor(d)
            buffer.extend(d.unbind(0) if d.dim() else [d])
        self._synced = False

    def append(self, *data) -> None:
        if self._buffers is None:
            self._buffers = [[] for _ in data]
        for buffer, d in zip(self._buffers, data):
            buffer.append(torch.as_tensor(d))
        self._synced = False

    def _sync(self) -> None:
        if self._synced or self._buffers is None:
            return
        self._synced_tensors = [_all_gather_cat(torch.stack(b, dim=0)) if b else None for b in self._buffers]
        self._synced = True

    def __len__(self) -> int:
        self._sync()
        if self._synced_tensors is None:
            return 0
        return max(len(x) for x in self._synced_tensors if x is not None)

    def get_buffer(self):
        self._sync()
        if self._synced_tensors is None:
            return None
        buffers = [x.detach().clone() if isinstance(x, torch.Tensor) else x for x in self._synced_tensors]
        return buffers[0] if len(buffers) == 1 else buffers

    def _buffer_tensor(self) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be PyTorch Tensor, got {type(data)}.")
        return data


class DiceMetric(_CumulativeIterationMetric):
    """MONAI 1.6's ``monai.metrics.DiceMetric`` on fastdice's fused counts (see the module docstring)."""

    def __init__(
        self,
        include_background: bool = True,
        reduction: str = "mean",
        get_not_nans: bool = False,
        ignore_empty: bool = True,
        num_classes: int | None = None,
        return_with_label: bool | Sequence[str] = False,
        per_component: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.reduction = _choice("reduction", reduction, REDUCTIONS)
        self.get_not_nans = get_not_nans
        self.ignore_empty = ignore_empty
        self.num_classes = num_classes
        self.return_with_label = return_with_label
        self.per_component = per_component
        self.ignore_index = ignore_index

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return compute_dice(
            y_pred, y, include_background=self.include_background, ignore_empty=self.ignore_empty,
            num_classes=self.num_classes, per_component=self.per_component, ignore_index=self.ignore_index,
        )

    def aggregate(self, reduction: str | None = None):
        """The buffered scores reduced (``reduction`` overrides the constructor's for this call);
        with ``get_not_nans``, ``(scores, not_nans)``; with ``return_with_label`` and
        "mean_batch", a dict ``{label: value}`` (MONAI's rounding to 4 decimals)."""
        f, not_nans = do_metric_reduction(self._buffer_tensor(), reduction or self.reduction)
        if self.reduction == "mean_batch" and self.return_with_label:
            if isinstance(self.return_with_label, bool):
                first = 0 if self.include_background else 1
                f = {f"label_{i + first}": round(v.item(), 4) for i, v in enumerate(f)}
            else:
                f = {key: round(v.item(), 4) for key, v in zip(self.return_with_label, f)}
        return (f, not_nans) if self.get_not_nans else f


class MeanIoU(_CumulativeIterationMetric):
    """MONAI 1.6's ``monai.metrics.MeanIoU`` on fastdice's fused counts (y one-hot, y_pred's shape)."""

    def __init__(
        self,
        include_background: bool = True,
        reduction: str = "mean",
        get_not_nans: bool = False,
        ignore_empty: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.reduction = _choice("reduction", reduction, REDUCTIONS)
        self.get_not_nans = get_not_nans
        self.ignore_empty = ignore_empty
        self.ignore_index = ignore_index

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return compute_iou(
            y_pred, y, include_background=self.include_background, ignore_empty=self.ignore_empty,
            ignore_index=self.ignore_index,
        )

    def aggregate(self, reduction: str | None = None):
        f, not_nans = do_metric_reduction(self._buffer_tensor(), reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


class GeneralizedDiceScore(_CumulativeIterationMetric):
    """MONAI 1.6's ``monai.metrics.GeneralizedDiceScore`` on fastdice's fused counts."""

    def __init__(
        self,
        include_background: bool = True,
        reduction: str = "mean",
        weight_type: str = "square",
        ignore_index: int | None = None,
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.reduction = _choice("reduction", reduction, REDUCTIONS)
        self.weight_type = _choice("weight_type", weight_type, WEIGHT_TYPES)
        self.ignore_index = ignore_index
        self.epsilon = float(epsilon)
        self.sum_over_classes = self.reduction in ("sum", "mean", "mean_channel", "sum_channel")

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return compute_generalized_dice(
            y_pred, y, include_background=self.include_background, weight_type=self.weight_type,
            sum_over_classes=self.sum_over_classes, ignore_index=self.ignore_index, epsilon=self.epsilon,
        )

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:
        """The buffered scores reduced with the constructor's ``reduction`` (MONAI ignores this
        argument, deprecated since 1.3.3: the scores were summed over classes or not for it)."""
        f, _ = do_metric_reduction(self._buffer_tensor(), self.reduction)
        return f
