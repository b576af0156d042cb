"""The Dice-family losses as functions of tensors, in the spirit of ``torch.nn.functional``.

Every fastdice loss is one fused statistics pass (``fastdice::dice_stats``: the
activation, the products and the sums over space, per sample and class) and an
O(B*C) epilogue on its output (``fastdice::dice_loss_from_stats``, or a few
tensor ops). This module is the one Python that calls those ops for losses:
the native modules (``fastdice.DiceLoss``, ...) hold their options and call the
``*_with_options`` functions here; the compat modules (``fastdice.compat``)
translate their peer's arguments and call the statistics and formulas here.

Losses of tensors, with the keyword options of the classes of the same name:
    :func:`dice_loss`, :func:`dice_ce_loss`, :func:`dice_focal_loss`,
    :func:`tversky_loss`, :func:`generalized_dice_loss`.

The same from options built once (what the modules call):
    :func:`dice_loss_with_options`, :func:`dice_ce_loss_with_options`,
    :func:`tversky_loss_with_options`, :func:`generalized_dice_loss_with_options`.

The statistics and the formulas on them (each written once):
    :func:`dice_stats`, :func:`dice_loss_from_stats` (the epilogue op) with
    :func:`epilogue_args`, :func:`pool_stats`, :func:`reduce_losses`,
    :func:`tp_fp_fn`, :func:`dice_score`, :func:`tversky_score`,
    :func:`generalized_dice_weights`, :func:`generalized_dice_score`,
    :func:`pixel_loss_from_stats`, :func:`all_reduce_stats`; the statistic
    indices ``TP``, ``SUM_P``, ... as the extension defines them.
"""

import functools
import math
from typing import Literal, NamedTuple, Optional

import torch

from . import _api, _ops
from ._api import native_arguments
from ._ops import (  # noqa: F401  (the statistics' layout, read from the extension)
    MAX_REGIONS,
    NUM_STATS,
    PIXEL_LOSS,
    PIXEL_LOSS_TARGET,
    REGION_LABELS,
    STAT_INDEX,
    STAT_NAMES,
    SUM_ABS_DIFF,
    SUM_ABS_P,
    SUM_ABS_T,
    SUM_P,
    SUM_P2,
    SUM_T,
    SUM_T2,
    TP,
    VALID_COUNT,
    dice_loss_from_stats,
    epilogue_args,
    stats_dtype,
)
from .errors import LabelOutOfRangeError
from .options import (
    LABEL_DTYPES,
    Activation,
    CEOptions,
    DiceOptions,
    Pooling,
    Reduction,
    RegionsLike,
    WeightLike,
    ce_options,
    check_weight_values,
    generalized_dice_options,
    tversky_options,
    weight_tensor,
)

# ---------------------------------------------------------------------------
# The statistics
# ---------------------------------------------------------------------------


@functools.wraps(_ops.dice_stats)
def dice_stats(*args, **kwargs) -> torch.Tensor:
    # The op wrapper's signature and docstring; a label outside its range (the extension's
    # IndexError) raises fastdice.LabelOutOfRangeError, a ValueError and the RuntimeError
    # MONAI, smp and nnU-Net raise there.
    try:
        return _ops.dice_stats(*args, **kwargs)
    except IndexError as error:
        raise LabelOutOfRangeError(str(error)) from None


