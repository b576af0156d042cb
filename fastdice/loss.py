"""The user-facing Dice loss: one fused statistics op plus a tiny epilogue.

The heavy work (activation, products, sums over space) is the custom op
``fastdice::dice_stats``; everything here is O(B*C) arithmetic on its output.
"""

from dataclasses import fields
from typing import Optional

import torch
from torch import nn

from . import _api, _ops
from ._api import native_arguments
from .options import LABEL_DTYPES, Activation, DiceOptions, Pooling, Reduction, RegionsLike, WeightLike, check_weight_values, weight_tensor


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
    if (target.dtype.is_floating_point or target.dtype == torch.bool) and input.shape[1] > 1:
        b, c, *spatial = input.shape
        if tuple(target.shape) in ((b, *spatial), (b, 1, *spatial)):
            raise ValueError(
                f"fastdice: target of shape {tuple(target.shape)} is shaped like a label map for input "
                f"{tuple(input.shape)}, but its dtype is {target.dtype}: label maps must be integer tensors; pass "
                f"target.long() (float label maps, e.g. from MONAI's LoadImage, are not read as labels: that "
                f"would need a check of every value). A dense target must have the input's shape."
            )
    dense_target = target.dtype.is_floating_point or target.dtype == torch.bool or not is_label
    if dense_target and target.shape != input.shape and target.numel() == input.numel():
        if class_free or input.shape[1] == 1:
            target = target.reshape(input.shape)
    return input, target


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


def pool_stats(
    stats: torch.Tensor, opts: DiceOptions, weight: Optional[torch.Tensor], process_group=None
):
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
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


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
    return _ops.dice_loss_from_stats(
        stats, weight, ce_weight, **opts.epilogue_options(), ce_label_map=ce_label_map, ce_positions=ce_positions,
        **ce_options,
    )


def per_position_pixel_sums(stats: torch.Tensor, positions) -> torch.Tensor:
    """stats with the pixel-loss sums (the last two statistics) divided by
    ``positions`` (an int or a symbolic size; 0 positions divide by 1: the
    sums are 0 then)."""
    pixel = stats[..., _ops.PIXEL_LOSS :] / torch.sym_max(positions, 1)
    return torch.cat((stats[..., : _ops.PIXEL_LOSS], pixel), -1)


def fused_epilogue_applies(opts: DiceOptions, *weights: Optional[torch.Tensor]) -> bool:
    """Whether the one-op epilogue (fastdice::dice_loss_from_stats) computes the
    whole loss (Dice and CE terms) from the local statistics: not when the
    pooled statistics must be all-reduced between pooling and ratio
    (distributed), nor for a weight that requires grad (the op treats
    weights as constants)."""
    return not opts.distributed and not any(w is not None and w.requires_grad for w in weights)


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
    return _ops.dice_loss_from_stats(pooled, weight, None, **dict(opts.epilogue_options(), include_background=True))


