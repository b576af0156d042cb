"""Tversky and Generalized Dice losses: other epilogues of the same fused
statistics (sum p*t, sum p, sum t per sample and class), so they cost what
the Dice loss costs: one pass forward, one pass backward."""

from typing import Literal, Optional

import torch

from . import functional
from ._api import native_arguments
from .loss import NativeLoss
from .options import (
    Activation,
    Pooling,
    Reduction,
    RegionsLike,
    WeightLike,
    generalized_dice_options,
    tversky_options,
)


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
        opts, (alpha, beta, gamma) = tversky_options(
            alpha=alpha, beta=beta, gamma=gamma, activation=activation, pooling=pooling,
            include_background=include_background, ignore_index=ignore_index, smooth_nr=smooth_nr,
            smooth_dr=smooth_dr, reduction=reduction, distributed=distributed, regions=regions,
        )
        super().__init__(opts, process_group, weight=weight)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma

    def _constructor_values(self) -> dict:
        return dict(super()._constructor_values(), alpha=self.alpha, beta=self.beta, gamma=self.gamma)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``mask``: see :meth:`fastdice.DiceLoss.forward`."""
        return functional.tversky_loss_with_options(
            input, target, self.opts, alpha=self.alpha, beta=self.beta, gamma=self.gamma,
            weight=self._weight_numbers["weight"], weight_buffer=self.weight, process_group=self.process_group,
            mask=mask,
        )


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
        opts = generalized_dice_options(
            w_type=w_type, activation=activation, pooling=pooling, include_background=include_background,
            ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, reduction=reduction,
            distributed=distributed, regions=regions,
        )
        super().__init__(opts, process_group)
        self.w_type = w_type

    def _constructor_values(self) -> dict:
        return dict(super()._constructor_values(), w_type=self.w_type)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``mask``: see :meth:`fastdice.DiceLoss.forward`."""
        return functional.generalized_dice_loss_with_options(
            input, target, self.opts, w_type=self.w_type, process_group=self.process_group, mask=mask
        )