def peer_activation(activation: str) -> str:
    """The op's activation for a peer's semantics (the compat modules): without an
    activation MONAI, smp and nnU-Net take any values, so 'none' (probabilities,
    checked to lie in [0, 1]) becomes 'identity' (the input as it is)."""
    return "identity" if activation == "none" else activation


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks."""

    @staticmethod
    def forward(ctx, tensor, group):
        import torch.distributed as dist

        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_stats(s: torch.Tensor, group=None) -> torch.Tensor:
    """Sum of the pooled statistics over all ranks, differentiably.

    Every rank computes the same loss of the global statistics; backward sums
    the gradient over ranks too, so each rank's input gradient is world_size
    times its share of the single-process gradient, and DDP's gradient
    averaging (division by world_size) gives parameter gradients equal to
    single-process training on the concatenated batch.
    """
    return _AllReduceSum.apply(s, group)


def pool_stats(stats: torch.Tensor, opts: DiceOptions, weight: Optional[torch.Tensor], process_group=None):
    """Drops the background if asked and pools [B, C, K] statistics as
    opts.pooling says ('global': K, weighted by class; 'batch': [C, K];
    'sample': [B, C, K]), all-reducing them when distributed. Returns the
    pooled statistics and the class weight still to apply to the losses."""
    if not opts.include_background and stats.shape[1] > 1:
        stats = stats[:, 1:]
        weight = weight[1:] if weight is not None else None
    if opts.pooling == "global":
        if weight is not None:
            stats = stats * weight[None, :, None]
            weight = None
        s = stats.sum((0, 1))
    elif opts.pooling == "batch":
        s = stats.sum(0)
    else:
        s = stats
    if opts.distributed:
        # Pooled over the local batch first: ranks with empty or fully ignored
        # batches contribute zeros of the same shape and still take part.
        s = all_reduce_stats(s, process_group)
    return s, weight


def reduce_losses(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """The losses reduced as ``reduction`` says: ``"mean"``, ``"sum"``, or ``"none"`` (unchanged)."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# ---------------------------------------------------------------------------
# The formulas on the statistics
# ---------------------------------------------------------------------------

#: The forms of the sums behind the Dice family's ratios (see tp_fp_fn).
FORMS = ("plain", "squared", "soft_label", "difference")


def _overlap_sums(s: torch.Tensor, form: str):
    """``(tp, predicted, ground)`` of statistics ``s[..., NUM_STATS]`` in ``form``."""
    if form == "squared":
        return s[..., TP], s[..., SUM_P2], s[..., SUM_T2]
    if form == "soft_label":
        # (|p|_1 + |t|_1 - |p - t|_1) / 2 equals sum p*t for hard labels and stays
        # correct for soft ones.
        predicted, ground = s[..., SUM_ABS_P], s[..., SUM_ABS_T]
        return (predicted + ground - s[..., SUM_ABS_DIFF]) / 2, predicted, ground
    if form == "difference":
        predicted, ground = s[..., SUM_P], s[..., SUM_T]
        return (predicted + ground - s[..., SUM_ABS_DIFF]) / 2, predicted, ground
    return s[..., TP], s[..., SUM_P], s[..., SUM_T]


def tp_fp_fn(s: torch.Tensor, form: str = "plain"):
    """True positives, false positives and false negatives of statistics ``s[..., NUM_STATS]``.

    ``form``: 'plain' (tp = sum p*t, fp = sum p - tp, fn = sum t - tp), 'squared'
    (sum p^2 and sum t^2 for sum p and sum t), 'soft_label' (tp = (|p|_1 + |t|_1 -
    |p - t|_1) / 2 with |p|_1, |t|_1 for sum p, sum t: exact for soft targets),
    'difference' (tp = (sum p + sum t - |p - t|_1) / 2, smp's soft intersection)."""
    tp, predicted, ground = _overlap_sums(s, form)
    return tp, predicted - tp, ground - tp


def dice_terms(s: torch.Tensor, form: str = "plain"):
    """``(intersection, denominator)`` of the Dice ratio in ``form`` (see tp_fp_fn):
    tp and the sum of the two volumes."""
    tp, predicted, ground = _overlap_sums(s, form)
    return tp, predicted + ground


def dice_score(
    intersection: torch.Tensor,
    denominator: torch.Tensor,
    smooth_nr: float,
    smooth_dr: float,
    jaccard: bool = False,
    min_denominator: Optional[float] = None,
) -> torch.Tensor:
    """``(2 I + smooth_nr) / (D + smooth_dr)``, with ``jaccard`` the soft IoU
    ``(I + smooth_nr) / (D - I + smooth_dr)``; ``min_denominator`` floors the
    smoothed denominator."""
    if jaccard:
        numerator, denominator = intersection + smooth_nr, denominator - intersection + smooth_dr
    else:
        numerator, denominator = 2 * intersection + smooth_nr, denominator + smooth_dr
    if min_denominator is not None:
        denominator = torch.clip(denominator, min_denominator)
    return numerator / denominator