def loss_from_stats_eager(
    stats: torch.Tensor, opts: DiceOptions, weight: Optional[torch.Tensor], process_group=None
) -> torch.Tensor:
    """loss_from_stats in tensor ops, for a weight that requires grad
    (differentiable through the weights and the all-reduce)."""
    s, weight = pool_stats(stats, opts, weight, process_group)
    intersection = s[..., _ops.TP]
    if opts.squared:
        denominator = s[..., _ops.SUM_P2] + s[..., _ops.SUM_T2]
    elif opts.soft_label:
        # (|p|_1 + |t|_1 - |p - t|_1) / 2 equals sum p*t for hard labels and
        # stays correct for soft ones.
        intersection = (s[..., _ops.SUM_ABS_P] + s[..., _ops.SUM_ABS_T] - s[..., _ops.SUM_ABS_DIFF]) / 2
        denominator = s[..., _ops.SUM_ABS_P] + s[..., _ops.SUM_ABS_T]
    else:
        denominator = s[..., _ops.SUM_P] + s[..., _ops.SUM_T]
    if opts.jaccard:
        score = (intersection + opts.smooth_nr) / (denominator - intersection + opts.smooth_dr)
    else:
        score = (2 * intersection + opts.smooth_nr) / (denominator + opts.smooth_dr)
    loss = -torch.log(score.clamp_min(opts.log_eps)) if opts.log_loss else 1 - score
    if weight is not None:
        loss = loss * weight
    return reduce_losses(loss, opts.reduction)


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
    """Functional form of :class:`DiceLoss`, with the same keyword options:
    activation, pooling, include_background, weight, ignore_index, smooth_nr,
    smooth_dr, squared, jaccard, log_loss, soft_label, reduction, log_eps,
    distributed, process_group, regions (see :class:`DiceLoss`), and the loss mask
    ``mask`` of :meth:`DiceLoss.forward`."""
    opts = DiceOptions(
        activation=activation, pooling=pooling, include_background=include_background, weight=weight,
        ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
        log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps, distributed=distributed,
        regions=regions,
    )
    check_weight_values(opts.weight)
    return _dice_loss(input, target, opts, None, process_group, mask)


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
    return _ops.dice_stats(
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


def dice_loss_of(
    input: torch.Tensor, target: torch.Tensor, opts: DiceOptions, weight: Optional[torch.Tensor],
    process_group=None, mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The Dice loss of checked input and target (native_inputs); ``weight``: one
    entry per class in the statistics' dtype, or None.

    The callers do their checks and build the weight before calling this, and
    after the statistics op there is little more than the epilogue op: the
    statistics op streams the whole input through the caches, and Python run
    after it finds its own data evicted (the class weight took 16 us there,
    1.2 us before the op, at 2x4x64^3 on 2 CPU threads)."""
    stats = statistics(input, target, opts, mask=mask)
    return _api.zero_if_empty(loss_from_stats(stats, opts, weight, process_group), input, opts.distributed)


def _dice_loss(
    input, target, opts: DiceOptions, weight: Optional[torch.Tensor], process_group=None, mask=None
) -> torch.Tensor:
    """The Dice loss; ``weight``: a module's weight buffer, or None for ``opts.weight``."""
    input, target = native_inputs(input, target, opts, weight is not None or opts.weight is not None, mask=mask)
    weight = class_weight(weight, opts.weight, input.shape[1], _ops.stats_dtype(input.dtype), input.device)
    return dice_loss_of(input, target, opts, weight, process_group, mask)


#: The dtype of the per-class weight buffers of every native loss (the user's
#: numbers kept exactly; cast to the statistics' dtype at use).
WEIGHT_DTYPE = torch.float64


class NativeLoss(nn.Module):
    """Base of the native losses (DiceLoss, TverskyLoss, GeneralizedDiceLoss,
    DiceCELoss, DiceFocalLoss): the options (``self.opts``), the per-class
    weight buffers, the statistics call, pickling and ``extra_repr``. A
    subclass validates its own arguments and keeps its own epilogue
    (``forward`` from ``self._stats``).

    ``weights``: name -> value of each per-class weight the loss takes. A
    sequence or tensor becomes the buffer ``name`` (float64, flattened; it
    follows ``.to()`` and ``state_dict``), a number stays a number (the
    buffer is None)."""

    #: True where the loss needs (B, C, *spatial) input whatever the options.
    needs_class_axis = False

    def __init__(self, opts: DiceOptions, process_group=None, **weights) -> None:
        super().__init__()
        self.opts = opts
        self.process_group = process_group
        self._weight_numbers = {}
        for name, value in weights.items():
            check_weight_values(value)
            number = value is None or isinstance(value, (int, float))
            self.register_buffer(name, None if number else torch.as_tensor(value, dtype=WEIGHT_DTYPE).flatten().clone())
            self._weight_numbers[name] = value if number else None

    def _has_weight(self) -> bool:
        return any(getattr(self, n) is not None or v is not None for n, v in self._weight_numbers.items())

    def _inputs(self, input: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """``(input, target)`` checked, in the op's layout: see native_inputs."""
        return native_inputs(
            input, target, self.opts, self._has_weight(), type(self).__name__ if self.needs_class_axis else None, mask
        )

    def _stats(
        self, input: torch.Tensor, target: torch.Tensor, pixel_loss: str = "none", focal_gamma: float = 0.0,
        mask: Optional[torch.Tensor] = None, count_valid: bool = False,
    ):
        """``(input, target, stats)``: native_inputs, then statistics."""
        input, target = self._inputs(input, target, mask)
        return input, target, statistics(input, target, self.opts, pixel_loss, focal_gamma, mask, count_valid)

    def _class_weight(self, name: str, num_classes: int, input: torch.Tensor) -> Optional[torch.Tensor]:
        """The weight ``name`` as one entry per class, in the statistics' dtype of ``input`` and on its
        device (or None)."""
        return class_weight(
            getattr(self, name), self._weight_numbers[name], num_classes, _ops.stats_dtype(input.dtype), input.device,
            name,
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["process_group"] = None  # process groups do not pickle; the default group is used after loading
        return state

    def _constructor_values(self) -> dict:
        """The constructor arguments as they are now (for extra_repr); a subclass adds its own."""
        values = {f.name: getattr(self.opts, f.name) for f in fields(self.opts) if f.name != "weight"}
        for name, number in self._weight_numbers.items():
            buffer = getattr(self, name)
            values[name] = buffer if buffer is not None else number
        return values

    def extra_repr(self) -> str:
        return _api.constructor_repr(self)


class DiceLoss(NativeLoss):
    """Dice loss computed by one fused pass forward and one fused pass backward.

    With no arguments it is the classic formula over all elements of
    probabilities ``input`` and a float ``target`` of the same size:
    ``1 - (2*sum(p*t) + 1) / (sum(p) + sum(t) + 1)``.

    Keyword options (all optional):
      activation: 'none' | 'sigmoid' | 'softmax' (over dim 1), fused in the kernel.
      pooling: 'global' (one Dice over everything), 'batch' (per class, pooled
        over batch and space), 'sample' (per sample and class).
      include_background: keep class 0.
      weight: per-class weight, a number or one entry per input class.
      ignore_index: label value whose elements leave every statistic (label maps).
      smooth_nr, smooth_dr: smoothing of numerator and denominator (1.0 each).
      squared: denominator sum(p^2) + sum(t^2).
      jaccard: soft IoU (I + smooth_nr) / (denominator - I + smooth_dr) instead of Dice.
      log_loss: -log(score) (score clamped to log_eps) instead of 1 - score.
      log_eps: the clamp of log_loss (1e-7).
      soft_label: intersection (|p|_1 + |t|_1 - |p - t|_1) / 2, exact for soft targets.
      reduction: 'mean' | 'sum' | 'none' over the per-class / per-sample losses.
      distributed: all-reduce the pooled statistics over the ranks of
        process_group (default: the default group) before the ratio: the
        global-batch Dice of DDP training (pooling 'batch' or 'global').
      process_group: the group of distributed=True.
      regions: region-based targets from an integer label map (nnU-Net's
        region training): one sequence of labels per input channel, e.g.
        [[1, 2, 3], [2, 3], [3]] for BraTS' whole tumour, tumour core and
        enhancing tumour. Channel c's target is 1 where the label is in
        regions[c]; membership is computed in the kernel, no region tensor is
        written. Labels lie in [0, 64) (others raise, except ignore_index),
        labels in no region are background; at most 32 regions.

    Arguments of MONAI's or smp's losses (softmax=True, batch=True, ...) raise
    a TypeError naming the native option; ``fastdice.compat.monai`` and
    ``fastdice.compat.smp`` take those signatures as they are.
    """

    @native_arguments
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
        distributed: bool = False,
        regions: RegionsLike = None,
        process_group=None,
    ) -> None:
        opts = DiceOptions(
            activation=activation, pooling=pooling, include_background=include_background,
            ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
            log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps, distributed=distributed,
        regions=regions,
        )
        super().__init__(opts, process_group, weight=weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The loss of ``input`` against ``target``; ``mask`` (optional, ``(B, *spatial)`` or
        ``(B, 1, *spatial)``, bool / uint8 / floating 0-1): where it is 0 a position adds to no
        statistic and gets exactly zero gradient (read in place, in the same pass)."""
        input, target = self._inputs(input, target, mask)
        weight = self._class_weight("weight", input.shape[1], input)
        return dice_loss_of(input, target, self.opts, weight, self.process_group, mask)
