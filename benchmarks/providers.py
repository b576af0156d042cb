"""The Dice losses under comparison, each built for one workload.

Every provider computes the same quantity (per-sample, per-class soft Dice of
activated logits against the target, averaged) in its own way. A provider
that is not installed raises Skip, and the table reports it as skipped.
"""

import os

import torch

import fastdice
from fastdice import reference

SMOOTH = 1e-5


class Skip(Exception):
    pass


def _fastdice(w):
    opts = dict(activation=w.activation, pooling="sample", smooth_nr=SMOOTH, smooth_dr=SMOOTH)
    if w.loss == "dice_ce":
        return fastdice.DiceCELoss(**opts)
    return fastdice.DiceLoss(**opts)


def _fastdice_thread(w):
    """fastdice with the CUDA forward's "thread" strategy (FASTDICE_CUDA_FORWARD, read at every call)."""
    if w.device != "cuda":
        raise Skip("the forward strategies are CUDA kernels")
    loss = _fastdice(w)

    def fn(x, t):
        before = os.environ.get("FASTDICE_CUDA_FORWARD")
        os.environ["FASTDICE_CUDA_FORWARD"] = "thread"
        try:
            return loss(x, t)
        finally:
            if before is None:
                del os.environ["FASTDICE_CUDA_FORWARD"]
            else:
                os.environ["FASTDICE_CUDA_FORWARD"] = before

    return fn


def _reference(w):
    def fn(x, t):
        dice = reference.dice_loss(x, t, activation=w.activation, pooling="sample", smooth_nr=SMOOTH, smooth_dr=SMOOTH)
        if w.loss == "dice_ce":
            return dice + torch.nn.functional.cross_entropy(x, t)
        return dice

    return fn


def _reference_compiled(w):
    return torch.compile(_reference(w), dynamic=False)


def _monai(w):
    try:
        from monai.losses import DiceCELoss, DiceLoss
    except ImportError as e:
        raise Skip(f"monai not installed ({e})")
    label = not w.dense_target
    loss = (DiceCELoss if w.loss == "dice_ce" else DiceLoss)(
        sigmoid=w.activation == "sigmoid",
        softmax=w.activation == "softmax",
        to_onehot_y=label,
        smooth_nr=SMOOTH,
        smooth_dr=SMOOTH,
    )
    if label:
        return lambda x, t: loss(x, t.unsqueeze(1))
    return loss


def _smp(w):
    try:
        from segmentation_models_pytorch.losses import DiceLoss
    except ImportError as e:
        raise Skip(f"segmentation_models_pytorch not installed ({e})")
    if w.loss == "dice_ce":
        raise Skip("smp has no Dice + cross-entropy loss")
    mode = "multiclass" if w.activation == "softmax" else "multilabel"
    if w.dense_target and mode == "multiclass":
        raise Skip("smp multiclass mode takes label maps only")
    # smp pools over the batch; the work per element is the same.
    return DiceLoss(mode, from_logits=True, smooth=SMOOTH)


def _exacta(w):
    try:
        from exacta.losses import DiceCELoss, DiceLoss
    except Exception as e:  # ImportError, or Triton failing to load
        raise Skip(f"exacta not importable ({type(e).__name__})")
    return (DiceCELoss if w.loss == "dice_ce" else DiceLoss)(
        activation=w.activation, target_format="one-hot" if w.dense_target else "index", smooth=SMOOTH
    )


PROVIDERS = {
    "fastdice": _fastdice,
    "fastdice_thread": _fastdice_thread,
    "reference": _reference,
    "reference_compiled": _reference_compiled,
    "monai": _monai,
    "smp": _smp,
    "exacta": _exacta,
}
