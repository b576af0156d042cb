"""fastdice: a fused Dice loss for PyTorch (one pass forward, one pass backward)."""

from . import functional, metrics, reference
from ._version import __version__
from .combined import DiceCELoss, DiceCETerms, DiceFocalLoss, DiceFocalTerms
from .dice_family import GeneralizedDiceLoss, TverskyLoss
from .errors import LabelOutOfRangeError
from .functional import NUM_STATS, STAT_NAMES, dice_loss, dice_stats
from .loss import DiceLoss

__all__ = [
    "DiceLoss", "dice_loss", "DiceCELoss", "DiceFocalLoss", "DiceCETerms", "DiceFocalTerms", "GeneralizedDiceLoss",
    "TverskyLoss", "dice_stats", "functional", "metrics", "reference", "NUM_STATS", "STAT_NAMES",
    "LabelOutOfRangeError", "build_config",
]


def build_config() -> dict:
    """How the extension was built: fastdice's version, CUDA kernels or not, architectures, torch version."""
    try:
        from . import _build_config as c
    except ImportError:  # built by a tool that did not run setup.py
        return {"version": None, "cuda": None, "cuda_arch_list": None, "torch_version": None, "sanitize": None}
    return {"version": getattr(c, "VERSION", None), "cuda": c.CUDA, "cuda_arch_list": c.CUDA_ARCH_LIST,
            "torch_version": c.TORCH_VERSION, "sanitize": c.SANITIZE}
