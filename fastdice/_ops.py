"""Registration of the fastdice custom ops: fake (meta) kernels.

The C++ library (fastdice._C) defines the schemas, the CPU/CUDA kernels and
the autograd of dice_stats; this module makes the ops traceable by torch.compile.
"""

from typing import Optional, Sequence

import torch

try:
    from . import _C  # noqa: F401  (loading the library registers torch.ops.fastdice.*)
except ImportError as _error:  # say what to do (Python's own message blames a circular import)
    import glob as _glob
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    _built = _glob.glob(_os.path.join(_here, "_C*.so")) + _glob.glob(_os.path.join(_here, "_C*.pyd"))
    if _built:  # it is there but does not load: the loader's reason matters
        raise ImportError(
            f"fastdice: the compiled extension {_built[0]} does not load ({_error}); it was probably built "
            f"against another torch: rebuild it (`python setup.py build_ext --inplace` in a source checkout, "
            f"or reinstall with `pip install --no-build-isolation .`)"
        ) from _error
    _source_tree = _os.path.isfile(_os.path.join(_here, _os.pardir, "setup.py"))
    raise ImportError(
        f"fastdice: the compiled extension fastdice._C is not built in {_here}. "
        + (
            "This is a source checkout whose extension is not built in place: run "
            "`python setup.py build_ext --inplace` (or `make build`) in the checkout, or, if fastdice was "
            "installed with pip, import it from another working directory so that the installed copy is used."
            if _source_tree
            else "Reinstall fastdice (`pip install --no-build-isolation .` from the source tree)."
        )
    ) from None

# The overloads themselves: calling the packet (torch.ops.fastdice.dice_stats) resolves
# the overload on every call.
DICE_STATS = torch.ops.fastdice.dice_stats.default
DICE_LOSS_FROM_STATS = torch.ops.fastdice.dice_loss_from_stats.default

#: The contracts the C++ side defines, read from it once (fastdice::constants,
#: csrc/ops/constants.cpp): the names of the statistics along the last
#: dimension of ``dice_stats``' output, in order (FD_STATS, csrc/dice_math.h),
#: and the limits of the region table (csrc/dice_problem.h).
_STAT_NAMES, MAX_REGIONS, REGION_LABELS = torch.ops.fastdice.constants.default()
STAT_NAMES = tuple(_STAT_NAMES)
NUM_STATS = len(STAT_NAMES)
#: The index of each statistic by name, e.g. ``STAT_INDEX["sum_target"]``.
STAT_INDEX = {name: index for index, name in enumerate(STAT_NAMES)}
TP = STAT_INDEX["true_positive"]  # sum p*t
SUM_P = STAT_INDEX["sum_prob"]  # sum p
SUM_T = STAT_INDEX["sum_target"]  # sum t
SUM_P2 = STAT_INDEX["sum_prob_sq"]  # sum p^2
SUM_T2 = STAT_INDEX["sum_target_sq"]  # sum t^2
SUM_ABS_DIFF = STAT_INDEX["sum_abs_diff"]  # sum |p - t|
SUM_ABS_P = STAT_INDEX["sum_abs_prob"]  # sum |p|
SUM_ABS_T = STAT_INDEX["sum_abs_target"]  # sum |t|
VALID_COUNT = STAT_INDEX["valid_count"]  # elements not ignored
PIXEL_LOSS = STAT_INDEX["pixel_loss"]  # sum l, the per-element loss selected by pixel_loss (cross-entropy / focal)
PIXEL_LOSS_TARGET = STAT_INDEX["pixel_loss_target"]  # sum t*l

#: Values of dice_stats' pixel_loss argument.
PIXEL_LOSSES = ("none", "cross_entropy", "binary_cross_entropy")


