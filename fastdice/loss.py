"""The native Dice loss module and the base of every native loss module.

The modules hold their options (checked once, at construction) and their
per-class weight buffers, and call :mod:`fastdice.functional`, which runs the
fused statistics op and the epilogue.
"""

from dataclasses import fields
from typing import Optional

import torch
from torch import nn

from . import _api, functional
from ._api import native_arguments
from .options import Activation, DiceOptions, Pooling, Reduction, RegionsLike, WeightLike, check_weight_values

#: The dtype of the per-class weight buffers of every native loss (the user's
#: numbers kept exactly; cast to the statistics' dtype at use).
WEIGHT_DTYPE = torch.float64


class NativeLoss(nn.Module):
    """Base of the native losses (DiceLoss, TverskyLoss, GeneralizedDiceLoss,
    DiceCELoss, DiceFocalLoss): the options (``self.opts``), the per-class
    weight buffers, pickling, ``repr`` and equality. A subclass validates its
    own arguments and its ``forward`` calls its function of
    :mod:`fastdice.functional` with them.

    ``weights``: name -> value of each per-class weight the loss takes. A
    sequence or tensor becomes the buffer ``name`` (float64, flattened; it
    follows ``.to()`` and ``state_dict``), a number stays a number (the
    buffer is None). ``repr`` shows a weight at the precision it was given in
    (a float32 tensor's 0.1 as 0.1, not as its float64 value), and two losses
    are equal (``==``) when their reprs' arguments are: ``eval(repr(loss)) == loss``.
    TorchScript cannot compile the Python around the ops: ``torch.jit.script``
    raises and names torch.compile and torch.export, which trace the ops."""

    def __init__(self, opts: DiceOptions, process_group=None, **weights) -> None:
        super().__init__()
        self.opts = opts
        self.process_group = process_group
        self._weight_numbers = {}
        self._weight_dtypes = {}  # the floating dtype a weight was given in, for repr
        for name, value in weights.items():
            check_weight_values(value)
            number = value is None or isinstance(value, (int, float))
            self.register_buffer(name, None if number else torch.as_tensor(value, dtype=WEIGHT_DTYPE).flatten().clone())
            self._weight_numbers[name] = value if number else None
            given = torch.as_tensor(value).dtype if isinstance(value, torch.Tensor) or hasattr(value, "dtype") else None
            self._weight_dtypes[name] = given if given is not None and given.is_floating_point else None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["process_group"] = None  # process groups do not pickle; the default group is used after loading
        return state

    def _constructor_values(self) -> dict:
        """The constructor arguments as they are now (for repr and ==), a weight buffer as
        the list of its values at the precision it was given in; a subclass adds its own."""
        values = {f.name: getattr(self.opts, f.name) for f in fields(self.opts) if f.name != "weight"}
        dtypes = self.__dict__.get("_weight_dtypes", {})
        for name, number in self._weight_numbers.items():
            buffer = getattr(self, name)
            values[name] = number if buffer is None else _api.shortest_values(buffer, dtypes.get(name))
        return values

    def extra_repr(self) -> str:
        return _api.constructor_repr(self)

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._constructor_values() == other._constructor_values()

    # Modules live in sets and dicts by identity (named_modules, optimizers, hooks).
    __hash__ = nn.Module.__hash__

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"torch.jit.script: fastdice.{type(self).__name__} is not scriptable (TorchScript cannot compile the "
            "Python around its fused ops); use torch.compile(model) or torch.export.export(model, ...), which "
            "trace the ops, or call the loss outside the scripted model"
        )


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
        return functional.dice_loss_with_options(
            input, target, self.opts, weight=self._weight_numbers["weight"], weight_buffer=self.weight,
            process_group=self.process_group, mask=mask,
        )
