"""Options of the Dice losses: names, defaults and validation, and the
validators and dtype lists every fastdice module shares (the reference,
fastdice.reference, states its own on purpose)."""

import math
import numbers
from dataclasses import dataclass, fields
from typing import Literal, Optional, Sequence, Union

import torch

ACTIVATIONS = ("none", "sigmoid", "softmax")
POOLINGS = ("global", "batch", "sample")
REDUCTIONS = ("mean", "sum", "none")
#: Target dtypes read as class-index label maps.
LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

WeightLike = Union[None, float, Sequence[float], torch.Tensor]
Activation = Literal["none", "sigmoid", "softmax"]
Pooling = Literal["global", "batch", "sample"]
Reduction = Literal["mean", "sum", "none"]


@dataclass(frozen=True)
class DiceOptions:
    activation: str = "none"
    pooling: str = "global"
    include_background: bool = True
    weight: WeightLike = None
    ignore_index: Optional[int] = None
    smooth_nr: float = 1.0
    smooth_dr: float = 1.0
    squared: bool = False
    jaccard: bool = False
    log_loss: bool = False
    soft_label: bool = False
    reduction: str = "mean"
    log_eps: float = 1e-7
    distributed: bool = False

    def __post_init__(self):
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("reduction", self.reduction, REDUCTIONS)
        for name in ("smooth_nr", "smooth_dr"):
            check_nonnegative(name, getattr(self, name))
        if not isinstance(self.log_eps, numbers.Real) or not (self.log_eps > 0 and math.isfinite(self.log_eps)):
            raise ValueError(f"fastdice: log_eps must be a finite number > 0, got {self.log_eps!r}")
        if self.distributed and self.pooling == "sample":
            raise ValueError(
                "fastdice: distributed=True needs pooling='batch' or 'global' (per-sample statistics are local)"
            )
        for name in ("include_background", "squared", "jaccard", "log_loss", "soft_label", "distributed"):
            check_bool(name, getattr(self, name))
        check_ignore_index(self.ignore_index)

    @property
    def full_stats(self) -> bool:
        """Whether the statistics beyond sum(p*t), sum(p), sum(t) are needed."""
        return self.squared or self.soft_label

    @property
    def form(self) -> str:
        """The Dice denominator / intersection: 'squared', 'soft_label' or 'plain'."""
        return "squared" if self.squared else "soft_label" if self.soft_label else "plain"

    def epilogue_options(self) -> dict:
        """The Dice term's options of the epilogue op, by its names (fastdice._ops.EPILOGUE_OPTIONS)."""
        return dict(
            pooling=self.pooling, include_background=self.include_background, form=self.form,
            jaccard=self.jaccard, smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr, log_loss=self.log_loss,
            log_eps=self.log_eps, reduction=self.reduction,
        )

    def replace(self, **changes) -> "DiceOptions":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return DiceOptions(**values)


def check_choice(name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"fastdice: {name} must be one of {choices}, got {value!r}")


def _finite_nonnegative(value) -> bool:
    """Whether value is a real number (not a bool), finite and >= 0."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0


def check_nonnegative(name: str, value) -> float:
    """A real number (not a bool), finite and >= 0, as a float."""
    if not _finite_nonnegative(value):
        raise ValueError(f"fastdice: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"fastdice: {name} must be a bool, got {value!r}")


def check_ignore_index(ignore_index) -> Optional[int]:
    """An int (not a bool) or None."""
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral)):
        raise TypeError(f"fastdice: ignore_index must be an int or None, got {ignore_index!r}")
    return None if ignore_index is None else int(ignore_index)


def weight_tensor(weight: WeightLike, num_classes: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """The per-class weight as a 1-D tensor of length num_classes (or None)."""
    if weight is None:
        return None
    if isinstance(weight, numbers.Real) and not isinstance(weight, bool):
        w = torch.full((num_classes,), float(weight), dtype=like.dtype, device=like.device)
    else:
        w = torch.as_tensor(weight).to(device=like.device, dtype=like.dtype)
        if w.dim() != 1 or w.numel() != num_classes:
            raise ValueError(
                f"fastdice: weight must be a number or have one entry per class of the input "
                f"({num_classes}), got shape {tuple(w.shape)}"
            )
    return w


def check_weight_values(weight: WeightLike) -> None:
    """Checks user-given weights once, at construction or call. A CUDA tensor
    is not inspected (that would need a host sync); CPU tensors and Python
    numbers must be finite and >= 0."""
    if weight is None:
        return
    if isinstance(weight, torch.Tensor):
        if not (weight.is_floating_point() or weight.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"fastdice: weight must be a float tensor, got dtype {weight.dtype}")
        if weight.device.type != "cpu":
            return
        values = weight.double().flatten().tolist()
    else:
        values = [weight] if isinstance(weight, numbers.Real) else list(weight)
    if not all(_finite_nonnegative(v) for v in values):
        raise ValueError(f"fastdice: weight must be finite and >= 0, got {weight!r}")