def tversky_score(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, alpha: float, beta: float, smooth_nr: float,
    smooth_dr: float, min_denominator: Optional[float] = None,
) -> torch.Tensor:
    """``(tp + smooth_nr) / (tp + alpha fp + beta fn + smooth_dr)``; ``min_denominator``
    floors the denominator."""
    denominator = tp + alpha * fp + beta * fn + smooth_dr
    if min_denominator is not None:
        denominator = denominator.clamp_min(min_denominator)
    return (tp + smooth_nr) / denominator


def generalized_dice_weights(ground: torch.Tensor, w_type: str) -> torch.Tensor:
    """The class weights of the Generalized Dice over the last axis: 1 / G^2 ('square'),
    1 / G ('simple') or 1 ('uniform') of the target volumes ``ground``; a class whose
    weight is infinite (absent, or a volume so small that it overflows) takes the
    largest finite weight. A ``ground`` that requires grad is differentiated through
    them; an infinite weight's division is redone on 1 so that the unselected branch
    cannot make the gradient 0 * inf = NaN."""

    def weights(g: torch.Tensor) -> torch.Tensor:
        if w_type == "square":
            return torch.reciprocal(g * g)
        if w_type == "simple":
            return torch.reciprocal(g)
        return torch.ones_like(g)

    with torch.no_grad():
        infinite = torch.isinf(weights(ground.detach()))
    w = weights(torch.where(infinite, torch.ones_like(ground), ground))
    w = torch.where(infinite, torch.zeros_like(w), w)
    largest = w.max(dim=-1, keepdim=True).values if w.numel() else w
    return torch.where(infinite, largest.expand_as(w), w)


def generalized_dice_score(
    tp: torch.Tensor, denominator: torch.Tensor, w: torch.Tensor, smooth_nr: float, smooth_dr: float,
    keepdim: bool = False,
) -> torch.Tensor:
    """``(2 sum_c w_c tp_c + smooth_nr) / (sum_c w_c D_c + smooth_dr)`` over the last axis."""
    numerator = 2 * (w * tp).sum(-1, keepdim=keepdim) + smooth_nr
    return numerator / ((w * denominator).sum(-1, keepdim=keepdim) + smooth_dr)


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

    total = weighted_sum(stats[..., PIXEL_LOSS_TARGET] if family == "cross_entropy" else stats[..., PIXEL_LOSS])
    if family == "cross_entropy" and label_smoothing > 0:
        total = (1 - label_smoothing) * total + (label_smoothing / num_classes) * weighted_sum(stats[..., PIXEL_LOSS])
    if reduction == "sum":
        return total
    if family == "cross_entropy":
        if label_map:
            denominator = weighted_sum(stats[..., SUM_T])  # sum over valid positions of w_{y_i}
        else:
            denominator = stats.new_ones(()) * positions  # no float(): a symbolic size stays symbolic
    else:
        # Valid elements: a label map's valid positions (the sum over classes
        # of its one-hot target) times C; a dense target's every element. A
        # per-class weight scales elements, not the count (BCEWithLogitsLoss).
        valid = stats[..., SUM_T].sum() if label_map else stats.new_ones(()) * positions
        denominator = valid * num_classes
    # No valid position: the sum is 0 too, and the term is a differentiable 0.
    return total / denominator.clamp_min(torch.finfo(stats.dtype).tiny)


# ---------------------------------------------------------------------------
# Inputs of the native losses
# ---------------------------------------------------------------------------


def align_shapes(input: torch.Tensor, target: torch.Tensor, opts: DiceOptions, has_weight: bool):
    """Returns (input, target) in the op's layout: input (B, C, *spatial).

    A 1-D input, or a dense target with the input's element count but another
    shape, is accepted where the result does not depend on which axis is the
    class axis (elementwise activation, global pooling, no per-class options)
    or where C == 1: the tensors are then paired element by element.
    """
    if input.dim() == 0:
        raise ValueError("fastdice: input must have at least one dimension, got a 0-dim tensor")
    class_free = (
        opts.activation != "softmax"
        and opts.pooling == "global"
        and opts.include_background
        and not has_weight
    )
    is_label = target.dtype in LABEL_DTYPES and not (input.dim() >= 2 and input.shape[1] == 1)
    if input.dim() == 1:
        if not class_free:
            raise ValueError(
                f"fastdice: input of shape {tuple(input.shape)} has no class axis; options "
                f"activation='softmax', pooling!='global', include_background=False and weight "
                f"need input of shape (B, C, *spatial)"
            )
        input = input.reshape(1, 1, -1)
        is_label = False
    _api.refuse_float_label_map(input, target)
    dense_target = target.dtype.is_floating_point or target.dtype == torch.bool or not is_label
    if dense_target and target.shape != input.shape and target.numel() == input.numel():
        if class_free or input.shape[1] == 1:
            target = target.reshape(input.shape)
    return input, target


