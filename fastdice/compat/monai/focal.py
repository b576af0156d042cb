"""The focal term of MONAI's DiceFocalLoss and GeneralizedDiceFocalLoss (MONAI's
sigmoid ``FocalLoss`` as they build it, ``monai/losses/focal_loss.py``): from the
fused sums, or for small eager inputs MONAI's own computation in PyTorch."""

from __future__ import annotations

import math

import torch
from torch.nn.modules.loss import _Loss

from ... import _api
from ... import functional as fd
from .base import _as_label_map, _has_negative, _lookup_reduction


class _FocalTerm(_Loss):
    """The ``focal`` submodule of MONAI's DiceFocalLoss (a FocalLoss), kept for
    its attributes and state_dict key ``focal.class_weight``; the focal term
    itself is computed by the fused op in DiceFocalLoss.forward."""

    def __init__(self, include_background, gamma, weight, alpha, reduction):
        super().__init__(reduction=_lookup_reduction(reduction))
        self.include_background = include_background
        self.to_onehot_y = False
        self.gamma = gamma
        self.weight = weight
        self.use_softmax = False
        self.alpha = None if alpha is None else float(alpha)
        self.register_buffer("class_weight", torch.as_tensor(weight) if weight is not None else None)
        self.ignore_index = None


def _sigmoid_focal_elementwise(input, target, gamma, alpha):
    """MONAI's sigmoid_focal_loss, op for op (not fused: N-sized)."""
    loss = input - input * target - torch.nn.functional.logsigmoid(input)
    invprobs = torch.nn.functional.logsigmoid(-input * (target * 2 - 1))
    loss = (invprobs * gamma).exp() * loss
    if alpha is not None:
        alpha_t = torch.tensor(alpha, device=input.device, dtype=input.dtype)  # MONAI rounds 1 - alpha in this dtype
        loss = (target * alpha_t + (1 - target) * (1 - alpha_t)) * loss
    return loss


#: Inputs of at most this many elements get the focal term of DiceFocalLoss and
#: GeneralizedDiceFocalLoss in eager mode as MONAI's FocalLoss computes it, op for
#: op in PyTorch (the same float32 bits as MONAI on the same device and torch),
#: not from the fused sums. A fused sum cannot reproduce MONAI's float32 rounding
#: (its own element formula and summation order): about half of MONAI's float32
#: focal terms are 1-2 ulps from the correctly rounded value, so the fused term,
#: however accurate, fails MONAI's own tests (``DiceFocal == Dice +
#: lambda * FocalLoss`` at rtol=1e-7) for ~45-65% of their random draws. At
#: this size the fused pass saves neither time nor memory (the PyTorch
#: temporaries are at most 16 KiB each). Larger inputs, and every size under
#: torch.compile / torch.export (one graph for all sizes), use the fused sums.
EXACT_FOCAL_MAX_NUMEL = 4096


def _focal_in_torch(module, input: torch.Tensor) -> bool:
    """Whether ``module``'s focal term is MONAI's PyTorch computation (reduction
    'none', or a small eager input: see EXACT_FOCAL_MAX_NUMEL) rather than the
    fused sums, so that the Dice pass need not carry them."""
    if module.focal.reduction == "none":
        return True
    return not torch.compiler.is_compiling() and input.numel() <= EXACT_FOCAL_MAX_NUMEL


def _focal_term(
    module, input: torch.Tensor, target: torch.Tensor, raw, label_target: bool, in_torch: bool
) -> torch.Tensor:
    """MONAI's FocalLoss (sigmoid, as DiceFocalLoss and GeneralizedDiceFocalLoss
    build it) of ``module.focal``'s settings, from the op's unpooled statistics
    ``raw`` (with the focal sums; None: a second fused pass makes them), or with
    ``in_torch`` (see _focal_in_torch) MONAI's computation in PyTorch.
    ``label_target``: the target is a (B, 1, ...) label map to one-hot encode."""
    focal_module = module.focal
    num_classes = input.shape[1]
    include_background = focal_module.include_background
    drop_background = not include_background and num_classes > 1
    if not include_background and num_classes == 1:
        _api.warn("single channel prediction, `include_background=False` ignored.")
    focal_target = _as_label_map(target) if label_target else target
    gamma, alpha, reduction = float(focal_module.gamma), focal_module.alpha, focal_module.reduction
    if in_torch:
        compute_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        if label_target:
            # MONAI's one_hot (zeros, then scatter): its memory layout too, which the
            # reductions' summation order follows (a movedim'd F.one_hot changes the bits).
            shape = list(focal_target.shape)
            shape[1] = num_classes
            t = torch.zeros(shape, dtype=compute_dtype, device=focal_target.device)
            t = t.scatter_(1, focal_target.long(), 1)
        else:
            t = focal_target.to(compute_dtype)
        x = input.to(compute_dtype)
        if drop_background:
            x, t = x[:, 1:], t[:, 1:]
        loss = _focal_class_weight(module, _sigmoid_focal_elementwise(x, t, gamma, alpha))
        if reduction == "sum":  # MONAI's reductions, as written there
            return loss.mean(dim=list(range(2, loss.ndim))).sum()
        if reduction == "mean":
            return loss.mean()
        return loss
    if raw is None:  # the Dice pass had no logits activation: a second fused pass
        raw = fd.dice_stats(input, focal_target, "sigmoid", False, None, "binary_cross_entropy", gamma)
    if drop_background:
        raw = raw[:, 1:]
    # The (B, C') epilogue in float64, rounded once at the end: the alpha
    # recombination of the two sums cancels, and in the statistics' float32 it
    # cost up to ~3 ulps (more than MONAI's own float32 rounding of the term).
    result_dtype = raw.dtype
    raw = raw.double()
    per_class = raw[..., fd.PIXEL_LOSS]
    if alpha is not None:
        per_class = (1 - alpha) * per_class + (2 * alpha - 1) * raw[..., fd.PIXEL_LOSS_TARGET]
    per_class = _focal_class_weight(module, per_class)  # (B, C')
    spatial = math.prod(input.shape[2:])
    if reduction == "sum" and input.dim() > 2:
        focal = per_class.sum() / spatial  # MONAI: mean over space, then sum
    elif reduction == "sum":
        focal = per_class.mean()  # no spatial axes: MONAI's mean(dim=[]) averages everything
    else:
        focal = per_class.sum() / (per_class.numel() * spatial)
    return focal.to(result_dtype)


def _focal_class_weight(module, loss: torch.Tensor) -> torch.Tensor:
    """MONAI FocalLoss' class weighting of a (B, C', ...) tensor."""
    if module.focal.class_weight is None:
        return loss
    source = module.focal.class_weight
    cw = source.to(device=loss.device, dtype=loss.dtype)
    num_classes = loss.shape[1]
    if cw.ndim > 0:
        if num_classes == 1:
            raise ValueError("Per-class class_weight is not supported for single-channel outputs.")
        if cw.numel() != num_classes:
            raise ValueError(
                f"The number of class_weight ({cw.numel()}) must match the number of output channels ({num_classes})."
            )
    if _has_negative(module, "focal.class_weight", source):
        raise ValueError("class_weight values must be non-negative.")
    if cw.ndim > 0:
        return loss * cw.view([1, num_classes] + [1] * (loss.ndim - 2))
    return loss * cw
