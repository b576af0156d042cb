"""Pure-PyTorch Dice losses, written plainly from the formulas.

The oracle of the tests and the 'eager reference' of the benchmarks: it
materializes the probabilities and a one-hot target like the usual eager
implementations, and shares nothing with the fused path: not the
computation, and not the defaults or the option rules either. They are
stated here again, plainly, on purpose: a wrong default or weight rule in
the code under test (fastdice.options) must not be shared by its oracle.
"""

import math
import numbers
from typing import Literal, Optional, Sequence, Union

import torch

Activation = Literal["none", "sigmoid", "softmax"]
Pooling = Literal["global", "batch", "sample"]
Reduction = Literal["mean", "sum", "none"]
WeightLike = Union[None, float, Sequence[float], torch.Tensor]

_LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_options(activation, pooling, smooth_nr, smooth_dr, reduction, log_eps, weight) -> None:
    """The option rules, stated for the oracle: choices, smoothing finite and
    >= 0, log_eps finite and > 0, a weight finite and >= 0 everywhere (a
    CUDA tensor is not inspected)."""
    for name, value, choices in (
        ("activation", activation, ("none", "sigmoid", "softmax")),
        ("pooling", pooling, ("global", "batch", "sample")),
        ("reduction", reduction, ("mean", "sum", "none")),
    ):
        if value not in choices:
            raise ValueError(f"reference: {name} must be one of {choices}, got {value!r}")
    for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"reference: {name} must be a finite number >= 0, got {value!r}")
    if isinstance(log_eps, bool) or not isinstance(log_eps, numbers.Real) or not (0 < log_eps < math.inf):
        raise ValueError(f"reference: log_eps must be a finite number > 0, got {log_eps!r}")
    if weight is None or (isinstance(weight, torch.Tensor) and weight.device.type != "cpu"):
        return
    if isinstance(weight, torch.Tensor):
        values = weight.double().flatten().tolist()
    elif isinstance(weight, numbers.Real):
        values = [weight]
    else:
        values = list(weight)
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"reference: weight must be finite and >= 0, got {weight!r}")