def check_tensors(input: torch.Tensor, target: torch.Tensor, opts: DiceOptions) -> None:
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"fastdice: input and target must be tensors, got {type(input).__name__} and {type(target).__name__}"
        )
    if input.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"fastdice: input must be float16, bfloat16, float32 or float64, got {input.dtype}")
    if target.is_complex():
        raise TypeError(f"fastdice: target must be real (float, bool or integer), got {target.dtype}")
    if input.device != target.device:
        raise ValueError(f"fastdice: input is on {input.device} but target is on {target.device}")
    if opts.activation == "softmax" and input.dim() >= 2 and input.shape[1] == 1:
        _api.warn("fastdice: softmax over a single channel gives p = 1 everywhere")


def native_inputs(
    input: torch.Tensor, target: torch.Tensor, opts: DiceOptions, has_weight: bool,
    needs_class_axis: Optional[str] = None, mask: Optional[torch.Tensor] = None,
):
    """The checks of a native loss: returns ``(input, target)`` in the op's layout.
    ``needs_class_axis``: the loss's name, when its input must be
    (B, C, *spatial) whatever the options. ``mask``: the loss mask
    (B, *spatial) / (B, 1, *spatial) of the forward, or None."""
    check_tensors(input, target, opts)
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(f"fastdice: mask must be a tensor (bool, uint8 or floating 0 / 1), got {type(mask).__name__}")
    if mask is not None and input.dim() < 2:
        raise ValueError(f"fastdice: a mask needs input of shape (B, C, *spatial), got {tuple(input.shape)}")
    if needs_class_axis is not None and input.dim() < 2:
        raise ValueError(f"fastdice: {needs_class_axis} needs input of shape (B, C, *spatial), got {tuple(input.shape)}")
    input, target = align_shapes(input, target, opts, has_weight or needs_class_axis is not None)
    if not opts.include_background and input.shape[1] == 1:
        _api.warn("fastdice: include_background=False ignored with a single channel")
    if opts.regions is not None and target.dtype not in LABEL_DTYPES:
        raise TypeError(
            f"fastdice: regions= needs an integer label map target (B, *spatial) or (B, 1, *spatial), got dtype "
            f"{target.dtype}; a dense region target (one channel per region) needs no regions="
        )
    return input, target


def statistics(
    input: torch.Tensor, target: torch.Tensor, opts: DiceOptions, pixel_loss: str = "none", focal_gamma: float = 0.0,
    mask: Optional[torch.Tensor] = None, count_valid: bool = False,
) -> torch.Tensor:
    """The fused statistics of checked input and target (native_inputs) as ``opts`` ask.
    ``count_valid``: fill the VALID_COUNT statistic (the full statistics) whatever the options."""
    return dice_stats(
        input, target, opts.activation, opts.full_stats or count_valid, opts.ignore_index, pixel_loss, focal_gamma,
        mask, opts.region_bits,
    )


def class_weight(
    buffer: Optional[torch.Tensor], value: WeightLike, num_classes: int, dtype: torch.dtype, device: torch.device,
    name: str = "weight",
) -> Optional[torch.Tensor]:
    """A per-class weight as one entry per class in ``dtype`` on ``device``:
    a module's buffer (checked against the class count) or else ``value``
    (a number, sequence, tensor or None, see weight_tensor)."""
    if buffer is None:
        return weight_tensor(value, num_classes, dtype, device)
    if buffer.numel() != num_classes:
        raise ValueError(f"fastdice: {name} has {buffer.numel()} entries but the input has {num_classes} classes")
    return buffer.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------
