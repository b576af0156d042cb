"""Options of the Dice losses: names, defaults and validation, and the
validators and dtype lists every fastdice module shares (the reference,
fastdice.reference, states its own on purpose)."""

import math
import numbers
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple, Optional, Sequence, Union

import torch

from ._ops import MAX_REGIONS, REGION_LABELS, epilogue_args

ACTIVATIONS = ("none", "sigmoid", "softmax")
POOLINGS = ("global", "batch", "sample")
REDUCTIONS = ("mean", "sum", "none")
#: Target dtypes read as class-index label maps.
LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

WeightLike = Union[None, float, Sequence[float], torch.Tensor]
#: Regions of a region-based target: one sequence of labels per input channel.
RegionsLike = Optional[Sequence[Sequence[int]]]
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
        """What every call passes to the ops, computed once (the options do not change):
        the regions' bit sets, the epilogue op's arguments, and those for statistics
        already pooled (and all-reduced) without the background (``distributed``)."""
        object.__setattr__(self, "_region_bits", None if self.regions is None else region_bits(self.regions))
        object.__setattr__(self, "epilogue_args", epilogue_args(**self.epilogue_options()))
        pooled = dict(self.epilogue_options(), include_background=True)
        object.__setattr__(self, "pooled_epilogue_args", epilogue_args(**pooled))

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
        """The Dice term's options of the epilogue op, by the names of its schema (fastdice._ops.EPILOGUE_OPTIONS)."""
        return dict(
            pooling=self.pooling, include_background=self.include_background, form=self.form,
            jaccard=self.jaccard, smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr, log_loss=self.log_loss,
            log_eps=self.log_eps, reduction=self.reduction,
        )

    def replace(self, **changes) -> "DiceOptions":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return DiceOptions(**values)


class CEOptions(NamedTuple):
    """The second term of DiceCELoss / DiceFocalLoss: its weight against the Dice
    term's, the softmax cross-entropy's label smoothing, the focal exponent (0: the
    cross-entropy itself), and whether the loss returns its terms."""

    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    label_smoothing: float = 0.0
    focal_gamma: float = 0.0
    return_terms: bool = False


def ce_options(
    owner: str, *, weight, ce_weight, lambda_dice, lambda_ce, label_smoothing=0.0, focal_gamma=0.0,
    return_terms=False, gamma_name: Optional[str] = None, **dice,
):
    """``(DiceOptions, CEOptions)`` of DiceCELoss / DiceFocalLoss (``owner``, for the
    messages) from their keyword arguments, checked; ``dice``: the Dice term's options.
    ``gamma_name``: the name of the focal exponent to check first, where the loss takes one."""
    if gamma_name is not None:
        check_nonnegative(gamma_name, focal_gamma)
    for name, value in (("weight", weight), ("ce_weight", ce_weight)):
        if value is not None and not isinstance(value, (int, float)) and torch.as_tensor(value).dim() != 1:
            raise ValueError(f"fastdice: {name} must be a number or a 1-D sequence (one entry per class)")
        check_weight_values(value)
    if dice.get("reduction") == "none":
        raise ValueError(
            "fastdice: DiceCELoss reduction must be 'mean' or 'sum', got 'none' (the two terms have different "
            "shapes); for the terms themselves pass return_terms=True, for per-class Dice losses use "
            "fastdice.DiceLoss(reduction='none')"
        )
    opts = DiceOptions(**dice)
    if opts.activation not in ("softmax", "sigmoid"):
        raise ValueError(
            f"fastdice: {owner} needs activation='softmax' or 'sigmoid' (the input is logits), got {opts.activation!r}"
        )
    if opts.reduction not in ("mean", "sum"):
        raise ValueError(f"fastdice: DiceCELoss reduction must be 'mean' or 'sum', got {opts.reduction!r}")
    lambda_dice = check_nonnegative("lambda_dice", lambda_dice)
    lambda_ce = check_nonnegative("lambda_ce", lambda_ce)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) or not (
        0.0 <= label_smoothing <= 1.0
    ):
        raise ValueError(f"fastdice: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    if label_smoothing > 0 and opts.activation != "softmax":
        raise ValueError("fastdice: label_smoothing needs activation='softmax' (the softmax cross-entropy)")
    focal_gamma = check_nonnegative("focal_gamma", focal_gamma)
    if not isinstance(return_terms, bool):
        raise TypeError(f"fastdice: return_terms must be a bool, got {return_terms!r}")
    return opts, CEOptions(lambda_dice, lambda_ce, float(label_smoothing), focal_gamma, return_terms)


def tversky_options(*, alpha, beta, gamma, **dice):
    """``(DiceOptions, (alpha, beta, gamma))`` of TverskyLoss, checked."""
    opts = DiceOptions(**dice)
    return opts, tuple(check_nonnegative(name, value) for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)))


#: Class weights of the Generalized Dice loss.
W_TYPES = ("square", "simple", "uniform")


def generalized_dice_options(*, w_type, **dice) -> DiceOptions:
    """The DiceOptions of GeneralizedDiceLoss, with its own checks of pooling and w_type."""
    if dice.get("pooling") not in ("sample", "batch"):
        raise ValueError(f"fastdice: GeneralizedDiceLoss pooling must be 'sample' or 'batch', got {dice.get('pooling')!r}")
    if w_type not in W_TYPES:
        raise ValueError(f"fastdice: w_type must be one of {W_TYPES}, got {w_type!r}")
    return DiceOptions(**dice)


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