def _class_weight(weight: WeightLike, num_classes: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """One weight per class, in like's dtype: a number for every class, or one entry per class."""
    if weight is None:
        return None
    if isinstance(weight, numbers.Real):
        return torch.full((num_classes,), float(weight), dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weight).to(device=like.device, dtype=like.dtype)
    if w.dim() != 1 or w.numel() != num_classes:
        raise ValueError(f"reference: weight needs one entry per class ({num_classes}), got shape {tuple(w.shape)}")
    return w


def probabilities_and_target(input: torch.Tensor, target: torch.Tensor, activation: str = "none",
                             ignore_index: Optional[int] = None, regions=None):
    """(p, t, valid): activated input, dense target and valid mask, all (B, C, *spatial).

    regions (with an integer label map): one list of labels per channel; the
    target of channel c is 1 where the label is one of regions[c]."""
    x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
    if x.dim() == 1:
        x = x.reshape(1, 1, -1)
    is_label = target.dtype in _LABEL_DTYPES and x.shape[1] > 1 and target.numel() * x.shape[1] == x.numel()
    is_label = is_label or regions is not None
    if not is_label and target.shape != x.shape:
        target = target.reshape(x.shape)
    if activation == "sigmoid":
        p = torch.sigmoid(x)
    elif activation == "softmax":
        p = torch.softmax(x, dim=1)
    else:
        p = x
    if is_label:
        labels = target.reshape(x.shape[0], *x.shape[2:]).long()
        if ignore_index is not None:
            valid = labels != ignore_index
        else:
            valid = torch.ones_like(labels, dtype=torch.bool)
        if regions is not None:
            if len(regions) != x.shape[1]:
                raise ValueError(f"reference: {len(regions)} regions for {x.shape[1]} channels")
            one_hot = torch.stack(
                [torch.isin(labels, torch.tensor(list(r), device=labels.device)) for r in regions], 1
            ).to(p.dtype)
        else:
            classes = torch.arange(x.shape[1], device=labels.device).reshape(1, -1, *([1] * (x.dim() - 2)))
            one_hot = (labels.unsqueeze(1) == classes).to(p.dtype)
        valid = valid.unsqueeze(1).expand_as(p)
        t = torch.where(valid, one_hot, 0)
        p = torch.where(valid, p, 0)
    else:
        t = target.to(p.dtype)
        valid = torch.ones_like(p, dtype=torch.bool)
    return p, t, valid


def dice_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    activation: Activation = "none",
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
    reduction: Reduction = "mean",
    log_eps: float = 1e-7,
    distributed: bool = False,
    regions: Optional[Sequence[Sequence[int]]] = None,
) -> torch.Tensor:
    """Same options and result as :func:`fastdice.dice_loss` (activation,
    pooling, include_background, weight, ignore_index, smooth_nr, smooth_dr,
    squared, jaccard, log_loss, soft_label, reduction, log_eps, regions;
    distributed is refused), computed plainly in eager PyTorch."""
    _check_options(activation, pooling, smooth_nr, smooth_dr, reduction, log_eps, weight)
    if distributed:
        raise ValueError("reference: distributed=True is not supported; evaluate the concatenated batch instead")
    p, t, _ = probabilities_and_target(input, target, activation, ignore_index, regions)
    num_classes = p.shape[1]
    spatial = tuple(range(2, p.dim()))
    weight = _class_weight(weight, num_classes, p)
    if not include_background and num_classes > 1:
        p, t = p[:, 1:], t[:, 1:]
        weight = weight[1:] if weight is not None else None

    def total(v):
        """Sum over the pooled axes."""
        if pooling == "global":
            if weight is not None:
                v = v * weight.reshape(1, -1, *([1] * len(spatial)))
            return v.sum()
        if pooling == "batch":
            return v.sum((0,) + spatial)
        return v.sum(spatial) if spatial else v  # sum(()) would sum everything

    if squared:
        inter = total(p * t)
        denom = total(p * p) + total(t * t)
    elif soft_label:
        inter = (total(p.abs()) + total(t.abs()) - total((p - t).abs())) / 2
        denom = total(p.abs()) + total(t.abs())
    else:
        inter = total(p * t)
        denom = total(p) + total(t)
    if jaccard:
        union = denom - inter
        score = (inter + smooth_nr) / (union + smooth_dr)
    else:
        score = (2 * inter + smooth_nr) / (denom + smooth_dr)
    if log_loss:
        loss = -torch.log(torch.clamp(score, min=log_eps))
    else:
        loss = 1 - score
    if weight is not None and pooling != "global":
        loss = loss * weight
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    if input.numel() == 0:  # no elements: loss 0 for every pooling (the rule of fastdice.dice_loss)
        loss = torch.zeros_like(loss)
    return loss


class DiceLoss(torch.nn.Module):
    """Module form of :func:`dice_loss`: the options of :class:`fastdice.DiceLoss`
    (activation, pooling, include_background, weight, ignore_index, smooth_nr,
    smooth_dr, squared, jaccard, log_loss, soft_label, reduction, log_eps,
    regions)."""

    def __init__(
        self,
        *,
        activation: Activation = "none",
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
        reduction: Reduction = "mean",
        log_eps: float = 1e-7,
        regions: Optional[Sequence[Sequence[int]]] = None,
    ) -> None:
        super().__init__()
        self.options = dict(
            activation=activation, pooling=pooling, include_background=include_background, weight=weight,
            ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
            log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps, regions=regions,
        )
        _check_options(activation, pooling, smooth_nr, smooth_dr, reduction, log_eps, weight)

    def forward(self, input, target):
        return dice_loss(input, target, **self.options)
