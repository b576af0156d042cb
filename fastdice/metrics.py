"""Hard Dice and IoU (Jaccard) for validation, from logits, without one-hot.

One fused op, ``fastdice::confusion_counts``, reads the logits (or
probabilities) and the target once and writes the per-(sample, class) integer
counts TP, FP, FN; no probability, argmax or one-hot tensor is written to
memory. Everything here is O(B*C) arithmetic on those counts.

    metric = fastdice.metrics.DiceScore(include_background=False, ignore_index=255)
    for images, labels in val_loader:
        metric.update(model(images), labels)     # logits (B, C, *spatial), labels (B, *spatial)
    dice = metric.compute()                      # all-reduced over ranks under torch.distributed
    metric.reset()

The averaging follows ``torchmetrics.segmentation.DiceScore`` (1.9) for the
corresponding options; see docs/metrics.md for the conventions and for every
difference from torchmetrics and MONAI. These classes need torch only; for
Lightning's ``self.log(name, metric)`` and ``MetricCollection``,
``fastdice.compat.torchmetrics`` has torchmetrics' own metric classes with this
module's fused update.
"""

import math
import numbers
from typing import List, Optional

import torch
from torch import nn

from . import _api, _ops
from .errors import LabelOutOfRangeError
from .options import ACTIVATIONS, check_bool, check_choice, check_ignore_index

__all__ = [
    "DiceScore",
    "JaccardIndex",
    "IoU",
    "dice_score",
    "jaccard_index",
    "confusion_counts",
    "score_from_counts",
    "COUNT_NAMES",
    "MODES",
    "AVERAGES",
    "AGGREGATION_LEVELS",
    "EMPTY_CONVENTIONS",
]

COUNT_NAMES = _ops.COUNT_NAMES
TP, FP, FN = 0, 1, 2
MODES = ("multiclass", "multilabel", "binary")
AVERAGES = ("micro", "macro", "weighted", "none")
AGGREGATION_LEVELS = ("samplewise", "global")
#: The score of a (sample, class) whose class is absent from both prediction and target (0/0):
#: "nan" (left out of every mean, as torchmetrics), "one" (MONAI's ignore_empty=False), "zero";
#: "nan_if_target_empty": NaN whenever the target lacks the class, even if it is predicted
#: (MONAI's default ignore_empty=True).
EMPTY_CONVENTIONS = ("nan", "one", "zero", "nan_if_target_empty")
_METRICS = ("dice", "jaccard")


# ----------------------------------------------------------------------------
# Argument checks (host-side, on Python values only)
# ----------------------------------------------------------------------------


def _check_average(average):
    if average is None:  # torchmetrics accepts None for "none"
        return "none"
    check_choice("average", average, AVERAGES)
    return average


def _check_num_classes(num_classes, mode):
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"fastdice: num_classes must be a positive int or None, got {num_classes!r}")
    if mode == "binary" and num_classes != 1:
        raise ValueError(f"fastdice: mode='binary' has one class (input (B, 1, *spatial)); got num_classes={num_classes}")
    return int(num_classes)


def op_threshold(mode: str, activation: str, threshold: float) -> float:
    """The threshold in the input's units that the op compares with (input > it).

    activation="sigmoid" (logits): sigmoid(x) > t exactly when x > log(t / (1 - t)),
    so the logits are compared with logit(threshold) (0 for the default 0.5).
    activation="none": the input holds probabilities (or any score) and is compared
    with threshold itself. Multiclass predictions are an argmax: no threshold.
    """
    check_choice("mode", mode, MODES)
    check_choice("activation", activation, ACTIVATIONS)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or math.isnan(threshold):
        raise ValueError(f"fastdice: threshold must be a number, got {threshold!r}")
    threshold = float(threshold)
    if mode == "multiclass":
        return 0.0  # unused: argmax over the classes, the same for logits, probabilities or softmax
    if activation == "softmax":
        raise ValueError(
            "fastdice: activation='softmax' with a threshold is not supported: use mode='multiclass' (argmax) "
            "for softmax outputs, or activation='sigmoid' / 'none' for multilabel and binary predictions"
        )
    if activation == "sigmoid":
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"fastdice: threshold must lie in (0, 1) with activation='sigmoid', got {threshold!r}")
        return 0.0 if threshold == 0.5 else math.log(threshold) - math.log1p(-threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"fastdice: threshold must be finite, got {threshold!r}")
    return threshold


