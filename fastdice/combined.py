"""Dice + cross-entropy (or focal) loss modules, from ONE fused pass over the logits.

The statistics op accumulates the per-element cross-entropy next to the Dice
sums (stats PIXEL_LOSS = sum l and PIXEL_LOSS_TARGET = sum t*l per sample and
class), and its backward adds the cross-entropy's gradient to the Dice
gradient in the same pass: DiceCE reads the logits and the labels once
forward and once backward and writes the gradient once, like the Dice loss
alone. The modules hold the options; :func:`fastdice.functional.dice_ce_loss_with_options`
computes the loss.
"""

from typing import Literal, Optional

import torch

from . import functional
from ._api import native_arguments
from .functional import DiceCETerms, DiceFocalTerms
from .loss import NativeLoss
from .options import CEOptions, Pooling, RegionsLike, WeightLike, ce_options


class DiceCELoss(NativeLoss):
    """``lambda_dice * Dice + lambda_ce * cross-entropy``, both from one fused pass.

    Args (keyword-only). The Dice term's options are those of
    :class:`fastdice.DiceLoss` (``activation`` defaults to ``'softmax'`` here
    and must be ``'softmax'`` or ``'sigmoid'``: the input is logits):
      activation, pooling, include_background, weight, ignore_index,
      smooth_nr, smooth_dr, squared, jaccard, log_loss, soft_label, log_eps,
      distributed, regions: as :class:`fastdice.DiceLoss`.
      reduction: 'mean' or 'sum' (of both terms).
      lambda_dice, lambda_ce: weights of the two terms (>= 0).
      ce_weight: per-class weight of the cross-entropy (one entry per input
        class), as ``torch.nn.CrossEntropyLoss(weight=...)``.
      label_smoothing: as ``torch.nn.CrossEntropyLoss`` (softmax only).
      focal_gamma: 0 is the cross-entropy; > 0 the focal loss
        ``(1 - p_t)^gamma * CE`` with the same normalization.
      return_terms: forward returns :class:`DiceCETerms` ``(loss, dice, ce)``
        instead of the loss alone: both terms for logging, from the same
        statistics (no second pass, no host sync; a few O(B*C) ops more).
      process_group: the group of ``distributed=True`` (default: the world).

    With ``activation='softmax'`` the second term is the softmax cross-entropy
    over the classes (``torch.nn.CrossEntropyLoss``: label maps, mean over
    non-ignored positions weighted by ``ce_weight``; dense targets are class
    probabilities, mean over positions). With ``'sigmoid'`` it is the binary
    cross-entropy with logits per class, mean over valid elements. The
    cross-entropy always uses every class (``include_background`` and
    ``pooling`` concern the Dice term) and honours ``ignore_index``. With
    ``regions`` the target is dense (one 0/1 channel per region): with
    ``'sigmoid'`` this is nnU-Net's Dice + BCE over regions, the mean over
    the valid (position, region) pairs.
    """

    #: The name of the focal exponent checked first (DiceFocalLoss' gamma), or None.
    _gamma_name = None
    #: What forward returns with return_terms=True.
    _terms = DiceCETerms

    @native_arguments
    def __init__(
        self,
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
    ) -> None:
        opts, ce = ce_options(
            type(self).__name__, activation=activation, pooling=pooling, include_background=include_background,
            weight=weight, ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared,
            jaccard=jaccard, log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps,
            distributed=distributed, regions=regions, lambda_dice=lambda_dice, lambda_ce=lambda_ce,
            ce_weight=ce_weight, label_smoothing=label_smoothing, focal_gamma=focal_gamma, return_terms=return_terms,
            gamma_name=self._gamma_name,
        )
        super().__init__(opts, process_group, weight=weight, ce_weight=ce_weight)
        self._ce = ce

    # The second term's options are one CEOptions (passed to functional as it is); each
    # reads and writes as an attribute of the module.
    def _ce_option(name: str):  # noqa: N805  (a property factory run in the class body)
        def get(self):
            return getattr(self._ce, name)

        def set_(self, value):
            self._ce = self._ce._replace(**{name: value})

        return property(get, set_, doc=f"The second term's {name} (see the class docstring).")

    lambda_dice = _ce_option("lambda_dice")
    lambda_ce = _ce_option("lambda_ce")
    label_smoothing = _ce_option("label_smoothing")
    focal_gamma = _ce_option("focal_gamma")
    return_terms = _ce_option("return_terms")
    del _ce_option

    def __setstate__(self, state: dict) -> None:
        if "_ce" not in state:  # pickled with the second term's options as plain attributes
            state["_ce"] = CEOptions(*(state.pop(name) for name in CEOptions._fields))
        super().__setstate__(state)

    def _constructor_values(self) -> dict:
        return dict(
            super()._constructor_values(), lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce,
            label_smoothing=self.label_smoothing, focal_gamma=self.focal_gamma, return_terms=self.return_terms,
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """The loss (a scalar); ``(loss, dice, ce)`` with ``return_terms=True``. ``mask``: see
        :meth:`fastdice.DiceLoss.forward`; the second term's mean is then over the positions it keeps."""
        return functional.dice_ce_loss_with_options(
            input, target, self.opts, self._ce, weight=self._weight_numbers["weight"], weight_buffer=self.weight,
            ce_weight=self._weight_numbers["ce_weight"], ce_weight_buffer=self.ce_weight,
            process_group=self.process_group, mask=mask, name=type(self).__name__, terms=self._terms,
        )


class DiceFocalLoss(DiceCELoss):
    """``lambda_dice * Dice + lambda_focal * focal loss`` from one fused pass:
    :class:`DiceCELoss` with the focal loss ``(1 - p_t)^gamma * CE`` as the
    second term.

    Args (keyword-only): the Dice term's options, as :class:`DiceCELoss`:
      activation ('softmax' default, or 'sigmoid'), pooling,
      include_background, weight, ignore_index, smooth_nr, smooth_dr,
      squared, jaccard, log_loss, soft_label, reduction ('mean' or 'sum'),
      log_eps, distributed, regions; and
      gamma: the focal exponent (>= 0; 0 is the cross-entropy).
      lambda_dice, lambda_focal: weights of the two terms (>= 0).
      focal_weight: per-class weight of the focal term (one entry per class).
      return_terms: forward returns :class:`DiceFocalTerms` ``(loss, dice, focal)``.
      process_group: the group of ``distributed=True``.
    """

    @native_arguments(renamed={"focal_gamma": "gamma", "lambda_ce": "lambda_focal", "ce_weight": "focal_weight"})
    def __init__(
        self,
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
    ) -> None:
        super().__init__(
            activation=activation, pooling=pooling, include_background=include_background, weight=weight,
            ignore_index=ignore_index, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared=squared, jaccard=jaccard,
            log_loss=log_loss, soft_label=soft_label, reduction=reduction, log_eps=log_eps, distributed=distributed,
            regions=regions,
            lambda_dice=lambda_dice, lambda_ce=lambda_focal, ce_weight=focal_weight, focal_gamma=gamma,
            return_terms=return_terms, process_group=process_group,
        )

    def _constructor_values(self) -> dict:
        values = super()._constructor_values()
        values["gamma"] = values.pop("focal_gamma")
        values["lambda_focal"] = values.pop("lambda_ce")
        values["focal_weight"] = values.pop("ce_weight")
        del values["label_smoothing"]
        return values

    _gamma_name = "gamma"
    _terms = DiceFocalTerms
