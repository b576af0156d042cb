"""torchmetrics 1.9's segmentation metrics with fastdice's fused update.

``DiceScore``, ``GeneralizedDiceScore`` and ``MeanIoU`` here ARE
``torchmetrics.segmentation.DiceScore`` / ``GeneralizedDiceScore`` / ``MeanIoU``
(subclasses: same constructor, same states declared with ``add_state`` and the
same ``dist_reduce_fx``, same ``compute``), so Lightning's ``self.log(name,
metric)`` logs the whole-set value, syncs it over ranks and resets it each
epoch, and ``MetricCollection`` accepts them. Only ``update`` differs: instead
of one-hot encoding the argmax of the logits and the target (two ``(B, C,
*spatial)`` integer tensors written to memory, then three reductions), one
fused pass of ``torch.ops.fastdice.confusion_counts`` (the op behind
``fastdice.metrics``) counts TP, FP, FN per (sample, class); the states are
derived from those counts exactly as torchmetrics derives them from its
one-hot tensors (same integer dtype), so ``compute`` gives the same numbers.

    from fastdice.compat.torchmetrics import DiceScore
    self.val_dice = DiceScore(num_classes=3, input_format="mixed")   # logits (B, C, *), labels (B, *)
    self.val_dice.update(logits, labels)
    self.log("val/dice", self.val_dice, on_epoch=True)

Inputs follow torchmetrics' ``input_format``: "one-hot" (both ``(B, C, *)``;
float tensors are argmaxed over the classes, integer ones used as 0/1 masks),
"mixed" (one ``(B, C, *)``, the other an index map ``(B, *)``), "index" (both
index maps). Float predictions ``(B, C, *)`` (logits or probabilities) with an
index or integer one-hot target take the fused path with no extra pass; an
index-map prediction is one-hot encoded first (as torchmetrics does).

This module needs torchmetrics; ``fastdice.metrics`` is the torch-only metric.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from torchmetrics.segmentation import DiceScore as _TMDiceScore
    from torchmetrics.segmentation import GeneralizedDiceScore as _TMGeneralizedDiceScore
    from torchmetrics.segmentation import MeanIoU as _TMMeanIoU
    from torchmetrics.utilities.compute import _safe_divide
except ImportError as error:  # pragma: no cover - exercised without torchmetrics only
    raise ImportError(
        "fastdice.compat.torchmetrics needs torchmetrics (pip install torchmetrics); "
        "fastdice.metrics.DiceScore is the metric without it"
    ) from error

from ..metrics import TP, FP, FN, _counts_op

__all__ = ["DiceScore", "GeneralizedDiceScore", "MeanIoU"]


def _check_tensors(preds, target) -> None:
    if not isinstance(preds, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"fastdice: preds and target must be tensors, got {type(preds).__name__} and {type(target).__name__}"
        )


def _index_to_scores(index: Tensor, num_classes: int) -> Tensor:
    """An index map (B, *) as 0/1 float scores (B, C, *): the input the op thresholds in
    multilabel mode. torchmetrics one-hot encodes index predictions the same way."""
    if index.is_floating_point():
        raise ValueError(f"fastdice: an index map must hold integers, got dtype {index.dtype}")
    return torch.nn.functional.one_hot(index.long(), num_classes).movedim(-1, 1).float()


@torch.compiler.disable
def _append_states(metric, **states: Tensor) -> None:
    """Appends to (list states) or adds to (tensor states) ``metric``'s states.

    Outside any compiled graph: under ``torch.compile`` the growing lists and the
    update counter would be guarded on and recompile every call; this way only the
    fused count (the work) is traced, once."""
    for name, value in states.items():
        current = getattr(metric, name)
        if isinstance(current, list):
            current.append(value)
        else:
            current += value  # in place, in the state's dtype, as torchmetrics' own update


def fused_sums(
    preds: Tensor, target: Tensor, num_classes: int | None, include_background: bool, input_format: str
) -> tuple[Tensor, Tensor, Tensor]:
    """(intersection, target_sum, pred_sum), int64 ``[B, C']``, of torchmetrics'
    ``_segmentation_inputs_format`` one-hot tensors, from one pass of the fused op.

    C' = C, or C - 1 without background (class 0 dropped only when C > 1, as torchmetrics).
    """
    _check_tensors(preds, target)
    preds, target = preds.detach(), target.detach()
    if input_format not in ("one-hot", "index", "mixed"):
        raise ValueError(f"fastdice: input_format must be 'one-hot', 'index' or 'mixed', got {input_format!r}")
    if input_format == "one-hot" or (input_format == "mixed" and preds.dim() == target.dim() + 1):
        dense_preds = preds
    elif input_format == "index" or (input_format == "mixed" and preds.dim() + 1 == target.dim()):
        classes = num_classes if num_classes is not None else (target.shape[1] if input_format == "mixed" else None)
        if classes is None:
            raise ValueError("fastdice: num_classes must be given for input_format='index'")
        dense_preds = _index_to_scores(preds, classes)
    else:
        raise ValueError(
            f"fastdice: input_format='mixed' needs one (B, C, *spatial) tensor and one (B, *spatial) index map, "
            f"got preds {tuple(preds.shape)} and target {tuple(target.shape)}"
        )
    if dense_preds.dim() < 3:
        raise ValueError(
            f"fastdice: expected preds of at least 3 dimensions (B, C, *spatial), got shape {tuple(dense_preds.shape)}"
        )
    classes = dense_preds.shape[1]
    if num_classes is not None and classes != num_classes:
        raise ValueError(
            f"fastdice: num_classes={num_classes} but preds (one-hot) have {classes} channels "
            f"(shape {tuple(dense_preds.shape)})"
        )
    if target.dim() == dense_preds.dim():  # one-hot target (B, C, *)
        if tuple(target.shape) != tuple(dense_preds.shape):
            raise ValueError(
                f"fastdice: a one-hot target must have the shape of preds {tuple(dense_preds.shape)}, "
                f"got {tuple(target.shape)}"
            )
        if target.is_floating_point():
            target = target.argmax(dim=1)  # torchmetrics reads a float one-hot target by its argmax
    elif target.is_floating_point():
        raise ValueError(f"fastdice: an index-map target must hold integers, got dtype {target.dtype}")
    if dense_preds.is_floating_point() and dense_preds is preds:
        # Logits / probabilities: the class of each position is the argmax (torchmetrics' _format_logits).
        counts = _counts_op(dense_preds, target, "multiclass", 0.0, None)
    else:
        # 0/1 masks (integer one-hot, or encoded index maps): class c where the mask is 1.
        counts = _counts_op(dense_preds.float(), target, "multilabel", 0.5, None)
    if not include_background and counts.shape[1] > 1:
        counts = counts[:, 1:]
    tp, fp, fn = counts[..., TP], counts[..., FP], counts[..., FN]
    return tp, tp + fn, tp + fp


class DiceScore(_TMDiceScore):
    """``torchmetrics.segmentation.DiceScore`` whose ``update`` is one fused pass.

    Same arguments, states (``numerator``, ``denominator``, ``support``: lists
    concatenated over ranks) and ``compute`` as torchmetrics 1.9's; see the module
    docstring for the inputs.
    """

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Adds one batch: ``preds`` and ``target`` in this metric's ``input_format``."""
        intersection, target_sum, pred_sum = fused_sums(
            preds, target, self.num_classes, self.include_background, self.input_format
        )
        _append_states(self, numerator=2 * intersection, denominator=pred_sum + target_sum, support=target_sum)


class GeneralizedDiceScore(_TMGeneralizedDiceScore):
    """``torchmetrics.segmentation.GeneralizedDiceScore`` whose ``update`` is one fused pass.

    Same arguments, states (``score``, ``samples``: sums over ranks) and ``compute``
    as torchmetrics 1.9's.
    """

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Adds one batch: ``preds`` and ``target`` in this metric's ``input_format``."""
        intersection, target_sum, pred_sum = fused_sums(
            preds, target, self.num_classes, self.include_background, self.input_format
        )
        numerator, denominator = _generalized_dice_terms(intersection, target_sum, pred_sum, self.weight_type)
        if not self.per_class:
            numerator, denominator = numerator.sum(1), denominator.sum(1)
        score = _safe_divide(numerator, denominator).sum(dim=0)
        _append_states(self, score=score, samples=intersection.shape[0])


def _generalized_dice_terms(intersection, target_sum, pred_sum, weight_type):
    """torchmetrics' ``_generalized_dice_update`` from the sums: class weights from the
    target volume (an empty class takes the largest weight of its batch column, as there)."""
    if weight_type == "simple":
        weights = 1.0 / target_sum
    elif weight_type == "linear":
        weights = torch.ones_like(target_sum)
    else:  # "square" (the constructor checked the choice)
        weights = 1.0 / (target_sum**2)
    # torch.where rather than torchmetrics' masked assignment (the same values): a boolean
    # index is a data-dependent shape, a graph break under torch.compile. The column maxima
    # are read in torchmetrics' order (``.repeat(B, 1).T.flatten()``) to give its numbers.
    shape = weights.shape
    flat = weights.flatten()
    infs = torch.isinf(flat)
    flat = torch.where(infs, torch.zeros_like(flat), flat)
    w_max = flat.reshape(shape).max(0).values.repeat(shape[0], 1).T.flatten()
    weights = torch.where(infs, w_max, flat).reshape(shape)
    return 2.0 * intersection * weights, (target_sum + pred_sum) * weights


class MeanIoU(_TMMeanIoU):
    """``torchmetrics.segmentation.MeanIoU`` whose ``update`` is one fused pass.

    Same arguments, states (``score``, ``num_batches``: sums over ranks) and
    ``compute`` as torchmetrics 1.9's.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # What the constructor was given, read by ``update`` (constant, unlike ``num_classes``,
        # which the first update sets when it was None: a guard that would recompile).
        self._given_num_classes = self.num_classes

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Adds one batch: ``preds`` and ``target`` in this metric's ``input_format``."""
        self._initialize_states(preds, target)
        intersection, target_sum, pred_sum = fused_sums(
            preds, target, self._given_num_classes, self.include_background, self.input_format
        )
        union = target_sum + pred_sum - intersection
        score = _safe_divide(intersection, union, zero_division=0.0)
        valid = union > 0
        if self.per_class:
            _append_states(self, score=(score * valid).sum(dim=0), num_batches=valid.sum(dim=0))
        else:
            _append_states(self, score=(score * valid).sum(), num_batches=valid.sum())

    @torch.compiler.disable
    def _initialize_states(self, preds: Tensor, target: Tensor) -> None:
        """torchmetrics' first-update set-up when ``num_classes`` was not given: the
        number of classes from the one-hot tensor, states of the right length."""
        if self._is_initialized:
            return
        _check_tensors(preds, target)
        if self.input_format == "index":
            raise ValueError("fastdice: num_classes must be given for input_format='index'")
        one_hot = target if (self.input_format == "mixed" and preds.dim() + 1 == target.dim()) else preds
        if one_hot.dim() < 2 or one_hot.shape[1] == 0:
            raise ValueError(f"fastdice: cannot read the number of classes from shape {tuple(one_hot.shape)}")
        self.num_classes = one_hot.shape[1]
        classes = self.num_classes - 1 if not self.include_background else self.num_classes
        self.add_state(
            "score", default=torch.zeros(classes, device=self.device, dtype=self.dtype), dist_reduce_fx="sum"
        )
        self.add_state(
            "num_batches", default=torch.zeros(classes, device=self.device, dtype=torch.int32), dist_reduce_fx="sum"
        )
        self._is_initialized = True