def stats_dtype(input_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if input_dtype == torch.float64 else torch.float32


@torch.library.register_fake("fastdice::dice_stats")
def _dice_stats_fake(
    input, target, activation, full_stats, ignore_index, pixel_loss="none", focal_gamma=0.0, mask=None, regions=None
):
    torch._check(input.dim() >= 2, lambda: f"fastdice: input must have shape (B, C, *spatial), got {tuple(input.shape)}")
    return input.new_empty((input.shape[0], input.shape[1], NUM_STATS), dtype=stats_dtype(input.dtype))


def _spatial_dims_collapsible(t: torch.Tensor) -> bool:
    """Same rule as spatial_dims_collapsible in csrc/dice_problem.cpp."""
    expected = None
    for d in range(t.dim() - 1, 1, -1):
        if t.shape[d] == 1:
            continue
        if expected is not None and t.stride(d) != expected:
            return False
        expected = t.stride(d) * t.shape[d]
    return True


@torch.library.register_fake("fastdice::dice_stats_backward")
def _dice_stats_backward_fake(
    grad_stats,
    input,
    target,
    activation,
    full_stats,
    ignore_index,
    pixel_loss="none",
    focal_gamma=0.0,
    target_grad=False,
    mask=None,
    regions=None,
):
    # The layout rules of allocate_grad_input / allocate_grad_target / no_grad_target
    # (csrc/dice_problem.cpp).
    grad = torch.empty_like(input)
    grad_input = grad if _spatial_dims_collapsible(grad) else input.new_empty(input.shape)
    grad_target = target.new_empty(target.shape) if target_grad else input.new_empty((0,))
    return grad_input, grad_target


# Autograd of dice_stats is registered in C++ (csrc/ops/dice_stats_autograd.cpp):
# the Python wrapper of torch.library.register_autograd cost ~120 us per step.


def dice_stats(
    input: torch.Tensor,
    target: torch.Tensor,
    activation: str = "none",
    full_stats: bool = False,
    ignore_index: Optional[int] = None,
    pixel_loss: str = "none",
    focal_gamma: float = 0.0,
    mask: Optional[torch.Tensor] = None,
    regions: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Per-(sample, class) statistics ``[B, C, NUM_STATS]`` of ``activation(input)`` and ``target``.

    One fused pass; a label outside its range raises :class:`fastdice.LabelOutOfRangeError`
    (the bare op raises it as an IndexError); differentiable with respect to ``input`` and a dense float
    ``target``. See ``STAT_NAMES``. ``activation``: ``'none'`` (probabilities:
    a value outside [0, 1] raises on CPU and makes its sample NaN on CUDA),
    ``'identity'`` (the input as it is, unchecked), ``'sigmoid'``, ``'softmax'``.
    ``pixel_loss`` adds the sums of a per-element loss ``l`` of the logits
    (``PIXEL_LOSS``: sum l, ``PIXEL_LOSS_TARGET``: sum t*l):
    ``'cross_entropy'``: ``l = -log softmax(input)[c]`` (activation must be
    softmax); ``'binary_cross_entropy'``: ``l = BCE-with-logits(input, t)``
    (activation sigmoid or softmax). ``focal_gamma > 0`` multiplies ``l`` by
    the focal modulator (MONAI's softmax / sigmoid focal loss). ``mask``
    (``(B, *spatial)`` or ``(B, 1, *spatial)``, bool / uint8 / floating 0-1):
    where it is 0 a position adds to no statistic and gets zero gradient.
    ``regions`` (with an integer label map): one bit set per input channel
    (see :func:`fastdice.options.region_bits`); channel c's target is 1 where the label is
    in region c.
    """
    if mask is not None or regions is not None:
        return DICE_STATS(
            input, target, activation, full_stats, ignore_index, pixel_loss, float(focal_gamma), mask,
            None if regions is None else list(regions),
        )
    if pixel_loss == "none" and focal_gamma == 0.0:
        return DICE_STATS(input, target, activation, full_stats, ignore_index)
    return DICE_STATS(input, target, activation, full_stats, ignore_index, pixel_loss, float(focal_gamma))


_SCHEMA_TYPES = {"str": str, "bool": bool, "float": float, "int": int}

#: The options of fastdice::dice_loss_from_stats after (stats, weight, ce_weight), as
#: (name, default, Python type), in the order, with the defaults and types, of the op's
#: schema (FD_EPILOGUE_OPTIONS, csrc/dice_epilogue_host.h). Numbers are converted to
#: the type; strings and bools pass as they are, for the op to check.
EPILOGUE_OPTIONS = tuple(
    (argument.name, argument.default_value, _SCHEMA_TYPES[str(argument.type)])
    for argument in DICE_LOSS_FROM_STATS._schema.arguments[3:]
)
EPILOGUE_OPTION_NAMES = tuple(name for name, _, _ in EPILOGUE_OPTIONS)


def _epilogue_options(options: tuple, named: dict) -> dict:
    """The epilogue's options by name, from the op's positional arguments after ce_weight."""
    values = {name: default for name, default, _ in EPILOGUE_OPTIONS}
    values.update(zip(EPILOGUE_OPTION_NAMES, options))
    values.update(named)
    return values


def _dice_classes(num_classes, include_background):
    return num_classes - 1 if not include_background and num_classes > 1 else num_classes


@torch.library.register_fake("fastdice::dice_loss_from_stats")
def _dice_loss_from_stats_fake(stats, weight, ce_weight, *options, **named):
    o = _epilogue_options(options, named)
    torch._check(stats.dim() == 3, lambda: f"fastdice: stats must have shape (B, C, {NUM_STATS})")
    shape = ()
    if o["reduction"] == "none" and o["pooling"] == "sample":
        shape = (stats.shape[0], _dice_classes(stats.shape[1], o["include_background"]))
    elif o["reduction"] == "none" and o["pooling"] == "batch":
        shape = (_dice_classes(stats.shape[1], o["include_background"]),)
    return stats.new_empty(shape)


@torch.library.register_fake("fastdice::dice_loss_from_stats_backward")
def _dice_loss_from_stats_backward_fake(grad, stats, *options):
    return torch.empty_like(stats, memory_format=torch.contiguous_format)


def dice_loss_from_stats(stats, weight=None, ce_weight=None, *, args: Optional[tuple] = None, **options):
    """The loss ``lambda_dice * Dice + lambda_ce * CE`` of statistics ``[B, C, NUM_STATS]``
    in one op (see csrc/ops/dice_loss_from_stats.cpp); differentiable with respect to stats
    (the weights are constants).

    The options are keyword-only, named and defaulted as ``EPILOGUE_OPTIONS`` says, or
    ``args``: the same as :func:`epilogue_args` gave them, computed once by the caller.
    ce_family follows the normalization of torch's CrossEntropyLoss / BCEWithLogitsLoss
    (see fastdice.functional.pixel_loss_from_stats).
    """
    return DICE_LOSS_FROM_STATS(stats, weight, ce_weight, *(epilogue_args(**options) if args is None else args))


def epilogue_args(**options) -> tuple:
    """The options of dice_loss_from_stats (named and defaulted as ``EPILOGUE_OPTIONS``
    says) as the op's positional arguments after (stats, weight, ce_weight): a loss
    computes them once (``DiceOptions.epilogue_args``), not per call."""
    unknown = set(options) - set(EPILOGUE_OPTION_NAMES)
    if unknown:
        raise TypeError(f"fastdice: dice_loss_from_stats got unknown options {sorted(unknown)}")
    args = []
    for name, default, kind in EPILOGUE_OPTIONS:
        value = options.get(name, default)
        args.append(kind(value) if kind in (float, int) else value)
    return tuple(args)


#: Names of the counts along the last dimension of ``confusion_counts``' output.
COUNT_NAMES = ("true_positive", "false_positive", "false_negative")
NUM_COUNTS = len(COUNT_NAMES)


@torch.library.register_fake("fastdice::confusion_counts")
def _confusion_counts_fake(input, target, mode, threshold, ignore_index):
    torch._check(input.dim() >= 2, lambda: f"fastdice: input must have shape (B, C, *spatial), got {tuple(input.shape)}")
    return input.new_empty((input.shape[0], input.shape[1], NUM_COUNTS), dtype=torch.int64)


# fastdice::confusion_counts has no autograd: integer counts are not differentiable
# (fastdice.metrics passes detached tensors).