# ----------------------------------------------------------------------------
# The counts
# ----------------------------------------------------------------------------


def confusion_counts(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    mode: str = "multiclass",
    activation: str = "none",
    threshold: float = 0.5,
    ignore_index: Optional[int] = None,
) -> torch.Tensor:
    """Per-(sample, class) hard counts ``[B, C, 3]`` (int64): TP, FP, FN (see ``COUNT_NAMES``).

    input: float logits or probabilities (B, C, *spatial). mode "multiclass": the
    prediction is ``argmax`` over dim 1 (the first maximum; NaN counts as the maximum);
    "multilabel": class c is predicted where ``activation(input[:, c]) > threshold``;
    "binary": the same with one channel. target: an integer label map (B, *spatial) or
    (B, 1, *spatial) (in binary mode 0/1, also (B, 1, *spatial)), or a dense 0/1 tensor of
    the input's shape (one-hot / multi-hot; any dtype). Positions whose label is
    ``ignore_index`` count nowhere. One fused pass, the op ``torch.ops.fastdice.confusion_counts``.
    """
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"fastdice: input and target must be tensors, got {type(input).__name__} and {type(target).__name__}"
        )
    thr = op_threshold(mode, activation, threshold)
    ignore_index = check_ignore_index(ignore_index)
    # detach: the counts are not differentiable (the op has no autograd).
    return _counts_op(input.detach(), target.detach(), mode, thr, ignore_index)


# ----------------------------------------------------------------------------
# Scores from counts
# ----------------------------------------------------------------------------


def _fill_value(empty: str) -> float:
    return {"nan": math.nan, "one": 1.0, "zero": 0.0, "nan_if_target_empty": math.nan}[empty]


def _per_class(counts: torch.Tensor, metric: str, empty: str):
    """score, numerator, denominator, support of counts [..., C, 3], in float64."""
    c = counts.to(torch.float64)
    tp, fp, fn = c[..., TP], c[..., FP], c[..., FN]
    num = 2 * tp if metric == "dice" else tp
    den = num + fp + fn
    support = tp + fn
    fill = torch.full((), _fill_value(empty), dtype=torch.float64, device=c.device)
    score = torch.where(den > 0, num / den, fill)
    if empty == "nan_if_target_empty":
        score = torch.where(support > 0, score, torch.full_like(fill, math.nan))
    return score, num, den, support


def _average(counts: torch.Tensor, metric: str, average: str, empty: str) -> torch.Tensor:
    """Scores of counts [N, C, 3] averaged over classes: [N] (or [N, C] for "none")."""
    score, num, den, support = _per_class(counts, metric, empty)
    nan = torch.full((), math.nan, dtype=torch.float64, device=score.device)
    fill = torch.full((), _fill_value(empty), dtype=torch.float64, device=score.device)
    if average == "none":
        return score
    if average == "macro":
        return torch.nanmean(score, dim=-1)
    if average == "micro":
        if empty == "nan_if_target_empty":  # classes without target leave the sums
            keep = support > 0
            num, den = num * keep, den * keep
        num_s, den_s = num.sum(-1), den.sum(-1)
        empty_s = nan if empty == "nan_if_target_empty" else fill
        return torch.where(den_s > 0, num_s / den_s, empty_s)
    # weighted by support (TP + FN); a sample without any target: 0 if something was
    # predicted, else the empty value (torchmetrics' result for empty="nan").
    valid = ~torch.isnan(score)
    w = support * valid
    w_sum = w.sum(-1)
    w_score = torch.where(valid, score * w, torch.zeros_like(score)).sum(-1)
    if empty == "nan_if_target_empty":
        fallback = nan.expand_as(w_sum)
    else:
        fallback = torch.where((den > 0).any(-1), torch.zeros_like(w_sum), fill)
    return torch.where(w_sum > 0, w_score / w_sum, fallback)


