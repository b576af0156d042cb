"""Runs MONAI's own loss tests (test_*.py in this folder, see README.md) against fastdice.compat.monai.

The shim, and all of it:

* While pytest imports a test module of this folder, and only then, the names of
  ``fastdice.compat.monai.__all__`` in ``monai.losses`` (and in the monai submodule
  that defines each) are fastdice's classes, so the module's
  ``from monai.losses import DiceLoss, FocalLoss`` binds fastdice's ``DiceLoss``
  and MONAI's ``FocalLoss``. Everything else the tests use (FocalLoss,
  AsymmetricUnifiedFocalLoss, one_hot, convert_to_torchscript, ...) is the
  installed monai package. ``monai.losses`` is restored right after each import:
  the rest of our suite uses MONAI's classes as its oracle. Collection fails
  loudly if either side of that does not hold.
* ``tests.test_utils`` (MONAI's test helpers, not in the monai wheel) is
  ``_monai_test_utils`` beside this file.

Nothing is skipped: the TorchScript tests (``test_script``) script fastdice's
class, whose ``__prepare_scriptable__`` gives MONAI's own class built with the
same arguments (TorchScript cannot compile the fused path's Python).

FASTDICE_MONAI_TESTS_AGAINST=monai runs the same files against the installed
MONAI instead (no patching): the baseline that shows the files fit
MONAI 1.6.1.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

import pytest

import monai
import monai.losses
from fastdice.compat import monai as fastdice_monai

# MONAI's test files import `parameterized` (not one of our test requirements): without it,
# the copied files are left out instead of failing the whole suite's collection.
try:
    import parameterized  # noqa: F401
except ImportError:
    collect_ignore_glob = ["test_*.py"]

from . import _monai_test_utils

HERE = Path(__file__).resolve().parent
AGAINST = os.environ.get("FASTDICE_MONAI_TESTS_AGAINST", "fastdice")
if AGAINST not in ("fastdice", "monai"):
    raise pytest.UsageError(f"FASTDICE_MONAI_TESTS_AGAINST must be 'fastdice' or 'monai', not {AGAINST!r}")

MONAI_CLASSES = {name: getattr(monai.losses, name) for name in fastdice_monai.__all__}
FASTDICE_CLASSES = {name: getattr(fastdice_monai, name) for name in fastdice_monai.__all__}

# MONAI's tests import their helpers from their own tests package.
sys.modules["tests.test_utils"] = _monai_test_utils


def _defining_modules(name: str):
    """monai.losses and the monai.losses submodule that defines ``name``."""
    yield monai.losses
    yield importlib.import_module(MONAI_CLASSES[name].__module__)


@contextlib.contextmanager
def _monai_losses_are_fastdice():
    saved = []
    try:
        for name, cls in FASTDICE_CLASSES.items():
            for module in _defining_modules(name):
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, cls)
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def _ours(collector) -> bool:
    return isinstance(collector, pytest.Module) and Path(collector.path).resolve().parent == HERE


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    if AGAINST == "fastdice" and _ours(collector):
        with _monai_losses_are_fastdice():
            return (yield)
    return (yield)


def pytest_collection_modifyitems(config, items):
    # Our oracle tests elsewhere must still see MONAI's classes.
    for name, cls in MONAI_CLASSES.items():
        for module in _defining_modules(name):
            if getattr(module, name) is not cls:
                raise pytest.UsageError(f"{module.__name__}.{name} was left patched by {__file__}")
    expected = FASTDICE_CLASSES if AGAINST == "fastdice" else MONAI_CLASSES
    checked = set()
    for item in items:
        module = getattr(item, "module", None)
        path = Path(str(item.path)).resolve()
        if module is None or path.parent != HERE:
            continue
        if module not in checked:
            checked.add(module)
            for name, cls in expected.items():
                if name in vars(module) and vars(module)[name] is not cls:
                    raise pytest.UsageError(f"{path.name}: {name} is {vars(module)[name]!r}, expected {cls!r}")
