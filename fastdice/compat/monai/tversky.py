"""MONAI's ``monai/losses/tversky.py``: TverskyLoss on the fused statistics."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ... import functional as fd
from .base import _form, _MonaiLoss
from .script import _scripts_as_monai


def _tversky_epilogue(
    stats: torch.Tensor, *, alpha: float, beta: float, soft_label: bool, smooth_nr: float, smooth_dr: float
) -> torch.Tensor:
    """MONAI TverskyLoss' unreduced loss (shape ``stats.shape[:-1]``)."""
    tp, fp, fn = fd.tp_fp_fn(stats, _form(False, soft_label))
    return 1.0 - fd.tversky_score(tp, fp, fn, alpha, beta, smooth_nr, smooth_dr)


@_scripts_as_monai("monai.losses.tversky")
class TverskyLoss(_MonaiLoss):
    """``monai.losses.TverskyLoss`` (MONAI 1.6) on the fused fastdice op.

    As in MONAI, reduction "none" returns the per-(sample, class) losses of
    shape (B, C') (or (C',) with ``batch=True``), without trailing axes.
    """

    shape_wording = "differing"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid, softmax=softmax,
            other_act=other_act, reduction=reduction, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
            soft_label=soft_label, ignore_index=ignore_index,
        )
        self.alpha = alpha
        self.beta = beta

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        stats, _ = self._stats(input, target)
        stats = self._pooled(stats, input)
        score = _tversky_epilogue(
            stats,
            alpha=self.alpha,
            beta=self.beta,
            soft_label=self.soft_label,
            smooth_nr=self.smooth_nr,
            smooth_dr=self.smooth_dr,
        )
        if self.reduction == "sum":
            return torch.sum(score)
        if self.reduction == "none":
            return score
        if self.reduction == "mean":
            return torch.mean(score)
        raise ValueError(f'Unsupported reduction: {self.reduction}, available options are ["mean", "sum", "none"].')
