"""Tversky and Generalized Dice losses: other epilogues of the same fused
statistics (sum p*t, sum p, sum t per sample and class), so they cost what
the Dice loss costs: one pass forward, one pass backward."""

from typing import Literal, Optional

import torch

from . import _api, _ops
from ._api import native_arguments
from .loss import NativeLoss, pool_stats, reduce_losses
from .options import Activation, DiceOptions, Pooling, Reduction, RegionsLike, WeightLike, check_nonnegative

W_TYPES = ("square", "simple", "uniform")


class TverskyLoss(NativeLoss):
    """Tversky loss ``(1 - (tp + smooth_nr) / (tp + alpha*fp + beta*fn + smooth_dr)) ** gamma``.

    fp = sum p*(1-t) = sum p - tp, fn = sum (1-p)*t = sum t - tp. alpha
    weighs false positives, beta false negatives (alpha = beta = 0.5 is the
    Dice loss with doubled smoothing, alpha = beta = 1 the soft Jaccard);
    gamma != 1 is the focal Tversky loss. Other keyword options as
    :class:`fastdice.DiceLoss`: activation, pooling, include_background,
    weight, ignore_index, smooth_nr, smooth_dr (1.0), reduction, distributed,
    regions.
    """

    @native_arguments
    def __init__(
        self,
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
    ) -> None:
        opts = DiceOptions(
            activation=activation, pooling=pooling, include_background=include_background, ignore_index=ignore_index,
            smooth_nr=smooth_nr, smooth_dr=smooth_dr, reduction=reduction, distributed=distributed,
            regions=regions,
        )
        super().__init__(opts, process_group, weight=weight)
        self.alpha = check_nonnegative("alpha", alpha)
        self.beta = check_nonnegative("beta", beta)
        self.gamma = check_nonnegative("gamma", gamma)

    def _constructor_values(self) -> dict:
        return dict(super()._constructor_values(), alpha=self.alpha, beta=self.beta, gamma=self.gamma)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``mask``: see :meth:`fastdice.DiceLoss.forward`."""
        input, _, stats = self._stats(input, target, mask=mask)
        weight = self._class_weight("weight", input.shape[1], input)
        s, weight = pool_stats(stats, self.opts, weight, self.process_group)
        tp = s[..., _ops.TP]
        fp = s[..., _ops.SUM_P] - tp
        fn = s[..., _ops.SUM_T] - tp
        score = (tp + self.opts.smooth_nr) / (tp + self.alpha * fp + self.beta * fn + self.opts.smooth_dr)
        loss = 1 - score
        if self.gamma != 1.0:
            loss = loss.clamp_min(0).pow(self.gamma)
        if weight is not None:
            loss = loss * weight
        return _api.zero_if_empty(reduce_losses(loss, self.opts.reduction), input, self.opts.distributed)


class GeneralizedDiceLoss(NativeLoss):
    """Generalized Dice loss (Sudre et al. 2017), one value per sample (or
    per batch with ``pooling='batch'``):

        1 - (2 * sum_c w_c * tp_c + smooth_nr) / (sum_c w_c * (P_c + G_c) + smooth_dr)

    with w_c = 1 / G_c^2 (``w_type='square'``), 1 / G_c ('simple') or 1
    ('uniform'), G_c = sum t of class c. A class absent from the target
    (infinite weight) gets the largest finite weight of its sample (batch),
    as MONAI does; the weights are constants (no gradient). smooth_nr and
    smooth_dr default to 1e-5 (the weighted sums are O(1 / G)). Other
    keyword options: activation, pooling ('sample' or 'batch'),
    include_background, ignore_index, reduction (over samples), distributed,
    regions.
    """

    @native_arguments
    def __init__(
        self,
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
    ) -> None:
        if pooling not in ("sample", "batch"):
            raise ValueError(f"fastdice: GeneralizedDiceLoss pooling must be 'sample' or 'batch', got {pooling!r}")
        if w_type not in W_TYPES:
            raise ValueError(f"fastdice: w_type must be one of {W_TYPES}, got {w_type!r}")
        opts = DiceOptions(
            activation=activation, pooling=pooling, include_background=include_background, ignore_index=ignore_index,
            smooth_nr=smooth_nr, smooth_dr=smooth_dr, reduction=reduction, distributed=distributed,
            regions=regions,
        )
        super().__init__(opts, process_group)
        self.w_type = w_type

    def _constructor_values(self) -> dict:
        return dict(super()._constructor_values(), w_type=self.w_type)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``mask``: see :meth:`fastdice.DiceLoss.forward`."""
        input, _, stats = self._stats(input, target, mask=mask)
        s, _ = pool_stats(stats, self.opts, None, self.process_group)  # [B, C, K] or [C, K]
        tp, p_sum, g_sum = s[..., _ops.TP], s[..., _ops.SUM_P], s[..., _ops.SUM_T]
        # The weights are functions of the target volume: a target that requires
        # grad is differentiated through them too. A class whose weight is
        # infinite (absent, or a volume so small that it overflows) takes the
        # largest finite weight; its division is redone on 1 so that the
        # unselected infinite branch cannot make the gradient 0 * inf = NaN.
        def weights(g: torch.Tensor) -> torch.Tensor:
            if self.w_type == "square":
                return 1.0 / (g * g)
            if self.w_type == "simple":
                return 1.0 / g
            return torch.ones_like(g)

        with torch.no_grad():
            infinite = torch.isinf(weights(g_sum.detach()))
        w = weights(torch.where(infinite, torch.ones_like(g_sum), g_sum))
        w = torch.where(infinite, torch.zeros_like(w), w)
        largest = w.max(dim=-1, keepdim=True).values if w.numel() else w
        w = torch.where(infinite, largest.expand_as(w), w)
        numerator = 2 * (w * tp).sum(-1) + self.opts.smooth_nr
        denominator = (w * (p_sum + g_sum)).sum(-1) + self.opts.smooth_dr
        return _api.zero_if_empty(reduce_losses(1 - numerator / denominator, self.opts.reduction), input, self.opts.distributed)
