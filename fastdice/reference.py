"""Pure-PyTorch Dice losses, written plainly from the formulas.

The oracle of the tests and the 'eager reference' of the benchmarks: it
materializes the probabilities and a one-hot target like the usual eager
implementations, and shares no computation with the fused path (only the
option names and their validation).
"""

from typing import Optional

import torch

from .options import Activation, DiceOptions, Pooling, Reduction, WeightLike, check_weight_values, weight_tensor

_LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def probabilities_and_target(input: torch.Tensor, target: torch.Tensor, opts: DiceOptions):
    """(p, t, valid): activated input, dense target and valid mask, all (B, C, *spatial)."""
    x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
    if x.dim() == 1:
        x = x.reshape(1, 1, -1)
    is_label = target.dtype in _LABEL_DTYPES and x.shape[1] > 1 and target.numel() * x.shape[1] == x.numel()
    if not is_label and target.shape != x.shape:
        target = target.reshape(x.shape)
    if opts.activation == "sigmoid":
        p = torch.sigmoid(x)
    elif opts.activation == "softmax":
        p = torch.softmax(x, dim=1)
    else:
        p = x
    if is_label:
        labels = target.reshape(x.shape[0], *x.shape[2:]).long()
        if opts.ignore_index is not None:
            valid = labels != opts.ignore_index
        else:
            valid = torch.ones_like(labels, dtype=torch.bool)
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
) -> torch.Tensor:
    """Same options and result as :func:`fastdice.dice_loss` (activation,
    pooling, include_background, weight, ignore_index, smooth_nr, smooth_dr,
    squared, jaccard, log_loss, soft_label, reduction, log_eps; distributed
    is refused), computed plainly in eager PyTorch."""
    opts = DiceOptions(
        activation=activation, pooling=pooling, include_background=include_background, weight=weight,
        ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
        log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps, distributed=distributed,
    )
    if opts.distributed:
        raise ValueError("reference: distributed=True is not supported; evaluate the concatenated batch instead")
    check_weight_values(opts.weight)
    p, t, _ = probabilities_and_target(input, target, opts)
    num_classes = p.shape[1]
    spatial = tuple(range(2, p.dim()))
    weight = weight_tensor(opts.weight, num_classes, p)
    if not opts.include_background and num_classes > 1:
        p, t = p[:, 1:], t[:, 1:]
        weight = weight[1:] if weight is not None else None

    def total(v):
        """Sum over the pooled axes."""
        if opts.pooling == "global":
            if weight is not None:
                v = v * weight.reshape(1, -1, *([1] * len(spatial)))
            return v.sum()
        if opts.pooling == "batch":
            return v.sum((0,) + spatial)
        return v.sum(spatial) if spatial else v  # sum(()) would sum everything

    if opts.squared:
        inter = total(p * t)
        denom = total(p * p) + total(t * t)
    elif opts.soft_label:
        inter = (total(p.abs()) + total(t.abs()) - total((p - t).abs())) / 2
        denom = total(p.abs()) + total(t.abs())
    else:
        inter = total(p * t)
        denom = total(p) + total(t)
    if opts.jaccard:
        union = denom - inter
        score = (inter + opts.smooth_nr) / (union + opts.smooth_dr)
    else:
        score = (2 * inter + opts.smooth_nr) / (denom + opts.smooth_dr)
    if opts.log_loss:
        loss = -torch.log(torch.clamp(score, min=opts.log_eps))
    else:
        loss = 1 - score
    if weight is not None and opts.pooling != "global":
        loss = loss * weight
    if opts.reduction == "mean":
        loss = loss.mean()
    elif opts.reduction == "sum":
        loss = loss.sum()
    if input.numel() == 0:  # no elements: loss 0 for every pooling (the rule of fastdice.dice_loss)
        loss = torch.zeros_like(loss)
    return loss


class DiceLoss(torch.nn.Module):
    """Module form of :func:`dice_loss`: the options of :class:`fastdice.DiceLoss`
    (activation, pooling, include_background, weight, ignore_index, smooth_nr,
    smooth_dr, squared, jaccard, log_loss, soft_label, reduction, log_eps)."""

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
    ) -> None:
        super().__init__()
        self.options = dict(
            activation=activation, pooling=pooling, include_background=include_background, weight=weight,
            ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
            log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps,
        )
        DiceOptions(**self.options)

    def forward(self, input, target):
        return dice_loss(input, target, **self.options)