def _drop_background(counts: torch.Tensor, include_background: bool) -> torch.Tensor:
    # As torchmetrics: class 0 is dropped only when there is more than one class.
    if include_background or counts.shape[-2] <= 1:
        return counts
    return counts[..., 1:, :]


def _check_score_options(metric, include_background, average, aggregation_level, empty) -> str:
    """The checks of the scoring options; returns average normalized (None -> "none")."""
    check_choice("metric", metric, _METRICS)
    check_bool("include_background", include_background)
    average = _check_average(average)
    check_choice("aggregation_level", aggregation_level, AGGREGATION_LEVELS)
    check_choice("empty", empty, EMPTY_CONVENTIONS)
    return average


def score_from_counts(
    counts: torch.Tensor,
    *,
    metric: str = "dice",
    include_background: bool = True,
    average: Optional[str] = "macro",
    aggregation_level: str = "samplewise",
    empty: str = "nan",
) -> torch.Tensor:
    """Dice or IoU from counts [N, C, 3] (as ``confusion_counts`` returns), per sample.

    Returns what ``dice_score`` returns: samplewise [N] ([N, C'] for average "none");
    global [1] ([1, C']), as torchmetrics' functional ``dice_score``. Samples with a
    negative count (CUDA's marker of an invalid target, see ``confusion_counts``) give
    NaN (global: all NaN). Float64.
    """
    average = _check_score_options(metric, include_background, average, aggregation_level, empty)
    return _score_from_counts(counts, metric, include_background, average, aggregation_level, empty)


def _score_from_counts(counts, metric, include_background, average, aggregation_level, empty) -> torch.Tensor:
    """score_from_counts of checked options."""
    if not isinstance(counts, torch.Tensor) or counts.dim() != 3 or counts.shape[-1] != 3:
        shape = tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__
        raise ValueError(f"fastdice: counts must have shape [N, C, 3], got {shape}")
    poisoned = (counts < 0).flatten(1).any(-1)  # [N]
    counts = _drop_background(counts, include_background)
    if aggregation_level == "global":
        counts = counts.sum(0, keepdim=True)
        poisoned = poisoned.any(0, keepdim=True)
    out = _average(counts, metric, average, empty)
    mask = poisoned.view(-1, *([1] * (out.dim() - 1)))
    return torch.where(mask, torch.full_like(out, math.nan), out)


def _functional(
    metric, input, target, *, num_classes, mode, activation, threshold, include_background, ignore_index, average,
    aggregation_level, empty,
):
    """dice_score / jaccard_index: every option checked once, before the op runs."""
    num_classes = _check_num_classes(num_classes, mode)
    average = _check_score_options(metric, include_background, average, aggregation_level, empty)
    _check_num_classes_matches(num_classes, input)
    counts = confusion_counts(
        input, target, mode=mode, activation=activation, threshold=threshold, ignore_index=ignore_index
    )
    return _score_from_counts(counts, metric, include_background, average, aggregation_level, empty)


def _check_num_classes_matches(num_classes, input, inferred=False):
    if num_classes is not None and isinstance(input, torch.Tensor) and input.dim() >= 2 and input.shape[1] != num_classes:
        if inferred:
            raise ValueError(
                f"fastdice: the input has {input.shape[1]} channels (shape {tuple(input.shape)}) but earlier "
                f"updates had {num_classes}; call reset() to start over with another number of classes"
            )
        raise ValueError(
            f"fastdice: num_classes={num_classes} but the input has {input.shape[1]} channels "
            f"(shape {tuple(input.shape)}; expected (B, num_classes, *spatial))"
        )


