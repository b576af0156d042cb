"""TorchScript: ``torch.jit.script`` of a fastdice.compat.monai loss gives MONAI's own
module of the same name, built with the same constructor arguments and holding the
same buffers (see ``_scripts_as_monai``): TorchScript cannot compile the fused path's
Python, and MONAI's module has the same semantics."""

from __future__ import annotations

import enum
import functools
import importlib
import inspect

import torch
from torch.nn.modules.loss import _Loss


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
