"""Drop-in replacements for MONAI 1.6's ``monai.losses.DiceLoss``,
``GeneralizedDiceLoss``, ``TverskyLoss``, ``DiceCELoss``, ``DiceFocalLoss``
and ``GeneralizedDiceFocalLoss``, computed by the fused
``fastdice::dice_stats`` op.

Same constructor signatures, defaults, attributes (``class_weight`` buffer
included), warnings, exception types and numbers (values and input gradients)
as MONAI 1.6.1; MONAI itself does not need to be installed. Every N-sized step
(activation, one-hot, products, sums over space) is one pass of the op;
everything after it is O(B*C) arithmetic that mirrors MONAI's formulas line by
line on the pooled statistics.

How MONAI's pipeline maps onto the op:

* ``sigmoid`` / ``softmax`` are fused in the kernel (softmax over all channels,
  before the background channel is dropped, as in MONAI).
* ``to_onehot_y=True`` passes the ``(B, 1, *spatial)`` label map to the op as
  is; no one-hot tensor is ever built. A floating-point or bool label map is
  converted to int64 first (``.long()``, truncation, as MONAI's ``one_hot``).
* ``include_background=False`` computes statistics on all channels, then drops
  class 0 from them.
* ``ignore_index`` with a label map (``to_onehot_y=True``, C > 1) is the op's
  own ``ignore_index``: those positions leave every statistic and get zero
  gradient, exactly what MONAI's mask ``target != ignore_index`` does. An
  in-range ignored class keeps an all-zero channel that still counts in the
  mean, as in MONAI.

Fallbacks (documented, exact, but not fused):

* ``other_act``: the callable is applied in PyTorch, then the op runs with
  activation ``"none"``.
* ``ignore_index`` with a dense target (one-hot / soft targets with C > 1, or
  any target with C == 1): MONAI multiplies the activated input and the target
  by a mask built from the target (``1 - target[:, ignore_index]`` for an
  in-range index, ``target.sum(1) > 0`` for a sentinel, ``target !=
  ignore_index`` for a single channel), which can be fractional for soft
  targets. This is emulated in PyTorch: activation, mask and the two products
  are input-sized temporaries, then the op runs with activation ``"none"``.
* The focal term of ``DiceFocalLoss`` / ``GeneralizedDiceFocalLoss`` with
  ``reduction='none'``, and in eager mode for inputs of at most
  ``EXACT_FOCAL_MAX_NUMEL`` (4096) elements: MONAI's FocalLoss op for op in
  PyTorch, the same float32 bits as MONAI (a fused sum cannot reproduce
  MONAI's float32 rounding, which MONAI's own tests compare to rtol=1e-7).

Differences from MONAI (all raise, none silently changes a number):

* Dense targets must lie in [0, 1] (``ValueError`` from the op); MONAI accepts
  any values.
* A label (``to_onehot_y=True``) outside ``[0, C)`` that is not
  ``ignore_index`` raises ``ValueError``; MONAI's ``one_hot`` raises
  ``RuntimeError`` (scatter index out of bounds) on CPU and a device-side
  assert on CUDA.
* A floating-point label map with ``ignore_index`` must be integer-valued
  (``ValueError``); MONAI compares the raw float against ``ignore_index`` but
  one-hot-encodes the truncated value, which the op cannot express.
* The result is float32 (float64 for float64 input) whatever the input
  precision: float16/bfloat16 inputs are accumulated in float32 (MONAI
  computes and returns them in the input's precision). A float32 input with a
  float64 target gives a float32 result (MONAI promotes to float64).
* Sums are accumulated in the input's precision (float32 or float64) even for
  a lower-precision dense target; MONAI sums a float32 target in float32 even
  for a float64 input (differences of float32 rounding size, soft targets only).

TorchScript: TorchScript cannot compile the fused path's Python (module
objects passed to helpers, ``**`` options, the weight-check cache, frame-walking
warnings, ...). ``torch.jit.script`` of one of these classes therefore gives
the scripted ``monai.losses.<Name>`` (MONAI's own, unfused module) built with
the same constructor arguments and the same buffers (``class_weight``, ...):
the same semantics, MONAI's speed. This needs monai installed (``RuntimeError``
otherwise); the fused module itself is for eager mode, ``torch.compile`` and
``torch.export``. See ``__prepare_scriptable__``. ``MaskedDiceLoss`` is not
scriptable (``RuntimeError``): neither is MONAI's.
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch.nn.modules.loss import _Loss

from .. import _api
from .. import functional as fd
from ..options import LABEL_DTYPES, W_TYPES

__all__ = [
    "DiceLoss", "MaskedDiceLoss", "GeneralizedDiceLoss", "TverskyLoss", "DiceCELoss", "DiceFocalLoss",
    "GeneralizedDiceFocalLoss",
]

_REDUCTIONS = ("none", "mean", "sum")


# --------------------------------------------------------------------------
# Constructor-argument validation (MONAI's messages and exception types)
# --------------------------------------------------------------------------


def _lookup_reduction(reduction) -> str:
    """MONAI's ``LossReduction(reduction).value``: exact match, ValueError otherwise."""
    value = reduction.value if isinstance(reduction, enum.Enum) else reduction
    if isinstance(value, str) and value in _REDUCTIONS:
        return _REDUCTIONS[_REDUCTIONS.index(value)]  # a plain str, also for a str-Enum member
    raise ValueError(f"{reduction!r} is not a valid LossReduction")


def _lookup_w_type(w_type) -> str:
    """MONAI's ``look_up_option(w_type, Weight)``: surrounding blanks stripped, ValueError otherwise."""
    value = w_type.value if isinstance(w_type, enum.Enum) else w_type
    if isinstance(value, str) and value.strip() in W_TYPES:
        return value.strip()
    raise ValueError(f"Unsupported option '{w_type}', Available options are {set(W_TYPES)}.")


# --------------------------------------------------------------------------
# TorchScript: MONAI's own module, built with the same constructor arguments
# --------------------------------------------------------------------------