# The Dice loss
# ---------------------------------------------------------------------------


def per_position_pixel_sums(stats: torch.Tensor, positions) -> torch.Tensor:
    """stats with the pixel-loss sums (the last two statistics) divided by
    ``positions`` (an int or a symbolic size; 0 positions divide by 1: the
    sums are 0 then)."""
    pixel = stats[..., PIXEL_LOSS:] / torch.sym_max(positions, 1)
    return torch.cat((stats[..., :PIXEL_LOSS], pixel), -1)


def fused_epilogue_applies(opts: DiceOptions, *weights: Optional[torch.Tensor]) -> bool:
    """Whether the one-op epilogue (fastdice::dice_loss_from_stats) computes the
    whole loss (Dice and CE terms) from the local statistics: not when the
    pooled statistics must be all-reduced between pooling and ratio
    (distributed), nor for a weight that requires grad (the op treats
    weights as constants)."""
    return not opts.distributed and not any(w is not None and w.requires_grad for w in weights)


def fused_loss_from_stats(
    stats: torch.Tensor,
    opts: DiceOptions,
    weight: Optional[torch.Tensor],
    ce_weight: Optional[torch.Tensor] = None,
    *,
    ce_label_map: bool = True,
    ce_positions=0,
    **ce_options,
) -> torch.Tensor:
    """``lambda_dice * Dice + lambda_ce * CE`` of the statistics in one op
    (fastdice::dice_loss_from_stats), the Dice term as ``opts`` say, the CE
    term's options (lambda_dice, lambda_ce, ce_family, label_smoothing) by
    keyword.

    ce_positions (B * spatial size, the mean's denominator for a dense target)
    may be a symbolic size under ``torch.compile(dynamic=True)``: the op's
    ``int`` argument would specialize the graph on it (a recompilation per
    batch or spatial size), so the pixel-loss sums are divided by it here, in
    a tensor op, and the op gets 1. Label maps and reduction 'sum' do not
    use it (the op gets 0).
    """
    if ce_options.get("ce_family", "none") != "none" and not ce_label_map and opts.reduction == "mean":
        stats = per_position_pixel_sums(stats, ce_positions)
        ce_positions = 1
    else:
        ce_positions = 0
    return dice_loss_from_stats(
        stats, weight, ce_weight, **opts.epilogue_options(), ce_label_map=ce_label_map, ce_positions=ce_positions,
        **ce_options,
    )


def loss_from_stats(
    stats: torch.Tensor, opts: DiceOptions, weight: Optional[torch.Tensor], process_group=None
) -> torch.Tensor:
    """The Dice-family loss from per-(sample, class) statistics [B, C, NUM_STATS].

    Always the epilogue op, except for a weight that requires grad (the op
    treats weights as constants): then the formula in tensor ops. With
    ``distributed=True`` the statistics are pooled and all-reduced first and
    the op gets the pooled statistics as one sample ([1, C', K], or [1, 1, K]
    for global pooling, the class weight already inside)."""
    if weight is not None and weight.requires_grad:
        return loss_from_stats_eager(stats, opts, weight, process_group)
    if not opts.distributed:
        return _ops.DICE_LOSS_FROM_STATS(stats, weight, None, *opts.epilogue_args)
    s, weight = pool_stats(stats, opts, weight, process_group)
    pooled = s.reshape(1, -1, s.shape[-1])  # background already dropped
    return dice_loss_from_stats(pooled, weight, None, args=opts.pooled_epilogue_args)


def loss_from_stats_eager(
    stats: torch.Tensor, opts: DiceOptions, weight: Optional[torch.Tensor], process_group=None
) -> torch.Tensor:
    """loss_from_stats in tensor ops, for a weight that requires grad
    (differentiable through the weights and the all-reduce)."""
    s, weight = pool_stats(stats, opts, weight, process_group)
    intersection, denominator = dice_terms(s, opts.form)
    score = dice_score(intersection, denominator, opts.smooth_nr, opts.smooth_dr, opts.jaccard)
    loss = -torch.log(score.clamp_min(opts.log_eps)) if opts.log_loss else 1 - score
    if weight is not None:
        loss = loss * weight
    return reduce_losses(loss, opts.reduction)