def dice_score(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    num_classes: Optional[int] = None,
    mode: str = "multiclass",
    activation: str = "none",
    threshold: float = 0.5,
    include_background: bool = True,
    ignore_index: Optional[int] = None,
    average: Optional[str] = "macro",
    aggregation_level: str = "samplewise",
    empty: str = "nan",
) -> torch.Tensor:
    """Hard Dice 2TP / (2TP + FP + FN) of one batch, from logits or probabilities.

    Returns, like torchmetrics' functional ``dice_score``: samplewise, one value per
    sample [B] ([B, C'] for average="none"); global, [1] ([1, C']). See ``DiceScore``
    for the options.
    """
    return _functional(
        "dice", input, target, num_classes=num_classes, mode=mode, activation=activation, threshold=threshold,
        include_background=include_background, ignore_index=ignore_index, average=average,
        aggregation_level=aggregation_level, empty=empty,
    )


def jaccard_index(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    num_classes: Optional[int] = None,
    mode: str = "multiclass",
    activation: str = "none",
    threshold: float = 0.5,
    include_background: bool = True,
    ignore_index: Optional[int] = None,
    average: Optional[str] = "macro",
    aggregation_level: str = "samplewise",
    empty: str = "nan",
) -> torch.Tensor:
    """Hard IoU TP / (TP + FP + FN) of one batch; the shapes and options of ``dice_score``."""
    return _functional(
        "jaccard", input, target, num_classes=num_classes, mode=mode, activation=activation, threshold=threshold,
        include_background=include_background, ignore_index=ignore_index, average=average,
        aggregation_level=aggregation_level, empty=empty,
    )


# ----------------------------------------------------------------------------
# Accumulating metrics
# ----------------------------------------------------------------------------


