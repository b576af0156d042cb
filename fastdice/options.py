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
#: Regions of a region-based target: one sequence of labels per input channel.
RegionsLike = Optional[Sequence[Sequence[int]]]
#: Limits of the op's region table (csrc/dice_problem.h): regions per input, labels 0..63.
MAX_REGIONS = 32
REGION_LABELS = 64
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
    regions: RegionsLike = None

    def __post_init__(self):
        object.__setattr__(self, "regions", check_regions(self.regions))
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
        self._derive()

    def _derive(self) -> None:
        """What every call passes to the ops, computed once (the options do not change)."""
        from . import _ops  # fastdice._ops loads the compiled library; the options do not need it before

        object.__setattr__(self, "_region_bits", None if self.regions is None else region_bits(self.regions))
        object.__setattr__(self, "epilogue_args", _ops.epilogue_args(**self.epilogue_options()))

    # Pickles hold the options only, so that ones written by another version load.
    def __getstate__(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._derive()

    @property
    def full_stats(self) -> bool:
        """Whether the statistics beyond sum(p*t), sum(p), sum(t) are needed."""
        return self.squared or self.soft_label

    @property
    def region_bits(self) -> Optional[list]:
        """The regions as the op takes them (see region_bits), or None."""
        return self._region_bits

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


def weight_tensor(
    weight: WeightLike, num_classes: int, dtype: torch.dtype, device: torch.device
) -> Optional[torch.Tensor]:
    """The per-class weight as a 1-D tensor of length num_classes in ``dtype`` on ``device`` (or None)."""
    if weight is None:
        return None
    if isinstance(weight, numbers.Real) and not isinstance(weight, bool):
        w = torch.full((num_classes,), float(weight), dtype=dtype, device=device)
    else:
        w = torch.as_tensor(weight).to(device=device, dtype=dtype)
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


def check_regions(regions) -> Optional[tuple]:
    """Regions as a tuple (one per input channel) of tuples of labels, or None.
    Each region is a non-empty sequence of integer labels in [0, 64); at most 32 regions."""
    if regions is None:
        return None
    if isinstance(regions, (str, bytes, torch.Tensor)) or not isinstance(regions, Sequence):
        raise TypeError(
            f"fastdice: regions must be a sequence of label sequences such as [[1, 2, 3], [2, 3], [3]], got {regions!r}"
        )
    out = []
    for c, region in enumerate(regions):
        if isinstance(region, numbers.Integral) and not isinstance(region, bool):
            region = (region,)
        if isinstance(region, (str, bytes)) or not isinstance(region, Sequence) or len(region) == 0:
            raise ValueError(f"fastdice: regions[{c}] must be a non-empty sequence of labels, got {region!r}")
        labels = []
        for label in region:
            if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < REGION_LABELS:
                raise ValueError(
                    f"fastdice: regions[{c}] holds {label!r}; region labels must be integers in [0, {REGION_LABELS})"
                )
            labels.append(int(label))
        out.append(tuple(labels))
    if not 1 <= len(out) <= MAX_REGIONS:
        raise ValueError(f"fastdice: regions must name between 1 and {MAX_REGIONS} regions, got {len(out)}")
    return tuple(out)


def region_bits(regions) -> list:
    """The op's form of checked regions: per region the bit set of its labels
    (bit l for label l) as a signed 64-bit int."""
    bits = []
    for region in regions:
        value = 0
        for label in region:
            value |= 1 << label
        bits.append(value - (1 << 64) if value >= 1 << 63 else value)
    return bits