def dice_loss_with_options(
    input: torch.Tensor, target: torch.Tensor, opts: DiceOptions, *, weight: WeightLike = None,
    weight_buffer: Optional[torch.Tensor] = None, process_group=None, mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The Dice loss of ``input`` and ``target`` as ``opts`` say. ``weight_buffer``:
    a module's per-class weight buffer, or None for ``weight`` (a number, sequence,
    tensor or None).

    Everything but the epilogue op runs before the statistics op: the statistics
    op streams the whole input through the caches, and Python run after it finds
    its own data evicted (the class weight took 16 us there, 1.2 us before the op,
    at 2x4x64^3 on 2 CPU threads)."""
    has_weight = weight_buffer is not None or weight is not None
    input, target = native_inputs(input, target, opts, has_weight, mask=mask)
    w = class_weight(weight_buffer, weight, input.shape[1], stats_dtype(input.dtype), input.device)
    stats = statistics(input, target, opts, mask=mask)
    return _api.zero_if_empty(loss_from_stats(stats, opts, w, process_group), input, opts.distributed)


@native_arguments
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
    regions: RegionsLike = None,
    process_group=None,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Functional form of :class:`fastdice.DiceLoss`, with the same keyword options:
    activation, pooling, include_background, weight, ignore_index, smooth_nr,
    smooth_dr, squared, jaccard, log_loss, soft_label, reduction, log_eps,
    distributed, process_group, regions (see :class:`fastdice.DiceLoss`), and the
    loss mask ``mask`` of :meth:`fastdice.DiceLoss.forward`."""
    opts = DiceOptions(
        activation=activation, pooling=pooling, include_background=include_background,
        ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
        log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps, distributed=distributed,
        regions=regions,
    )
    check_weight_values(weight)
    return dice_loss_with_options(input, target, opts, weight=weight, process_group=process_group, mask=mask)


# ---------------------------------------------------------------------------
# Dice + cross-entropy / focal
# ---------------------------------------------------------------------------


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