class DiceScore(nn.Module):
    """Hard Dice over a validation set: ``update(input, target)`` per batch, ``compute()``, ``reset()``.

    An ``nn.Module``, like a torchmetrics metric: ``.to(device)`` / ``.cuda()`` move the
    accumulated counts, it can be a submodule of a model (``state_dict`` holds no counts,
    as torchmetrics' default non-persistent states), and results have the default float
    dtype (``torch.get_default_dtype()``, float32 unless changed) or the one set with
    ``set_dtype`` (computed in float64, then cast); ``.float()`` / ``.double()`` /
    ``.half()`` do not convert the integer counts.

    Args (keyword-only except num_classes):
        num_classes: channels of the input (checked); inferred from the first update when None.
        mode: "multiclass" (argmax over dim 1), "multilabel" (per-class threshold) or
            "binary" (one channel, threshold).
        activation: what the input holds, for the threshold: "none" (probabilities: compared
            with ``threshold``), "sigmoid" (logits: compared with logit(threshold), so 0 for
            0.5). Multiclass: irrelevant (argmax of logits = argmax of softmax).
        threshold: probability threshold of multilabel / binary predictions (strict ``>``).
        include_background: False drops class 0 from the scores (when C > 1).
        ignore_index: label (of a label-map target) whose positions count nowhere.
        average: over classes: "macro" (mean of the per-class scores, NaN left out),
            "micro" (one score of the counts summed over classes), "weighted" (by support
            TP + FN), "none" (per class; also None).
        aggregation_level: "samplewise" (a score per sample, averaged over samples, NaN left
            out: torchmetrics' default and MONAI's) or "global" (counts summed over the whole
            set first: one score of the data set, nnU-Net's / the demo's).
        empty: score of a class absent from both prediction and target: "nan" (left out of
            the means; torchmetrics), "one" (MONAI's ignore_empty=False), "zero", or
            "nan_if_target_empty" (NaN whenever the target lacks the class; MONAI's default).
        sync_on_compute: under an initialized torch.distributed process group with more than
            one rank, ``compute()`` combines the counts of all ranks (every rank must call it).
        process_group: the group to combine over (default: the world).

    State: the int64 counts TP, FP, FN per (class) summed over the set (global), or per
    (sample, class) (samplewise: 24·C bytes per sample), on the device of the inputs; no
    host synchronization in ``update``. Scores are computed in float64 and returned in the
    metric's dtype (see above).
    """

    _metric = "dice"

    def __init__(
        self,
        num_classes: Optional[int] = None,
        *,
        mode: str = "multiclass",
        activation: str = "none",
        threshold: float = 0.5,
        include_background: bool = True,
        ignore_index: Optional[int] = None,
        average: Optional[str] = "macro",
        aggregation_level: str = "samplewise",
        empty: str = "nan",
        sync_on_compute: bool = True,
        process_group=None,
    ):
        super().__init__()
        check_choice("mode", mode, MODES)
        self.num_classes = _check_num_classes(num_classes, mode)
        self.mode = mode
        self.activation = activation
        self.threshold = threshold
        self._op_threshold = op_threshold(mode, activation, threshold)
        self.average = _check_score_options(self._metric, include_background, average, aggregation_level, empty)
        self.ignore_index = check_ignore_index(ignore_index)
        self.include_background = include_background
        self.aggregation_level = aggregation_level
        self.empty = empty
        check_bool("sync_on_compute", sync_on_compute)
        self.sync_on_compute = sync_on_compute
        self.process_group = process_group
        self._dtype = torch.get_default_dtype()
        self.reset()

    # -- module plumbing (torchmetrics' behaviour) ------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of ``compute()`` / ``forward`` results."""
        return self._dtype

    def set_dtype(self, dst_type: torch.dtype) -> "DiceScore":
        """Results in ``dst_type`` (a floating dtype) from now on; returns self (torchmetrics' ``set_dtype``)."""
        if not isinstance(dst_type, torch.dtype) or not dst_type.is_floating_point:
            raise TypeError(f"fastdice: set_dtype needs a floating-point torch.dtype, got {dst_type!r}")
        self._dtype = dst_type
        return self

    def _apply(self, fn, recurse=True):
        """Moves the accumulated counts with the module (``.to()``, ``.cuda()``, ``.cpu()``);
        the counts are integers, so dtype conversions leave them as they are."""
        super()._apply(fn, recurse)
        if self._samples:
            self._samples = [fn(t) for t in self._samples]
        if self._total is not None:
            self._total = fn(self._total)
        if self._invalid is not None:
            self._invalid = fn(self._invalid)
        for state in (self._total, self._invalid, *self._samples):
            if state is not None:
                self._device = state.device
                break
        return self

    # -- state ---------------------------------------------------------------

    def reset(self) -> None:
        """Forgets every update (and a previous ``sync()``)."""
        self._classes: Optional[int] = self.num_classes
        self._samples: List[torch.Tensor] = []  # samplewise: [B, C, 3] per update
        self._total: Optional[torch.Tensor] = None  # global: [C, 3]
        self._invalid: Optional[torch.Tensor] = None  # samples with poisoned (negative) counts
        self._device: Optional[torch.device] = None
        self._updates = 0
        self._synced = False

    def _batch_counts(self, input, target) -> torch.Tensor:
        """The counts [B, C, 3] of one batch, checked against the state (see ``_check_batch``)."""
        counts = _counts_op(
            _as_tensor("input", input).detach(), _as_tensor("target", target).detach(), self.mode,
            self._op_threshold, self.ignore_index,
        )
        self._check_batch(input, counts)
        return counts

    @torch.compiler.disable
    def _check_batch(self, input, counts: torch.Tensor) -> None:
        """The batch fits the state: not synced, the same classes and device as earlier updates.

        Outside any compiled graph, like ``_add``: the state (None before the first update,
        then the class count, the device, the growing list) changes between calls, and
        guards on it would recompile ``update`` every call under ``torch.compile``; only
        the fused count is traced."""
        if self._synced:
            raise RuntimeError(
                "fastdice: update() after sync(): the state holds every rank's counts; call reset() first"
            )
        _check_num_classes_matches(self._classes, input, inferred=self.num_classes is None)
        if self._device is not None and counts.device != self._device:
            raise ValueError(f"fastdice: this metric's state is on {self._device}, but the input is on {counts.device}")

    @torch.compiler.disable
    def _add(self, counts: torch.Tensor) -> None:
        self._classes = counts.shape[1]
        self._device = counts.device
        invalid = (counts < 0).flatten(1).any(-1).sum()
        self._invalid = invalid if self._invalid is None else self._invalid + invalid
        if self.aggregation_level == "samplewise":
            self._samples.append(counts)
        else:
            total = counts.sum(0)
            self._total = total if self._total is None else self._total + total
        self._updates += 1

    def update(self, input: torch.Tensor, target: torch.Tensor) -> None:
        """Adds one batch: logits / probabilities (B, C, *spatial) and its target."""
        self._add(self._batch_counts(input, target))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``update`` and the score of this batch alone (torchmetrics' ``forward``; call the module)."""
        counts = self._batch_counts(input, target)
        self._add(counts)
        return self._score(counts if self.aggregation_level == "samplewise" else counts.sum(0, keepdim=True),
                           (counts < 0).flatten(1).any(-1).sum(), self.average)

    @property
    def counts(self) -> Optional[torch.Tensor]:
        """This rank's accumulated counts (all classes, background included): samplewise
        [N, C, 3], global [C, 3]; None before the first update."""
        if self._classes is None or self._updates == 0:
            return None
        if self.aggregation_level == "samplewise":
            if len(self._samples) != 1:
                self._samples = [torch.cat(self._samples)]  # compacted once per compute
            return self._samples[0]
        return self._total

    # -- distributed ---------------------------------------------------------

    def _distributed(self):
        if not self.sync_on_compute or self._synced:
            return None
        try:
            import torch.distributed as dist
        except ImportError:
            return None
        if not (dist.is_available() and dist.is_initialized()):
            return None
        if dist.get_world_size(self.process_group) <= 1:
            return None
        return dist

    def _gather(self, dist):
        """(counts, invalid) of all ranks: global [C, 3] summed, samplewise [N_total, C, 3]."""
        group = self.process_group
        comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else None
        device = comm or self._device or torch.device("cpu")
        big = 2**62
        known = self._classes is not None
        info = torch.tensor([self._classes if known else -1, -(self._classes if known else big)], device=device)
        dist.all_reduce(info, op=dist.ReduceOp.MAX, group=group)
        max_c, min_c = int(info[0]), -int(info[1])
        if max_c < 0:
            raise RuntimeError("fastdice: compute() before any update() on every rank")
        if min_c != max_c:
            raise ValueError(f"fastdice: ranks disagree on the number of classes ({min_c} vs {max_c})")
        local = self.counts
        invalid = self._invalid if self._invalid is not None else torch.zeros((), dtype=torch.int64)
        invalid = invalid.to(device).clone()
        dist.all_reduce(invalid, group=group)
        if self.aggregation_level == "global":
            total = local.to(device).clone() if local is not None else torch.zeros(max_c, 3, dtype=torch.int64, device=device)
            dist.all_reduce(total, group=group)
            return total, invalid
        local = local.to(device) if local is not None else torch.zeros(0, max_c, 3, dtype=torch.int64, device=device)
        world = dist.get_world_size(group)
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64, device=device), group=group)
        sizes = [int(s) for s in sizes]
        most = max(sizes)
        padded = torch.zeros(most, max_c, 3, dtype=torch.int64, device=device)
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]), invalid

    def sync(self) -> Optional[torch.Tensor]:
        """Replaces this rank's state by the counts of all ranks (a collective: every rank
        calls it). Later ``compute()`` calls use it as is; ``update()`` needs ``reset()``
        first. Without a process group of several ranks: nothing to do. Returns ``counts``."""
        dist = self._distributed()
        if dist is not None:
            counts, invalid = self._gather(dist)
            target_device = self._device or counts.device
            counts, invalid = counts.to(target_device), invalid.to(target_device)
            self._classes, self._device = counts.shape[-2], target_device
            self._invalid = invalid
            if self.aggregation_level == "samplewise":
                self._samples = [counts]
            else:
                self._total = counts
            self._updates = max(self._updates, 1)
            self._synced = True
        return self.counts

    # -- result --------------------------------------------------------------

    def _score(self, counts: torch.Tensor, invalid: torch.Tensor, average: str) -> torch.Tensor:
        """counts: samplewise [N, C, 3], global [1, C, 3]; the final score (scalar or [C'])."""
        counts = _drop_background(counts, self.include_background)
        per = _average(counts, self._metric, average, self.empty)  # [N] or [N, C']
        out = torch.nanmean(per, dim=0) if per.shape[0] != 1 else per[0]
        # A CUDA-poisoned sample (invalid target) makes the whole result NaN.
        return torch.where(invalid.to(out.device) > 0, torch.full_like(out, math.nan), out).to(self._dtype)

    def compute(self, average: Optional[str] = "default") -> torch.Tensor:
        """The score over everything since ``reset()`` (over all ranks, see ``sync_on_compute``).

        average: override this metric's ``average`` for this call (e.g. ``compute("none")``
        for the per-class scores next to the mean), from the same counts.
        Returns a scalar, or [C'] for "none" (C' = C, or C - 1 without background), in the
        metric's dtype (the default float dtype unless ``set_dtype`` changed it).
        """
        average = self.average if average == "default" else _check_average(average)
        dist = self._distributed()
        if dist is not None:
            counts, invalid = self._gather(dist)
        else:
            if self._updates == 0:
                raise RuntimeError(f"fastdice: {type(self).__name__}.compute() called before any update()")
            counts, invalid = self.counts, self._invalid
        if self.aggregation_level == "global":
            counts = counts.unsqueeze(0)
        if counts.shape[0] == 0:  # samplewise, only empty batches
            per_class = counts.shape[1] - (0 if self.include_background or counts.shape[1] <= 1 else 1)
            shape = (per_class,) if average == "none" else ()
            return torch.full(shape, math.nan, dtype=self._dtype, device=counts.device)
        return self._score(counts, invalid, average)

    def _constructor_values(self) -> dict:
        names = ("num_classes", "mode", "activation", "threshold", "include_background", "ignore_index", "average",
                 "aggregation_level", "empty", "sync_on_compute")
        return {name: getattr(self, name) for name in names}

    def __repr__(self):
        return f"{type(self).__name__}({_api.constructor_repr(self)})"


class JaccardIndex(DiceScore):
    """Hard IoU TP / (TP + FP + FN) over a validation set; the options and state of ``DiceScore``."""

    _metric = "jaccard"


IoU = JaccardIndex


def _as_tensor(name, value):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"fastdice: {name} must be a tensor, got {type(value).__name__}")
    return value


def _counts_op(input, target, mode, threshold, ignore_index):
    """fastdice::confusion_counts; a label outside its range raises LabelOutOfRangeError
    (the extension's IndexError, its message complete)."""
    _api.refuse_float_label_map(input, target)
    try:
        return torch.ops.fastdice.confusion_counts(input, target, mode, threshold, ignore_index)
    except IndexError as error:
        raise LabelOutOfRangeError(str(error)) from None
