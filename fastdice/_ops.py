"""Registration of the fastdice custom ops: fake (meta) kernels.

The C++ library (fastdice._C) defines the schemas, the CPU/CUDA kernels and
the autograd of dice_stats; this module makes the ops traceable by torch.compile.
"""

import re
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

#: Names of the statistics along the last dimension of ``dice_stats``' output.
STAT_NAMES = (
    "true_positive",  # sum p*t
    "sum_prob",  # sum p
    "sum_target",  # sum t
    "sum_prob_sq",  # sum p^2
    "sum_target_sq",  # sum t^2
    "sum_abs_diff",  # sum |p - t|
    "sum_abs_prob",  # sum |p|
    "sum_abs_target",  # sum |t|
    "valid_count",  # elements not ignored
    "pixel_loss",  # sum l, the per-element loss selected by pixel_loss (cross-entropy / focal)
    "pixel_loss_target",  # sum t*l
)
NUM_STATS = len(STAT_NAMES)
(
    TP,
    SUM_P,
    SUM_T,
    SUM_P2,
    SUM_T2,
    SUM_ABS_DIFF,
    SUM_ABS_P,
    SUM_ABS_T,
    VALID_COUNT,
    PIXEL_LOSS,
    PIXEL_LOSS_TARGET,
) = range(NUM_STATS)

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


def as_peer_activation(activation: str) -> str:
    """The op's activation for a peer's semantics (the compat layers): without an
    activation MONAI, smp and nnU-Net take any values, so 'none' (probabilities,
    checked to lie in [0, 1]) becomes 'identity' (the input as it is)."""
    return "identity" if activation == "none" else activation


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

    One fused pass; differentiable with respect to ``input`` and a dense float
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
    try:
        if mask is not None or regions is not None:
            return DICE_STATS(
                input, target, activation, full_stats, ignore_index, pixel_loss, float(focal_gamma), mask,
                None if regions is None else list(regions),
            )
        if pixel_loss == "none" and focal_gamma == 0.0:
            return DICE_STATS(input, target, activation, full_stats, ignore_index)
        return DICE_STATS(input, target, activation, full_stats, ignore_index, pixel_loss, float(focal_gamma))
    except ValueError as e:
        better = explain_target_error(str(e), input, target)
        if better is None:
            raise
        raise ValueError(better) from None


_LABEL_ERROR = re.compile(r"fastdice: target label (-?\d+) \(sample (\d+), flat position (\d+)\) is outside \[0, (\d+)\)(.*)")
_INPUT_ERROR = re.compile(
    r"fastdice: with activation='none' the input must hold probabilities in \[0, 1\]; got (\S+) at sample (\d+), "
    r"class (\d+), flat position (\d+)"
)
_MASK_ERROR = re.compile(r"fastdice: mask values must be 0 or 1; got (\S+) at sample (\d+), flat position (\d+)")
_DENSE_ERROR = re.compile(
    r"fastdice: dense target values must lie in \[0, 1\]; got (\S+) at sample (\d+), class (\d+), flat position (\d+)"
)


def _unravel(flat: int, shape) -> tuple:
    coords = []
    for size in reversed(tuple(shape)):
        coords.append(flat % size if size else 0)
        flat = flat // size if size else 0
    return tuple(reversed(coords))


def _index(*parts) -> str:
    return ", ".join(str(p) for p in parts)