def is_label_map(input: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether the op reads target as a label map (the rule of prepare_problem)."""
    if target.dtype not in LABEL_DTYPES:
        return False
    b, c, *spatial = input.shape
    shape = tuple(target.shape)
    label_shape = shape == (b, *spatial) or shape == (b, 1, *spatial)
    return label_shape and not (c == 1 and shape == tuple(input.shape))


def dice_ce_loss_with_options(
    input: torch.Tensor, target: torch.Tensor, opts: DiceOptions, ce: CEOptions, *, weight: WeightLike = None,
    weight_buffer: Optional[torch.Tensor] = None, ce_weight: WeightLike = None,
    ce_weight_buffer: Optional[torch.Tensor] = None, process_group=None, mask: Optional[torch.Tensor] = None,
    name: str = "DiceCELoss", terms=DiceCETerms,
):
    """``ce.lambda_dice * Dice + ce.lambda_ce * CE`` (the focal loss for ``ce.focal_gamma > 0``)
    of ``input`` and ``target`` from one fused pass, the Dice term as ``opts`` say;
    ``terms(loss, dice, ce)`` with ``ce.return_terms``. The weights as in
    :func:`dice_loss_with_options`; ``name``: the loss's name in messages."""
    pixel_loss = "cross_entropy" if opts.activation == "softmax" else "binary_cross_entropy"
    regions = opts.regions is not None
    # Regions with ignored or masked-out positions: the mean is over the valid positions,
    # which the kernel counts (VALID_COUNT, one of the full statistics).
    count_valid = regions and (mask is not None or opts.ignore_index is not None)
    # All that does not need the statistics is done before their op (see dice_loss_with_options).
    input, target = native_inputs(input, target, opts, True, name, mask)
    num_classes = input.shape[1]
    dtype = stats_dtype(input.dtype)
    weight = class_weight(weight_buffer, weight, num_classes, dtype, input.device)
    ce_weight = class_weight(ce_weight_buffer, ce_weight, num_classes, dtype, input.device, "ce_weight")
    positions = math.prod(input.shape[2:]) * input.shape[0]
    # Region targets are dense (one 0/1 channel per region), though read from a label map.
    label_map = is_label_map(input, target) and not regions
    fused = fused_epilogue_applies(opts, weight, ce_weight)
    stats = statistics(input, target, opts, pixel_loss, ce.focal_gamma, mask, count_valid)
    if count_valid:
        # A tensor (no host sync), which the fused epilogue (a number) cannot take.
        positions = stats[:, 0, VALID_COUNT].sum()
        fused = False
    elif mask is not None and not label_map:
        # A dense target's mean is over the kept positions: a tensor (no host sync), which the
        # fused epilogue (a number) cannot take.
        positions = (mask != 0).sum()
        fused = False
    if fused and not ce.return_terms:
        loss = fused_loss_from_stats(
            stats, opts, weight, ce_weight, ce_label_map=label_map, ce_positions=positions,
            lambda_dice=ce.lambda_dice, lambda_ce=ce.lambda_ce, ce_family=pixel_loss,
            label_smoothing=ce.label_smoothing,
        )
        return _api.zero_if_empty(loss, input, opts.distributed)
    dice = loss_from_stats(stats, opts, weight, process_group)
    ce_term = pixel_loss_from_stats(
        stats, family=pixel_loss, label_map=label_map, positions=positions, weight=ce_weight,
        label_smoothing=ce.label_smoothing, reduction=opts.reduction,
    )
    dice = _api.zero_if_empty(dice, input, opts.distributed)
    loss = ce.lambda_dice * dice + ce.lambda_ce * ce_term
    return terms(loss, dice, ce_term) if ce.return_terms else loss


@native_arguments
def dice_ce_loss(
    input: torch.Tensor,
    target: torch.Tensor,
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
    mask: Optional[torch.Tensor] = None,
):
    """Functional form of :class:`fastdice.DiceCELoss`, with the same keyword options, and
    the loss mask ``mask`` of its forward."""
    opts, ce = ce_options(
        "DiceCELoss", activation=activation, pooling=pooling, include_background=include_background,
        weight=weight, ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared,
        jaccard=jaccard, log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps,
        distributed=distributed, regions=regions, lambda_dice=lambda_dice, lambda_ce=lambda_ce,
        ce_weight=ce_weight, label_smoothing=label_smoothing, focal_gamma=focal_gamma, return_terms=return_terms,
    )
    return dice_ce_loss_with_options(
        input, target, opts, ce, weight=weight, ce_weight=ce_weight, process_group=process_group, mask=mask,
        name="dice_ce_loss",
    )


@native_arguments
def dice_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
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
    mask: Optional[torch.Tensor] = None,
):
    """Functional form of :class:`fastdice.DiceFocalLoss`, with the same keyword options,
    and the loss mask ``mask`` of its forward."""
    opts, ce = ce_options(
        "DiceFocalLoss", activation=activation, pooling=pooling, include_background=include_background,
        weight=weight, ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared,
        jaccard=jaccard, log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps,
        distributed=distributed, regions=regions, lambda_dice=lambda_dice, lambda_ce=lambda_focal,
        ce_weight=focal_weight, focal_gamma=gamma, return_terms=return_terms, gamma_name="gamma",
    )
    return dice_ce_loss_with_options(
        input, target, opts, ce, weight=weight, ce_weight=focal_weight, process_group=process_group, mask=mask,
        name="dice_focal_loss", terms=DiceFocalTerms,
    )


# ---------------------------------------------------------------------------
# Tversky and Generalized Dice
# ---------------------------------------------------------------------------