def _all_subclasses(cls: type) -> list[type]:
    found, stack = [], [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


def _monai_class(name: str, module_name: str) -> type:
    """MONAI's class ``name``, defined in ``module_name`` (``monai.losses.dice``, ...).

    Looked up in its defining module, and, where that name no longer holds
    MONAI's class (something, e.g. a test shim, rebound ``monai.losses.dice.DiceLoss``
    to ours), among the subclasses of torch's ``_Loss`` by module and name.
    RuntimeError when monai is not installed.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RuntimeError(
            f"TorchScript needs monai installed: torch.jit.script of fastdice.compat.monai.{name} gives "
            f"{module_name}.{name} (MONAI's own module) built with the same arguments, because TorchScript "
            f"cannot compile the fused path's Python ({error}). Install monai to script it; the fused module "
            "itself runs in eager mode, under torch.compile and with torch.export."
        ) from error

    def is_monai(candidate) -> bool:
        return (
            isinstance(candidate, type) and candidate.__module__ == module_name and candidate.__qualname__ == name
        )

    candidate = vars(module).get(name)
    if is_monai(candidate):
        return candidate
    found = [c for c in _all_subclasses(_Loss) if is_monai(c)]
    if not found:
        raise RuntimeError(f"fastdice.compat.monai.{name}: {module_name} defines no class {name} to script")
    return found[-1]


_SCRIPT_FIXED: dict[type, type] = {}


def _script_fixed_generalized_dice(base: type) -> type:
    """MONAI's GeneralizedDiceLoss (``base``) with a ``w_func`` that TorchScript compiles as
    written. MONAI's compares ``self.w_type`` with ``str(Weight.SIMPLE)`` / ``str(Weight.SQUARE)``,
    which TorchScript (torch 2.14) compiles to the constants "Enum<Weight.SIMPLE>" /
    "Enum<Weight.SQUARE>": the scripted MONAI module always takes the uniform weights (its own
    test_script passes only because its input gives equal weights). Same name, same
    attributes; only the comparison is with the plain values."""
    fixed = _SCRIPT_FIXED.get(base)
    if fixed is None:

        class GeneralizedDiceLoss(base):
            def w_func(self, grnd: torch.Tensor) -> torch.Tensor:
                if self.w_type == "simple":
                    return torch.reciprocal(grnd)
                if self.w_type == "square":
                    return torch.reciprocal(grnd * grnd)
                return torch.ones_like(grnd)

        GeneralizedDiceLoss.__qualname__ = "_ScriptFixedGeneralizedDiceLoss"  # TorchScript's type name
        fixed = _SCRIPT_FIXED[base] = GeneralizedDiceLoss
    return fixed


_PLAIN = (bool, int, float, str, enum.Enum, type(None))


def _changed_attributes(module: torch.nn.Module, fresh: torch.nn.Module) -> list[str]:
    """The plain attributes (bool, int, float, str, enum, None) of ``module`` and
    its submodules that differ from those of ``fresh``, an instance built with
    the same constructor arguments: attributes set after construction."""
    fresh_modules = dict(fresh.named_modules())
    changed = []
    for path, sub in module.named_modules():
        other = fresh_modules.get(path)
        for key, value in vars(sub).items():
            if key.startswith("_") or key == "training" or not isinstance(value, _PLAIN):
                continue
            ref = vars(other).get(key, ...) if other is not None else ...
            same = type(ref) is type(value) and (ref == value or (value != value and ref != ref))
            if not same:
                changed.append(f"{path}.{key}" if path else key)
    return changed


def _prepare_scriptable(module: torch.nn.Module, cls: type, monai_module: str) -> torch.nn.Module:
    """``monai_module``'s class of ``cls``'s name, built with ``module``'s
    constructor arguments, holding ``module``'s buffers and training flag (a
    GeneralizedDiceLoss in it with the w_func TorchScript compiles right, see
    _script_fixed_generalized_dice)."""
    name = cls.__name__
    if type(module) is not cls:
        raise RuntimeError(
            f"torch.jit.script: {type(module).__qualname__} subclasses fastdice.compat.monai.{name}, whose "
            f"scripted form is monai's {name} without the subclass's changes; give the subclass its own "
            "__prepare_scriptable__"
        )
    arguments = module.__dict__.get("_fd_init_arguments")
    if arguments is None:
        raise RuntimeError(
            f"torch.jit.script: this fastdice.compat.monai.{name} holds no constructor arguments (pickled by "
            "an older fastdice?); construct it again to script it"
        )
    changed = _changed_attributes(module, cls(**arguments))
    if changed:
        raise RuntimeError(
            f"torch.jit.script of fastdice.compat.monai.{name} builds monai's {name} from the constructor "
            f"arguments, but these attributes were changed after construction: {', '.join(changed)}; pass "
            "the values to the constructor instead"
        )
    scripted = _monai_class(name, monai_module)(**arguments)
    monai_gdl = _monai_class("GeneralizedDiceLoss", "monai.losses.dice")
    for sub in scripted.modules():
        if type(sub) is monai_gdl:
            sub.__class__ = _script_fixed_generalized_dice(monai_gdl)
    targets = dict(scripted.named_modules())
    for path, sub in module.named_modules():
        for key, buffer in sub._buffers.items():
            target = targets.get(path)
            if target is None or key not in target._buffers:
                raise RuntimeError(f"monai's {name} has no buffer {path + '.' if path else ''}{key} to take ours")
            target._buffers[key] = buffer
    return scripted.train(module.training)


def _scripts_as_monai(monai_module: str):
    """Class decorator: the constructor records its arguments (in the instance's
    ``__dict__``, so they survive pickling and deepcopy), and
    ``__prepare_scriptable__`` gives MONAI's class of the same name, defined in
    ``monai_module``, built with them (see _prepare_scriptable)."""

    def decorate(cls):
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            # After the constructor: a decorated subclass's record, made last, wins.
            arguments = dict(signature.bind(self, *args, **kwargs).arguments)
            arguments.pop(next(iter(signature.parameters)))
            self._fd_init_arguments = arguments

        def __prepare_scriptable__(self):
            return _prepare_scriptable(self, cls, monai_module)

        __prepare_scriptable__.__doc__ = (
            f"What ``torch.jit.script`` compiles in place of this module: ``{monai_module}.{cls.__name__}``\n"
            "(MONAI's own, unfused module) built with this module's constructor arguments, holding its\n"
            "buffers (``class_weight``, ...) and its training flag. TorchScript cannot compile the fused\n"
            "path's Python; MONAI's module has the same semantics and is scriptable (a GeneralizedDiceLoss\n"
            "in it gets a ``w_func`` that compares ``w_type`` in a form TorchScript compiles right: MONAI's\n"
            "scripted one always takes uniform weights). Raises RuntimeError when monai is not installed\n"
            "(the fused module is for eager mode, torch.compile and torch.export), for a subclass, and\n"
            "when a plain attribute was changed after construction. As for any ``__prepare_scriptable__``,\n"
            "``torch.jit.script`` of a model that holds this loss also replaces it in that model's eager\n"
            "submodules; script a ``copy.deepcopy`` of the model to keep it.\n"
        )
        __prepare_scriptable__.__qualname__ = f"{cls.__qualname__}.__prepare_scriptable__"
        cls.__init__ = __init__
        cls.__prepare_scriptable__ = __prepare_scriptable__
        return cls

    return decorate


class _MonaiLoss(_Loss):
    """Base of the MONAI Dice-family losses: the arguments they share, kept as
    MONAI's attributes after MONAI's checks, and MONAI's preprocessing before
    the fused statistics (``_stats``). A subclass keeps its own arguments and
    its epilogue (``_loss``, from the op's unpooled statistics)."""

    #: The word of MONAI's shape-mismatch message ("differing" in GeneralizedDiceLoss and TverskyLoss).
    shape_wording = "different"

    def __init__(
        self, *, include_background, to_onehot_y, sigmoid, softmax, other_act, reduction, smooth_nr, smooth_dr, batch,
        soft_label, ignore_index=...,
    ) -> None:
        super().__init__(reduction=_lookup_reduction(reduction))
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError("Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None].")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = batch
        self.soft_label = soft_label
        if ignore_index is not ...:  # GeneralizedDiceLoss has no ignore_index
            self.ignore_index = ignore_index

    def _full_stats(self) -> bool:
        """Whether the statistics beyond sum p*t, sum p, sum t are needed."""
        return self.soft_label

    def _stats(self, input, target, to_onehot_y=None, pixel_loss="none", focal_gamma=0.0):
        """MONAI's validation and preprocessing, then the fused statistics: see
        _monai_stats. to_onehot_y overrides the attribute (DiceFocalLoss
        one-hot-encodes for its Dice term, which MONAI builds with to_onehot_y=False)."""
        return _monai_stats(
            self, input, target, self.to_onehot_y if to_onehot_y is None else to_onehot_y, pixel_loss, focal_gamma
        )

    def _pooled(self, stats: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """The op's [B, C, 11] statistics pooled as MONAI reduces its sums: ``(B, C', 11)``
        per sample, ``(C', 11)`` with ``batch=True``, and ``(11,)`` for an input without
        spatial axes and ``batch=False`` (MONAI's ``torch.sum(x, dim=[])`` reduces every
        axis). ``C'`` is C, or C - 1 when the background is dropped (C > 1)."""
        drop_background = not self.include_background and input.shape[1] > 1
        return _pool_monai(stats, drop_background, self.batch, input.dim())


# --------------------------------------------------------------------------
# MONAI's preprocessing + the fused statistics (reusable by DiceCE / DiceFocal)
# --------------------------------------------------------------------------


def _ignore_mask(original_target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``monai.metrics.utils.create_ignore_mask`` (B, 1, *spatial): 1 = valid, 0 = ignored."""
    if original_target.shape[1] == 1:
        return (original_target != ignore_index).float()
    num_classes = original_target.shape[1]
    if 0 <= ignore_index < num_classes:
        return 1.0 - original_target[:, ignore_index : ignore_index + 1]
    return (original_target.sum(dim=1, keepdim=True) > 0).float()


def _check_tensors(input, target) -> None:
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"input and target must be tensors, got {type(input).__name__} and {type(target).__name__}"
        )


def _activation(module, n_pred_ch: int, flags=None) -> str:
    """The op's activation of MONAI's sigmoid / softmax flags (softmax over one channel: warned, none);
    ``flags``: (sigmoid, softmax) instead of the module's (MaskedDiceLoss's pre-activation)."""
    sigmoid, softmax = flags if flags is not None else (module.sigmoid, module.softmax)
    activation = "sigmoid" if sigmoid else "none"
    if softmax:
        if n_pred_ch == 1:
            _api.warn("single channel prediction, `softmax=True` ignored.")
        else:
            activation = "softmax"
    return activation


def _label_map_target(target: torch.Tensor, to_onehot_y: bool, n_pred_ch: int):
    """``(target, use_label_map)``: with to_onehot_y (C > 1) the (B, 1, ...) label map,
    shaped as MONAI's one_hot takes it; else the target as it is."""
    if not to_onehot_y:
        return target, False
    if n_pred_ch == 1:
        _api.warn("single channel prediction, `to_onehot_y=True` ignored.")
        return target, False
    # monai.networks.utils.one_hot: trailing singleton axes up to 2 dims, channel of size 1.
    if target.dim() < 2:
        target = target.reshape(list(target.shape) + [1] * (2 - target.dim()))
    if target.shape[1] != 1:
        raise AssertionError("labels should have a channel with length equal to one.")
    return target, True


def _check_shapes(module, input, target, use_label_map: bool, drop_background: bool) -> None:
    """The shape check MONAI does on the (one-hot, background-free) tensors."""
    target_shape = list(target.shape)
    if use_label_map:
        target_shape[1] = input.shape[1]
    input_shape = list(input.shape)
    if drop_background:
        input_shape[1] -= 1
        if len(target_shape) > 1:
            target_shape[1] = max(target_shape[1] - 1, 0)
    if target_shape != input_shape:
        raise AssertionError(
            f"ground truth has {module.shape_wording} shape ({torch.Size(target_shape)}) "
            f"from input ({torch.Size(input_shape)})"
        )


def _monai_stats(
    module, input, target, to_onehot_y: bool, pixel_loss: str = "none", focal_gamma: float = 0.0,
    activation_flags=None, loss_mask=None,
):
    """MONAI's validation and preprocessing of ``module``'s settings, then the fused statistics.

    Returns ``(stats, pixel)``: ``stats`` the op's unpooled statistics ``[B, C, 11]``
    (last axis: ``fastdice.STAT_NAMES``) of ``activation(input)`` and the (one-hot,
    ignore-masked) target over all C classes (``module._pooled`` drops the background and
    pools them as MONAI does); ``pixel`` the same tensor when ``pixel_loss`` (DiceCE /
    DiceFocal) rode along in the same pass (its activation family matches the Dice
    activation and no PyTorch fallback ran), else None (the caller then makes a second,
    separate fused pass for it). Issues MONAI's warnings (single channel with softmax /
    to_onehot_y / include_background=False) and raises its shape errors (``AssertionError``).
    ``activation_flags`` overrides the module's (sigmoid, softmax); ``loss_mask`` (B, 1, *spatial),
    bool / uint8, is the op's loss mask (MaskedDiceLoss; never with other_act or ignore_index).
    """
    _check_tensors(input, target)
    n_pred_ch = input.shape[1]  # IndexError for an input without a channel axis, as in MONAI
    activation = _activation(module, n_pred_ch, activation_flags)
    target, use_label_map = _label_map_target(target, to_onehot_y, n_pred_ch)
    drop_background = not module.include_background
    if drop_background and n_pred_ch == 1:
        _api.warn("single channel prediction, `include_background=False` ignored.")
        drop_background = False
    _check_shapes(module, input, target, use_label_map, drop_background)

    ignore_index = getattr(module, "ignore_index", None)
    op_ignore = None
    mask = None
    if use_label_map:
        if target.dtype not in LABEL_DTYPES:
            if ignore_index is not None and target.is_floating_point() and bool((target != target.trunc()).any()):
                raise ValueError(
                    "fastdice.compat.monai: with to_onehot_y=True and ignore_index, a floating-point target "
                    "must hold integer class labels (MONAI truncates non-integer labels but masks by the raw "
                    "value); round the labels or pass an integer label map"
                )
            target = target.long()
        op_ignore = ignore_index
    elif ignore_index is not None:
        mask = _ignore_mask(target, ignore_index)

    if module.other_act is not None or mask is not None:
        # Fallback: MONAI's activation and masking in PyTorch, the sums fused.
        if activation == "sigmoid":
            input = torch.sigmoid(input)
        elif activation == "softmax":
            input = torch.softmax(input, 1)
        activation = "none"
        if module.other_act is not None:
            input = module.other_act(input)
        if mask is not None:
            input = input * mask
            target = target * mask

    fused_pixel = pixel_loss != "none" and (
        activation == "softmax" if pixel_loss == "cross_entropy" else activation != "none"
    )
    if not fused_pixel:
        pixel_loss, focal_gamma = "none", 0.0
    if loss_mask is not None:
        assert module.other_act is None and ignore_index is None, "the op's mask replaces no PyTorch fallback"
    stats = fd.dice_stats(
        input, target, fd.peer_activation(activation), module._full_stats(), op_ignore, pixel_loss, focal_gamma,
        loss_mask,
    )
    return stats, (stats if fused_pixel else None)


def _pool_monai(stats: torch.Tensor, drop_background: bool, batch: bool, input_dim: int) -> torch.Tensor:
    """The op's [B, C, 11] statistics pooled as MONAI reduces its sums (see _MonaiLoss._pooled)."""
    if drop_background:
        stats = stats[:, 1:]
    if batch:
        return stats.sum(0)
    if input_dim == 2:
        return stats.sum((0, 1))
    return stats


# --------------------------------------------------------------------------
# Epilogues: MONAI's formulas on the pooled statistics (O(B*C))
# --------------------------------------------------------------------------


def _form(squared: bool, soft_label: bool) -> str:
    """The fastdice form of ``monai.losses.utils.compute_tp_fp_fn``'s sums: ord 2
    (squared_pred) sums p^2 and t^2; soft_label takes (|p|_1 + |t|_1 - |p - t|_1) / 2
    for tp (see fastdice.functional.tp_fp_fn)."""
    return "squared" if squared else "soft_label" if soft_label else "plain"


def _has_negative(module, name: str, weight: torch.Tensor) -> bool:
    """Whether weight has a negative entry, as MONAI checks on every call, but
    read from the device once per weight tensor and version: on CUDA every
    read is a host sync, which would stall the training loop each step."""
    key = (weight.data_ptr(), str(weight.device), weight._version, tuple(weight.shape), weight.dtype)
    checked = module.__dict__.setdefault("_fd_nonnegative_weights", {})
    if checked.get(name) == key:
        return False
    if bool((weight < 0).any()):
        return True
    checked[name] = key
    return False


def _checked_class_weight(class_weight: torch.Tensor, num_of_classes: int, module) -> torch.Tensor:
    """MONAI DiceLoss' class-weight checks (num_of_classes != 1). Like MONAI, a
    0-dim weight is expanded to one entry per class on first use and the
    caller stores it back (so a later call with another class count raises)."""
    if class_weight.ndim == 0:
        class_weight = torch.as_tensor([class_weight] * num_of_classes)
    elif class_weight.shape[0] != num_of_classes:
        raise ValueError(
            "The length of the `weight` sequence should be the same as the number of classes. "
            "If `include_background=False`, the weight should not include the background category class 0."
        )
    if _has_negative(module, "class_weight", class_weight):
        raise ValueError("the value/values of the `weight` should be no less than 0.")
    return class_weight


def _apply_class_weight(f: torch.Tensor, class_weight: torch.Tensor | None, num_of_classes: int, module):
    """MONAI DiceLoss' class weighting. Returns ``(f, class_weight)`` (see _checked_class_weight)."""
    if class_weight is not None and num_of_classes != 1:
        class_weight = _checked_class_weight(class_weight, num_of_classes, module)
        f = f * class_weight.to(f)
    return f, class_weight


def _reduce_broadcast(f: torch.Tensor, reduction: str, input_dim: int) -> torch.Tensor:
    """MONAI Dice / GDL reduction; "none" keeps a broadcastable shape
    ``f.shape[:2] + (1,) * (input_dim - 2)``."""
    if reduction == "mean":
        return torch.mean(f)
    if reduction == "sum":
        return torch.sum(f)
    if reduction == "none":
        return f.view(list(f.shape[0:2]) + [1] * (input_dim - 2))
    raise ValueError(f'Unsupported reduction: {reduction}, available options are ["mean", "sum", "none"].')


def _num_classes_after_background(input: torch.Tensor, include_background: bool) -> int:
    c = input.shape[1]
    return c - 1 if (not include_background and c > 1) else c


def _generalized_dice_epilogue(
    stats: torch.Tensor, *, w_type: str, soft_label: bool, smooth_nr: float, smooth_dr: float
) -> torch.Tensor:
    """MONAI GeneralizedDiceLoss' unreduced loss from pooled statistics: (B, 1), or (1,)
    pooled over the batch. MONAI's denominator 2 (tp + fp/2 + fn/2) and its weights
    from the float32 target volumes (``ground_o.float()``); the weights are
    differentiable when the target requires grad (MONAI's own in-place
    ``w[infs] = 0`` makes autograd fail there)."""
    tp, fp, fn = fd.tp_fp_fn(stats, _form(False, soft_label))
    if tp.dim() == 0:  # no spatial axes without batch: MONAI's max over dim 1 of a 0-dim tensor raises
        tp.max(dim=1)  # torch's IndexError, MONAI's
    denominator = 2 * (tp + fp * 0.5 + fn * 0.5)
    w = fd.generalized_dice_weights(stats[..., fd.SUM_T].float(), w_type)
    return 1.0 - fd.generalized_dice_score(tp, denominator, w, smooth_nr, smooth_dr, keepdim=True)


def _tversky_epilogue(
    stats: torch.Tensor, *, alpha: float, beta: float, soft_label: bool, smooth_nr: float, smooth_dr: float
) -> torch.Tensor:
    """MONAI TverskyLoss' unreduced loss (shape ``stats.shape[:-1]``)."""
    tp, fp, fn = fd.tp_fp_fn(stats, _form(False, soft_label))
    return 1.0 - fd.tversky_score(tp, fp, fn, alpha, beta, smooth_nr, smooth_dr)


# --------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------


@_scripts_as_monai("monai.losses.dice")
class DiceLoss(_MonaiLoss):
    """``monai.losses.DiceLoss`` (MONAI 1.6) on the fused fastdice op.

    Arguments, defaults, attributes, warnings and errors as MONAI's; see the
    module docstring for the fused/fallback paths and the few differences.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        soft_label: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid, softmax=softmax,
            other_act=other_act, reduction=reduction, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
            soft_label=soft_label, ignore_index=ignore_index,
        )
        self.squared_pred = squared_pred
        self.jaccard = jaccard
        weight = torch.as_tensor(weight) if weight is not None else None
        self.register_buffer("class_weight", weight)
        self.class_weight: None | torch.Tensor

    def _full_stats(self) -> bool:
        return self.squared_pred or self.soft_label

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        stats, _ = self._stats(input, target)
        return self._loss(stats, input)

    def _loss(self, stats: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """The loss from the op's unpooled statistics, by the epilogue op
        (fastdice::dice_loss_from_stats), in one call with the class weight and
        the reduction where MONAI's weighting and reduction map onto it. Where
        they do not (no spatial axes without batch: MONAI then sums over samples
        and classes and weights the one ratio per class; a class weight that
        requires grad; a reduction the op does not know), the op gives the
        unweighted, unreduced losses and MONAI's weighting and reduction follow
        in tensor ops."""
        drop_background = not self.include_background and input.shape[1] > 1
        num_classes = _num_classes_after_background(input, self.include_background)
        weight = None
        if self.class_weight is not None and num_classes != 1:
            class_weight = _checked_class_weight(self.class_weight, num_classes, self)
            if class_weight is not self.class_weight:
                self.class_weight = class_weight
            weight = class_weight.to(stats)
            if drop_background:  # the op's weight has one entry per input class
                weight = torch.cat((weight.new_zeros(1), weight))
        # MONAI's Jaccard, 1 - (2 tp + nr) / (2 (tp + fp + fn) + dr), is the op's
        # (tp + nr/2) / (sum p + sum t - tp + dr/2).
        half = 0.5 if self.jaccard else 1.0
        options = dict(
            pooling="batch" if self.batch else "sample", include_background=self.include_background,
            form=_form(self.squared_pred, self.soft_label), jaccard=self.jaccard, smooth_nr=self.smooth_nr * half,
            smooth_dr=self.smooth_dr * half, reduction=self.reduction,
        )
        pooled_all = input.dim() == 2 and not self.batch
        if not pooled_all and not (weight is not None and weight.requires_grad) and self.reduction in ("mean", "sum", "none"):
            f = fd.dice_loss_from_stats(stats, weight, None, **options)
            return f if self.reduction != "none" else _reduce_broadcast(f, "none", input.dim())
        if pooled_all:  # one ratio of the sums over samples and classes
            stats = self._pooled(stats, input).reshape(1, 1, -1)
            options.update(pooling="global", include_background=True)
        f = fd.dice_loss_from_stats(stats, None, None, **dict(options, reduction="none"))
        f, class_weight = _apply_class_weight(f, self.class_weight, num_classes, self)
        if class_weight is not self.class_weight:
            self.class_weight = class_weight
        return _reduce_broadcast(f, self.reduction, input.dim())


class MaskedDiceLoss(DiceLoss):
    """``monai.losses.MaskedDiceLoss`` (MONAI 1.6): the activation, then input and
    target multiplied by ``mask`` (B1H[WD] or 11H[WD]), then :class:`DiceLoss`.

    Fused (the op reads ``mask`` in place, no masked copies): a bool mask of
    the input's batch size, without ``other_act``, and without
    ``to_onehot_y`` unless the background is dropped (MONAI's masked label
    map turns masked positions into class 0, which only the background sees).
    Otherwise MONAI's steps in PyTorch (a float or uint8 mask scales input and
    target by its values), the sums fused.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        soft_label: bool = False,
    ) -> None:
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
        if sigmoid and softmax:
            raise ValueError("Incompatible values: sigmoid=True and softmax=True.")
        if other_act is not None and (sigmoid or softmax):
            raise ValueError("Incompatible values: other_act is not None and sigmoid=True or softmax=True.")
        super().__init__(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=False, softmax=False,
            other_act=None, squared_pred=squared_pred, jaccard=jaccard, reduction=reduction, smooth_nr=smooth_nr,
            smooth_dr=smooth_dr, batch=batch, weight=weight, soft_label=soft_label,
        )
        self.pre_sigmoid = sigmoid
        self.pre_softmax = softmax
        self.pre_other_act = other_act

    def __prepare_scriptable__(self):
        """Not scriptable: raises RuntimeError. The other classes script as MONAI's own
        class (see DiceLoss.__prepare_scriptable__), but MONAI's MaskedDiceLoss is not
        scriptable either (its MaskedLoss holds a bound method)."""
        raise RuntimeError(
            "torch.jit.script: fastdice.compat.monai.MaskedDiceLoss is not scriptable, nor is "
            "monai.losses.MaskedDiceLoss (its MaskedLoss holds a bound method); use it in eager mode, "
            "under torch.compile or with torch.export"
        )

    def _check_mask(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """MONAI's MaskedLoss checks: warnings for dims and spatial size, errors for batch and channels."""
        if input.dim() != mask.dim():
            _api.warn(f"Dim of input ({input.shape}) is different from mask ({mask.shape}).")
        if input.shape[0] != mask.shape[0] and mask.shape[0] != 1:
            raise ValueError(f"Batch size of mask ({mask.shape}) must be one or equal to input ({input.shape}).")
        if target.dim() > 1:
            if mask.shape[1] != 1:
                raise ValueError(f"Mask ({mask.shape}) must have only one channel.")
            if input.shape[2:] != mask.shape[2:]:
                _api.warn(f"Spatial size of input ({input.shape}) is different from mask ({mask.shape}).")

    def _fusable(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> bool:
        n_pred_ch = input.shape[1] if input.dim() > 1 else 1
        # bool only: MONAI multiplies by the mask, so a uint8 0/255 mask scales input and target.
        return (
            self.pre_other_act is None
            and mask.dtype == torch.bool
            and mask.dim() == input.dim()
            and input.dim() > 2
            and mask.shape[0] == input.shape[0]
            and mask.shape[1] == 1
            and mask.shape[2:] == input.shape[2:]
            and (not self.to_onehot_y or n_pred_ch == 1 or not self.include_background)
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: B1H[WD] or 11H[WD] (None: MONAI's warning, then the unmasked loss)."""
        _check_tensors(input, target)
        if mask is not None:
            self._check_mask(input, target, mask)
            if self._fusable(input, target, mask):
                stats, _ = self._stats_with(input, target, mask)
                return self._loss(stats, input)
        # MONAI's steps: the activation, the mask multiplied in, then DiceLoss (its own flags are off).
        if self.pre_sigmoid:
            input = torch.sigmoid(input)
        if self.pre_softmax:
            if input.shape[1] == 1:
                _api.warn("single channel prediction, `softmax=True` ignored.")
            else:
                input = torch.softmax(input, 1)
        if self.pre_other_act is not None:
            input = self.pre_other_act(input)
        if mask is None:
            _api.warn("No mask value specified for the MaskedLoss.")
            return super().forward(input, target)
        return super().forward(input * mask, target * mask)

    def _stats_with(self, input, target, mask):
        return _monai_stats(
            self, input, target, self.to_onehot_y, activation_flags=(self.pre_sigmoid, self.pre_softmax),
            loss_mask=mask,
        )


@_scripts_as_monai("monai.losses.dice")
class GeneralizedDiceLoss(_MonaiLoss):
    """``monai.losses.GeneralizedDiceLoss`` (MONAI 1.6) on the fused fastdice op."""

    shape_wording = "differing"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        w_type: str = "square",
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
    ) -> None:
        super().__init__(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid, softmax=softmax,
            other_act=other_act, reduction=reduction, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
            soft_label=soft_label,
        )
        self.w_type = _lookup_w_type(w_type)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        stats, _ = self._stats(input, target)
        return self._loss(stats, input)

    def _loss(self, stats: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """The loss from the op's unpooled statistics."""
        f = _generalized_dice_epilogue(
            self._pooled(stats, input),
            w_type=self.w_type,
            soft_label=self.soft_label,
            smooth_nr=self.smooth_nr,
            smooth_dr=self.smooth_dr,
        )
        return _reduce_broadcast(f, self.reduction, input.dim())


@_scripts_as_monai("monai.losses.tversky")
class TverskyLoss(_MonaiLoss):
    """``monai.losses.TverskyLoss`` (MONAI 1.6) on the fused fastdice op.

    As in MONAI, reduction "none" returns the per-(sample, class) losses of
    shape (B, C') (or (C',) with ``batch=True``), without trailing axes.
    """

    shape_wording = "differing"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid, softmax=softmax,
            other_act=other_act, reduction=reduction, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
            soft_label=soft_label, ignore_index=ignore_index,
        )
        self.alpha = alpha
        self.beta = beta

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        stats, _ = self._stats(input, target)
        stats = self._pooled(stats, input)
        score = _tversky_epilogue(
            stats,
            alpha=self.alpha,
            beta=self.beta,
            soft_label=self.soft_label,
            smooth_nr=self.smooth_nr,
            smooth_dr=self.smooth_dr,
        )
        if self.reduction == "sum":
            return torch.sum(score)
        if self.reduction == "none":
            return score
        if self.reduction == "mean":
            return torch.mean(score)
        raise ValueError(f'Unsupported reduction: {self.reduction}, available options are ["mean", "sum", "none"].')


# --------------------------------------------------------------------------
# Dice + cross-entropy / focal: the second term from the same fused pass
# --------------------------------------------------------------------------


def _check_combined_shapes(input: torch.Tensor, target: torch.Tensor) -> None:
    """The checks at the top of MONAI's DiceCELoss / DiceFocalLoss.forward."""
    if input.dim() != target.dim():
        raise ValueError(
            "the number of dimensions for input and target should be the same, "
            f"got shape {input.shape} (nb dims: {len(input.shape)}) and {target.shape} (nb dims: {len(target.shape)}). "
            "if target is not one-hot encoded, please provide a tensor with shape B1H[WD]."
        )
    if target.shape[1] != 1 and target.shape[1] != input.shape[1]:
        raise ValueError(
            "number of channels for target is neither 1 (without one-hot encoding) nor the same as input, "
            f"got shape {input.shape} and {target.shape}."
        )


def _lambda_not_negative(name: str, value: float) -> float:
    """MONAI's check of a term weight (only < 0 raises, with MONAI's message;
    fastdice.options.check_nonnegative is the native, stricter rule)."""
    if value < 0.0:
        raise ValueError(f"{name} should be no less than 0.0.")
    return value


def _as_label_map(target: torch.Tensor) -> torch.Tensor:
    return target if target.dtype in LABEL_DTYPES else target.long()


def _submodule(cls, arguments: dict, **overrides):
    """``cls`` as a MONAI combined loss builds its inner loss: every parameter of
    ``cls`` that the combined loss's constructor also has, with the value it
    holds there (``arguments``: the constructor's ``locals()``, taken where
    MONAI makes the call), then ``overrides``."""
    kwargs = {name: arguments[name] for name in inspect.signature(cls).parameters if name in arguments}
    kwargs.update(overrides)
    return cls(**kwargs)


@_scripts_as_monai("monai.losses.dice")
class DiceCELoss(_Loss):
    """``monai.losses.DiceCELoss`` (MONAI 1.6) with the cross-entropy fused.

    The Dice term is :class:`DiceLoss`. The cross-entropy (``C > 1``:
    ``nn.CrossEntropyLoss(weight, label_smoothing)`` on the logits, class
    indices for a ``(B, 1, ...)`` target, class probabilities for a one-hot
    target; ``C == 1``: ``BCEWithLogitsLoss(pos_weight=weight)``) is
    accumulated in the same kernel pass as the Dice statistics when
    ``softmax=True`` (``sigmoid=True`` for C == 1), and its gradient is added
    in the same backward pass. Other activations (none, sigmoid with C > 1,
    other_act) get the cross-entropy from a second fused pass over the logits
    (still no N-sized temporaries). ``C == 1`` with a ``weight``
    (``pos_weight``) uses torch's BCEWithLogitsLoss.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        value = reduction.value if isinstance(reduction, enum.Enum) else reduction
        if value not in ("mean", "sum"):
            raise ValueError(f"Unsupported option '{reduction}', Available options are {{'mean', 'sum'}}.")
        reduction = value
        dice_weight = weight[1:] if (weight is not None and not include_background) else weight
        self.dice = _submodule(DiceLoss, locals(), weight=dice_weight)
        # MONAI's submodules, kept for their attributes, state_dict keys and
        # argument checks; their forward is never called (the CE is fused).
        self.cross_entropy = torch.nn.CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=label_smoothing)
        self.binary_cross_entropy = torch.nn.BCEWithLogitsLoss(pos_weight=weight, reduction=reduction)
        self.lambda_dice = _lambda_not_negative("lambda_dice", lambda_dice)
        self.lambda_ce = _lambda_not_negative("lambda_ce", lambda_ce)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_combined_shapes(input, target)
        num_classes = input.shape[1]
        label_target = target.shape[1] == 1 and num_classes != 1
        family = "cross_entropy" if num_classes != 1 else "binary_cross_entropy"
        ce_weight = self.cross_entropy.weight if num_classes != 1 else self.binary_cross_entropy.pos_weight
        label_smoothing = self.cross_entropy.label_smoothing
        if num_classes != 1 and not 0.0 <= label_smoothing <= 1.0:
            raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        reduction = self.cross_entropy.reduction
        fusable = not (num_classes == 1 and ce_weight is not None)  # pos_weight: torch's BCE
        stats, raw = self.dice._stats(input, target, pixel_loss=family if fusable else "none")
        dice_loss = self.dice._loss(stats, input)
        if not fusable:
            ce_target = target if target.is_floating_point() else target.to(input.dtype)
            ce_loss = torch.nn.functional.binary_cross_entropy_with_logits(
                input, ce_target, pos_weight=ce_weight, reduction=reduction
            )
        else:
            if raw is None:  # the Dice pass used another activation: a second fused pass
                ce_target = _as_label_map(target) if label_target else target
                activation = "softmax" if family == "cross_entropy" else "sigmoid"
                raw = fd.dice_stats(input, ce_target, activation, False, None, family)
            positions = input.shape[0] * math.prod(input.shape[2:])
            weight = ce_weight.to(device=raw.device, dtype=raw.dtype) if ce_weight is not None else None
            ce_loss = fd.pixel_loss_from_stats(
                raw,
                family=family,
                label_map=label_target,
                positions=positions,
                weight=weight if family == "cross_entropy" else None,
                label_smoothing=label_smoothing if family == "cross_entropy" else 0.0,
                reduction=reduction,
            )
            if reduction == "mean" and input.numel() == 0:
                ce_loss = ce_loss + math.nan  # torch's mean over no element, as MONAI returns
        return self.lambda_dice * dice_loss + self.lambda_ce * ce_loss


class _FocalTerm(_Loss):
    """The ``focal`` submodule of MONAI's DiceFocalLoss (a FocalLoss), kept for
    its attributes and state_dict key ``focal.class_weight``; the focal term
    itself is computed by the fused op in DiceFocalLoss.forward."""

    def __init__(self, include_background, gamma, weight, alpha, reduction):
        super().__init__(reduction=_lookup_reduction(reduction))
        self.include_background = include_background
        self.to_onehot_y = False
        self.gamma = gamma
        self.weight = weight
        self.use_softmax = False
        self.alpha = None if alpha is None else float(alpha)
        self.register_buffer("class_weight", torch.as_tensor(weight) if weight is not None else None)
        self.ignore_index = None


def _sigmoid_focal_elementwise(input, target, gamma, alpha):
    """MONAI's sigmoid_focal_loss, op for op (not fused: N-sized)."""
    loss = input - input * target - torch.nn.functional.logsigmoid(input)
    invprobs = torch.nn.functional.logsigmoid(-input * (target * 2 - 1))
    loss = (invprobs * gamma).exp() * loss
    if alpha is not None:
        alpha_t = torch.tensor(alpha, device=input.device, dtype=input.dtype)  # MONAI rounds 1 - alpha in this dtype
        loss = (target * alpha_t + (1 - target) * (1 - alpha_t)) * loss
    return loss


#: Inputs of at most this many elements get the focal term of DiceFocalLoss and
#: GeneralizedDiceFocalLoss in eager mode as MONAI's FocalLoss computes it, op for
#: op in PyTorch (the same float32 bits as MONAI on the same device and torch),
#: not from the fused sums. A fused sum cannot reproduce MONAI's float32 rounding
#: (its own element formula and summation order): about half of MONAI's float32
#: focal terms are 1-2 ulps from the correctly rounded value, so the fused term,
#: however accurate, fails MONAI's own tests (``DiceFocal == Dice +
#: lambda * FocalLoss`` at rtol=1e-7) for ~45-65% of their random draws. At
#: this size the fused pass saves neither time nor memory (the PyTorch
#: temporaries are at most 16 KiB each). Larger inputs, and every size under
#: torch.compile / torch.export (one graph for all sizes), use the fused sums.
EXACT_FOCAL_MAX_NUMEL = 4096


def _focal_in_torch(module, input: torch.Tensor) -> bool:
    """Whether ``module``'s focal term is MONAI's PyTorch computation (reduction
    'none', or a small eager input: see EXACT_FOCAL_MAX_NUMEL) rather than the
    fused sums, so that the Dice pass need not carry them."""
    if module.focal.reduction == "none":
        return True
    return not torch.compiler.is_compiling() and input.numel() <= EXACT_FOCAL_MAX_NUMEL


@_scripts_as_monai("monai.losses.dice")
class DiceFocalLoss(_Loss):
    """``monai.losses.DiceFocalLoss`` (MONAI 1.6) with the focal term fused.

    The Dice term is :class:`DiceLoss`; the focal term is MONAI's FocalLoss
    as DiceFocalLoss builds it (always the sigmoid focal loss on the logits,
    ``weight`` per class, ``alpha``-balanced), accumulated in the same kernel
    pass as the Dice statistics when ``sigmoid=True`` or ``softmax=True``
    (else in a second fused pass). ``reduction='none'`` returns MONAI's
    broadcast per-element tensor and computes the focal term in PyTorch, as
    do eager inputs of at most ``EXACT_FOCAL_MAX_NUMEL`` elements (MONAI's
    float32 bits). The focal term is computed in the input's precision (MONAI casts to
    float32 first, so float64 results differ at float32 rounding).
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        gamma: float = 2.0,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        # to_onehot_y=False as in MONAI (whose forward one-hot encodes once for both terms);
        # ours hands the label map to the Dice statistics in forward.
        self.dice = _submodule(DiceLoss, locals(), to_onehot_y=False)
        self.focal = _FocalTerm(include_background, gamma, weight, alpha, reduction)
        self.lambda_dice = _lambda_not_negative("lambda_dice", lambda_dice)
        self.lambda_focal = _lambda_not_negative("lambda_focal", lambda_focal)
        self.to_onehot_y = to_onehot_y

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_combined_shapes(input, target)
        num_classes = input.shape[1]
        label_target = False
        if self.to_onehot_y:
            if num_classes == 1:
                _api.warn("single channel prediction, `to_onehot_y=True` ignored.")
            else:
                label_target = True
        # The Dice term sees a label map as MONAI's one-hot target, never built.
        focal_in_torch = _focal_in_torch(self, input)
        stats, raw = self.dice._stats(
            input, target, to_onehot_y=label_target,
            pixel_loss="none" if focal_in_torch else "binary_cross_entropy", focal_gamma=float(self.focal.gamma),
        )
        dice_loss = self.dice._loss(stats, input)
        focal = _focal_term(self, input, target, raw, label_target, focal_in_torch)
        return self.lambda_dice * dice_loss + self.lambda_focal * focal


def _focal_term(
    module, input: torch.Tensor, target: torch.Tensor, raw, label_target: bool, in_torch: bool
) -> torch.Tensor:
    """MONAI's FocalLoss (sigmoid, as DiceFocalLoss and GeneralizedDiceFocalLoss
    build it) of ``module.focal``'s settings, from the op's unpooled statistics
    ``raw`` (with the focal sums; None: a second fused pass makes them), or with
    ``in_torch`` (see _focal_in_torch) MONAI's computation in PyTorch.
    ``label_target``: the target is a (B, 1, ...) label map to one-hot encode."""
    focal_module = module.focal
    num_classes = input.shape[1]
    include_background = focal_module.include_background
    drop_background = not include_background and num_classes > 1
    if not include_background and num_classes == 1:
        _api.warn("single channel prediction, `include_background=False` ignored.")
    focal_target = _as_label_map(target) if label_target else target
    gamma, alpha, reduction = float(focal_module.gamma), focal_module.alpha, focal_module.reduction
    if in_torch:
        compute_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        if label_target:
            # MONAI's one_hot (zeros, then scatter): its memory layout too, which the
            # reductions' summation order follows (a movedim'd F.one_hot changes the bits).
            shape = list(focal_target.shape)
            shape[1] = num_classes
            t = torch.zeros(shape, dtype=compute_dtype, device=focal_target.device)
            t = t.scatter_(1, focal_target.long(), 1)
        else:
            t = focal_target.to(compute_dtype)
        x = input.to(compute_dtype)
        if drop_background:
            x, t = x[:, 1:], t[:, 1:]
        loss = _focal_class_weight(module, _sigmoid_focal_elementwise(x, t, gamma, alpha))
        if reduction == "sum":  # MONAI's reductions, as written there
            return loss.mean(dim=list(range(2, loss.ndim))).sum()
        if reduction == "mean":
            return loss.mean()
        return loss
    if raw is None:  # the Dice pass had no logits activation: a second fused pass
        raw = fd.dice_stats(input, focal_target, "sigmoid", False, None, "binary_cross_entropy", gamma)
    if drop_background:
        raw = raw[:, 1:]
    # The (B, C') epilogue in float64, rounded once at the end: the alpha
    # recombination of the two sums cancels, and in the statistics' float32 it
    # cost up to ~3 ulps (more than MONAI's own float32 rounding of the term).
    result_dtype = raw.dtype
    raw = raw.double()
    per_class = raw[..., fd.PIXEL_LOSS]
    if alpha is not None:
        per_class = (1 - alpha) * per_class + (2 * alpha - 1) * raw[..., fd.PIXEL_LOSS_TARGET]
    per_class = _focal_class_weight(module, per_class)  # (B, C')
    spatial = math.prod(input.shape[2:])
    if reduction == "sum" and input.dim() > 2:
        focal = per_class.sum() / spatial  # MONAI: mean over space, then sum
    elif reduction == "sum":
        focal = per_class.mean()  # no spatial axes: MONAI's mean(dim=[]) averages everything
    else:
        focal = per_class.sum() / (per_class.numel() * spatial)
    return focal.to(result_dtype)


def _focal_class_weight(module, loss: torch.Tensor) -> torch.Tensor:
    """MONAI FocalLoss' class weighting of a (B, C', ...) tensor."""
    if module.focal.class_weight is None:
        return loss
    source = module.focal.class_weight
    cw = source.to(device=loss.device, dtype=loss.dtype)
    num_classes = loss.shape[1]
    if cw.ndim > 0:
        if num_classes == 1:
            raise ValueError("Per-class class_weight is not supported for single-channel outputs.")
        if cw.numel() != num_classes:
            raise ValueError(
                f"The number of class_weight ({cw.numel()}) must match the number of output channels ({num_classes})."
            )
    if _has_negative(module, "focal.class_weight", source):
        raise ValueError("class_weight values must be non-negative.")
    if cw.ndim > 0:
        return loss * cw.view([1, num_classes] + [1] * (loss.ndim - 2))
    return loss * cw


@_scripts_as_monai("monai.losses.dice")
class GeneralizedDiceFocalLoss(_Loss):
    """``monai.losses.GeneralizedDiceFocalLoss`` (MONAI 1.6) with the focal term fused.

    ``lambda_gdl * GeneralizedDiceLoss + lambda_focal * FocalLoss``: the
    Generalized Dice term is :class:`GeneralizedDiceLoss`, the focal term
    MONAI's sigmoid ``FocalLoss(include_background, to_onehot_y, gamma,
    weight, reduction)`` on the logits. With ``sigmoid=True`` or
    ``softmax=True`` the focal sums ride along in the Generalized Dice's
    fused pass (else a second fused pass makes them); a label map
    (``to_onehot_y=True``) is never one-hot encoded. ``reduction='none'``
    returns MONAI's broadcast per-element tensor (focal term in PyTorch);
    eager inputs of at most ``EXACT_FOCAL_MAX_NUMEL`` elements also get the
    focal term in PyTorch (MONAI's float32 bits).
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        w_type: str = "square",
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        gamma: float = 2.0,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        lambda_gdl: float = 1.0,
        lambda_focal: float = 1.0,
    ) -> None:
        super().__init__()
        self.generalized_dice = _submodule(GeneralizedDiceLoss, locals())
        self.focal = _FocalTerm(include_background, gamma, weight, None, reduction)
        self.focal.to_onehot_y = to_onehot_y
        self.lambda_gdl = _lambda_not_negative("lambda_gdl", lambda_gdl)
        self.lambda_focal = _lambda_not_negative("lambda_focal", lambda_focal)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_combined_shapes(input, target)
        gdl = self.generalized_dice
        focal_in_torch = _focal_in_torch(self, input)
        stats, raw = gdl._stats(
            input, target, pixel_loss="none" if focal_in_torch else "binary_cross_entropy",
            focal_gamma=float(self.focal.gamma),
        )
        gdl_loss = gdl._loss(stats, input)
        label_target = False
        if self.focal.to_onehot_y:
            if input.shape[1] == 1:
                _api.warn("single channel prediction, `to_onehot_y=True` ignored.")
            else:
                label_target = True
        focal = _focal_term(self, input, target, raw, label_target, focal_in_torch)
        return self.lambda_gdl * gdl_loss + self.lambda_focal * focal
