"""Plumbing of the public classes: foreign (MONAI / smp) argument names,
``repr`` from the constructor's own arguments, warnings that point at the
caller, and the rule for inputs without elements."""

import functools
import inspect
import os
import sys
import warnings
from typing import Callable, Dict, Optional, Tuple, TypeVar

import torch

F = TypeVar("F", bound=Callable)

# Arguments of MONAI's / smp's losses that the native classes spell otherwise:
# name -> (what to pass to the native class instead, the compat module).
FOREIGN_ARGUMENTS: Dict[str, Tuple[str, str]] = {
    "softmax": ("activation='softmax'", "monai"),
    "sigmoid": ("activation='sigmoid'", "monai"),
    "other_act": ("apply the activation yourself and pass activation='none'", "monai"),
    "to_onehot_y": (
        "nothing: pass the integer label map, (B, *spatial) or (B, 1, *spatial), as the target "
        "(it is read as labels, never expanded to one-hot)",
        "monai",
    ),
    "batch": ("pooling='batch' (batch=False is pooling='sample')", "monai"),
    "squared_pred": ("squared=True", "monai"),
    "lambda_gdl": ("lambda_dice", "monai"),
    "use_softmax": ("activation='softmax'", "monai"),
    "mode": (
        "activation='softmax' with an integer label map (multiclass), activation='sigmoid' with a "
        "dense target (binary / multilabel)",
        "smp",
    ),
    "from_logits": ("activation='softmax' or 'sigmoid' (logits) or 'none' (probabilities)", "smp"),
    "smooth": ("smooth_nr and smooth_dr", "smp"),
    "classes": ("include_background / weight (a zero weight drops a class)", "smp"),
    "class_weights": ("weight", "smp"),
    "eps": ("log_eps", "smp"),
}


def native_arguments(fn: Optional[F] = None, *, renamed: Optional[Dict[str, str]] = None):
    """Decorates a constructor (or function) with explicit keyword arguments:
    a MONAI- or smp-style argument it does not take raises a TypeError that
    names the native option and the drop-in class of ``fastdice.compat``;
    a name in ``renamed`` (another fastdice class's name for one of its
    arguments) raises a TypeError naming this one's. ``inspect.signature``
    and type checkers see ``fn``'s own signature."""
    if fn is None:
        return functools.partial(native_arguments, renamed=renamed)
    accepted = set(inspect.signature(fn).parameters)
    owner = fn.__qualname__.split(".")[0]
    renamed = dict(renamed or {})

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for name in kwargs:
            if name in accepted:
                continue
            if name in renamed:
                raise TypeError(f"fastdice: {owner} takes {renamed[name]!r}, not {name!r}")
            if name in FOREIGN_ARGUMENTS:
                native, compat = FOREIGN_ARGUMENTS[name]
                peer = "MONAI" if compat == "monai" else "smp"
                raise TypeError(
                    f"fastdice.{owner}: {name!r} is an argument of {peer}'s losses; the native option is "
                    f"{native}. For {peer}'s signature itself use fastdice.compat.{compat}"
                    + (f".{owner}" if owner != "dice_loss" else "")
                )
        return fn(*args, **kwargs)

    return wrapper


def _same(value, default) -> bool:
    if isinstance(value, torch.Tensor) or isinstance(default, torch.Tensor):
        return value is default
    if isinstance(value, bool) != isinstance(default, bool):
        return False
    try:
        return bool(value == default)
    except Exception:
        return False


def shortest_values(tensor: torch.Tensor, dtype: Optional[torch.dtype] = None) -> list:
    """The values of ``tensor`` as Python numbers, each the shortest decimal that is
    the same number in ``dtype`` (a float32 weight's 0.1, not 0.10000000149011612);
    ``dtype`` None: the values as they are."""
    values = tensor.tolist()
    if dtype is None or dtype == torch.float64:
        return values
    out = []
    for value in values:
        exact = torch.tensor(value, dtype=dtype)
        out.append(next(
            (float(f"{value:.{digits}g}") for digits in range(1, 18)
             if torch.tensor(float(f"{value:.{digits}g}"), dtype=dtype) == exact),
            value,
        ))
    return out


def _format(value) -> str:
    if isinstance(value, torch.Tensor):
        return repr(value.tolist())
    return repr(value)


def constructor_repr(module) -> str:
    """``extra_repr`` of a module whose ``_constructor_values()`` returns its
    constructor arguments (by the constructor's names) as they are now: the
    ones that differ from the constructor's defaults, in signature order."""
    values = module._constructor_values()
    parts = []
    for name, p in inspect.signature(type(module).__init__).parameters.items():
        if name in ("self", "process_group") or name not in values:
            continue
        if p.default is not inspect.Parameter.empty and _same(values[name], p.default):
            continue
        parts.append(f"{name}={_format(values[name])}")
    return ", ".join(parts)


_FASTDICE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def warn(message: str, category=UserWarning) -> None:
    """warnings.warn attributed to the first frame outside fastdice and torch:
    the line of the caller's code that called the loss (not torch's
    module.py, nor fastdice's internals)."""
    if torch.compiler.is_compiling():  # dynamo cannot trace frame objects; it handles warnings.warn itself
        warnings.warn(message, category, stacklevel=2)
        return
    frame = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith((_FASTDICE_DIR, _TORCH_DIR)):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def zero_if_empty(loss: torch.Tensor, input: torch.Tensor, distributed: bool = False) -> torch.Tensor:
    """The native rule for an input without elements (B, C or a spatial size
    0): the loss is 0 (zeros of the reduction's shape), for every pooling,
    a differentiable zero; ``loss`` otherwise, untouched. Not with
    ``distributed=True``: the loss is then the global batch's, of the
    all-reduced statistics, and an empty rank takes part in its backward."""
    if distributed or input.numel() != 0:
        return loss
    return loss.nan_to_num(0.0, 0.0, 0.0) * 0


def refuse_float_label_map(input: torch.Tensor, target: torch.Tensor) -> None:
    """A float or bool target shaped like a label map of ``input`` (B, C > 1, *spatial) is refused with
    the fix: MONAI's LoadImage gives float label maps, which would otherwise be rejected as a dense
    target of the wrong shape, or need a check of every value to be read as labels."""
    if (target.dtype.is_floating_point or target.dtype == torch.bool) and input.dim() >= 2 and input.shape[1] > 1:
        b, c, *spatial = input.shape
        if tuple(target.shape) in ((b, *spatial), (b, 1, *spatial)):
            raise ValueError(
                f"fastdice: target of shape {tuple(target.shape)} is shaped like a label map for input "
                f"{tuple(input.shape)}, but its dtype is {target.dtype}: label maps must be integer tensors; pass "
                f"target.long() (float label maps, e.g. from MONAI's LoadImage, are not read as labels: that "
                f"would need a check of every value). A dense target must have the input's shape."
            )