def tversky_loss_with_options(
    input: torch.Tensor, target: torch.Tensor, opts: DiceOptions, *, alpha: float, beta: float, gamma: float,
    weight: WeightLike = None, weight_buffer: Optional[torch.Tensor] = None, process_group=None,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The (focal) Tversky loss of ``input`` and ``target`` as ``opts`` say (see
    :class:`fastdice.TverskyLoss`); the weights as in :func:`dice_loss_with_options`."""
    has_weight = weight_buffer is not None or weight is not None
    input, target = native_inputs(input, target, opts, has_weight, mask=mask)
    w = class_weight(weight_buffer, weight, input.shape[1], stats_dtype(input.dtype), input.device)
    stats = statistics(input, target, opts, mask=mask)
    s, w = pool_stats(stats, opts, w, process_group)
    tp, fp, fn = tp_fp_fn(s)
    loss = 1 - tversky_score(tp, fp, fn, alpha, beta, opts.smooth_nr, opts.smooth_dr)
    if gamma != 1.0:
        loss = loss.clamp_min(0).pow(gamma)
    if w is not None:
        loss = loss * w
    return _api.zero_if_empty(reduce_losses(loss, opts.reduction), input, opts.distributed)


@native_arguments
def tversky_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    activation: Activation = "none",
    pooling: Pooling = "global",
    include_background: bool = True,
    weight: WeightLike = None,
    ignore_index: Optional[int] = None,
    smooth_nr: float = 1.0,
    smooth_dr: float = 1.0,
    reduction: Reduction = "mean",
    distributed: bool = False,
    regions: RegionsLike = None,
    process_group=None,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Functional form of :class:`fastdice.TverskyLoss`, with the same keyword options,
    and the loss mask ``mask`` of its forward."""
    opts, (alpha, beta, gamma) = tversky_options(
        alpha=alpha, beta=beta, gamma=gamma, activation=activation, pooling=pooling,
        include_background=include_background, ignore_index=ignore_index, smooth_nr=smooth_nr,
        smooth_dr=smooth_dr, reduction=reduction, distributed=distributed, regions=regions,
    )
    check_weight_values(weight)
    return tversky_loss_with_options(
        input, target, opts, alpha=alpha, beta=beta, gamma=gamma, weight=weight, process_group=process_group,
        mask=mask,
    )


def generalized_dice_loss_with_options(
    input: torch.Tensor, target: torch.Tensor, opts: DiceOptions, *, w_type: str, process_group=None,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The Generalized Dice loss of ``input`` and ``target`` as ``opts`` say (see
    :class:`fastdice.GeneralizedDiceLoss`)."""
    input, target = native_inputs(input, target, opts, False, mask=mask)
    stats = statistics(input, target, opts, mask=mask)
    s, _ = pool_stats(stats, opts, None, process_group)  # [B, C, K] or [C, K]
    tp, p_sum, g_sum = s[..., TP], s[..., SUM_P], s[..., SUM_T]
    w = generalized_dice_weights(g_sum, w_type)
    loss = 1 - generalized_dice_score(tp, p_sum + g_sum, w, opts.smooth_nr, opts.smooth_dr)
    return _api.zero_if_empty(reduce_losses(loss, opts.reduction), input, opts.distributed)


@native_arguments
def generalized_dice_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    w_type: Literal["square", "simple", "uniform"] = "square",
    activation: Activation = "none",
    pooling: Literal["sample", "batch"] = "sample",
    include_background: bool = True,
    ignore_index: Optional[int] = None,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    reduction: Reduction = "mean",
    distributed: bool = False,
    regions: RegionsLike = None,
    process_group=None,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Functional form of :class:`fastdice.GeneralizedDiceLoss`, with the same keyword
    options, and the loss mask ``mask`` of its forward."""
    opts = generalized_dice_options(
        w_type=w_type, activation=activation, pooling=pooling, include_background=include_background,
        ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, reduction=reduction,
        distributed=distributed, regions=regions,
    )
    return generalized_dice_loss_with_options(
        input, target, opts, w_type=w_type, process_group=process_group, mask=mask
    )


__all__ = [
    "dice_loss", "dice_ce_loss", "dice_focal_loss", "tversky_loss", "generalized_dice_loss",
    "dice_loss_with_options", "dice_ce_loss_with_options", "tversky_loss_with_options",
    "generalized_dice_loss_with_options", "dice_stats", "dice_loss_from_stats", "epilogue_args", "pool_stats",
    "reduce_losses", "tp_fp_fn", "dice_terms", "dice_score", "tversky_score", "generalized_dice_weights",
    "generalized_dice_score", "pixel_loss_from_stats", "all_reduce_stats", "DiceCETerms", "DiceFocalTerms",
    "LabelOutOfRangeError", "STAT_NAMES", "NUM_STATS",
]