def explain_target_error(message: str, input, target):
    """The CPU kernels' target errors (raised while they read the target)
    name a flat position over the collapsed spatial axes; this rewrites them
    with the sample, the spatial coordinates and the index into ``target``,
    and for a one-channel input holding class indices says what is wrong.
    None when ``message`` is not one of them."""
    try:
        spatial = tuple(input.shape[2:])
        num_classes = input.shape[1]
    except Exception:
        return None
    m = _LABEL_ERROR.search(message)
    if m is not None:
        label, b, flat, classes, rest = int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5].strip()
        coords = _unravel(flat, spatial)
        index = _index(b, 0, *coords) if target.dim() == input.dim() else _index(b, *coords)
        text = (
            f"fastdice: target label {label} at target[{index}] (sample {b}, spatial position {coords} of "
            f"{spatial}) is outside [0, {classes})"
        )
        if rest:
            text += " " + rest
        if classes == 1:
            text += (
                "; the input has a single channel, so there is one class: class indices need a model with one "
                "output channel per class (input (B, C, *spatial) with activation='softmax'), a binary task a "
                "0/1 mask of the input's shape with activation='sigmoid'"
            )
        return text
    m = _MASK_ERROR.search(message)
    if m is not None:
        value, b, flat = m[1], int(m[2]), int(m[3])
        coords = _unravel(flat, spatial)
        return (
            f"fastdice: mask values must be 0 or 1; got {value} at sample {b}, spatial position {coords} of "
            f"{spatial} (a 0/255 mask? compare with > 0; soft weights are not a mask)"
        )
    m = _INPUT_ERROR.search(message)
    if m is not None:
        value, b, c, flat = m[1], int(m[2]), int(m[3]), int(m[4])
        coords = _unravel(flat, spatial)
        return (
            f"fastdice: with activation='none' the input must hold probabilities in [0, 1]; got {value} at "
            f"input[{_index(b, c, *coords)}] (sample {b}, class {c}, spatial position {coords} of {spatial}). "
            "Logits? pass activation='sigmoid' (binary / multilabel) or 'softmax' (multiclass)"
        )
    m = _DENSE_ERROR.search(message)
    if m is not None:
        value, b, c, flat = m[1], int(m[2]), int(m[3]), int(m[4])
        coords = _unravel(flat, spatial)
        index = _index(b, c, *coords) if target.dim() == input.dim() else _index(b, *coords)
        text = (
            f"fastdice: dense target values must lie in [0, 1]; got {value} at target[{index}] (sample {b}, "
            f"class {c}, spatial position {coords} of {spatial})"
        )
        try:
            integral = float(value) == int(float(value)) and float(value) > 1
        except (ValueError, OverflowError):
            integral = False
        if num_classes == 1 and integral:
            text += (
                ". The input has a single channel (shape "
                f"{tuple(input.shape)}), so the target is read as a binary mask; class indices 0..K-1 need a "
                "model with K output channels (input (B, K, *spatial), activation='softmax') and the labels as "
                "an integer tensor (B, *spatial); for a binary task pass a 0/1 mask with activation='sigmoid'"
            )
        else:
            text += " (a 0/255 mask? divide by 255; class indices? pass an integer label map of shape (B, *spatial))"
        return text
    return None


#: The options of fastdice::dice_loss_from_stats after (stats, weight, ce_weight), in the
#: schema's order (csrc/ops/dice_loss_from_stats.cpp), with their defaults and the Python
#: type (numbers are converted to it; strings and bools pass as they are, for the op to
#: check): the one list of them on the Python side. Callers name them by
#: keyword (dice_loss_from_stats); the fake kernel reads them back by name.
EPILOGUE_OPTIONS = (
    ("pooling", "global", str),  # 'global' | 'batch' | 'sample'
    ("include_background", True, bool),
    ("form", "plain", str),  # 'plain' | 'squared' | 'soft_label': the denominator / intersection
    ("jaccard", False, bool),
    ("smooth_nr", 1.0, float),
    ("smooth_dr", 1.0, float),
    ("log_loss", False, bool),
    ("log_eps", 1e-7, float),
    ("reduction", "mean", str),  # 'mean' | 'sum' | 'none'
    ("lambda_dice", 1.0, float),
    ("lambda_ce", 0.0, float),
    ("ce_family", "none", str),  # 'none' | 'cross_entropy' | 'binary_cross_entropy'
    ("ce_label_map", True, bool),
    ("ce_positions", 0, int),  # B * spatial size, the denominator for dense targets
    ("label_smoothing", 0.0, float),
)
EPILOGUE_OPTION_NAMES = tuple(name for name, _, _ in EPILOGUE_OPTIONS)


def _epilogue_options(options: tuple, named: dict) -> dict:
    """The epilogue's options by name, from the op's positional arguments after ce_weight."""
    values = dict(zip(EPILOGUE_OPTION_NAMES, options))
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


def dice_loss_from_stats(stats, weight=None, ce_weight=None, **options):
    """The loss ``lambda_dice * Dice + lambda_ce * CE`` of statistics ``[B, C, NUM_STATS]``
    in one op (see csrc/ops/dice_loss_from_stats.cpp); differentiable with respect to stats
    (the weights are constants).

    The options are keyword-only, named and defaulted as ``EPILOGUE_OPTIONS`` says
    (``DiceOptions.epilogue_options()`` gives the Dice term's from a loss's options);
    ce_family follows the normalization of torch's CrossEntropyLoss / BCEWithLogitsLoss
    (see fastdice.combined.pixel_loss_from_stats). This is the one call of the op.
    """
    return DICE_LOSS_FROM_STATS(stats, weight, ce_weight, *epilogue_args(**options))


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
