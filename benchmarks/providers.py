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


def _nnunet_kwargs(w):
    # As nnUNetTrainer._build_loss: batch Dice, smooth 1e-5, no background for softmax (regions:
    # sigmoid, background kept). The workloads' other providers pool per sample; the work per
    # element is the same.
    return {"batch_dice": True, "smooth": SMOOTH, "do_bg": w.activation != "softmax", "ddp": False}


def _nnunet_loss(w, module, helper):
    if w.loss == "dice_ce":
        if w.activation != "softmax" or w.dense_target:
            raise Skip("nnU-Net's DC_and_CE_loss takes softmax logits and label maps")
        return module.DC_and_CE_loss(
            _nnunet_kwargs(w), {}, weight_ce=1, weight_dice=1, ignore_label=None,
            dice_class=module.MemoryEfficientSoftDiceLoss,
        )
    nonlin = helper if w.activation == "softmax" else torch.sigmoid
    return module.MemoryEfficientSoftDiceLoss(apply_nonlin=nonlin, **_nnunet_kwargs(w))


def _nnunet_modules():
    try:
        from nnunetv2.training.loss import compound_losses, dice
        from nnunetv2.utilities.helpers import softmax_helper_dim1
    except ImportError as e:
        raise Skip(f"nnunetv2 not installed ({e})")

    class Module:  # nnU-Net's classes under one namespace, like fastdice.compat.nnunet
        MemoryEfficientSoftDiceLoss = dice.MemoryEfficientSoftDiceLoss
        DC_and_CE_loss = compound_losses.DC_and_CE_loss

    return Module, softmax_helper_dim1


def _label_channel(loss, w):
    """nnU-Net's targets carry a channel axis: (B, 1, *spatial) label maps."""
    if w.dense_target:
        return loss
    return lambda x, t: loss(x, t.unsqueeze(1))


def _nnunet(w):
    """nnU-Net's own loss as its trainer builds it, eager."""
    module, helper = _nnunet_modules()
    return _label_channel(_nnunet_loss(w, module, helper), w)


def _nnunet_compiled(w):
    """nnU-Net's loss with the Dice part under torch.compile, as its trainer does on CUDA."""
    module, helper = _nnunet_modules()
    loss = _nnunet_loss(w, module, helper)
    if w.loss == "dice_ce":
        loss.dc = torch.compile(loss.dc)
    else:
        loss = torch.compile(loss)
    return _label_channel(loss, w)


def _fastdice_nnunet(w):
    """fastdice.compat.nnunet with nnU-Net's arguments (fused: Dice and CE in one pass)."""
    from fastdice.compat import nnunet as module

    return _label_channel(_nnunet_loss(w, module, module.softmax_helper_dim1), w)


PROVIDERS = {
    "fastdice": _fastdice,
    "fastdice_thread": _fastdice_thread,
    "reference": _reference,
    "reference_compiled": _reference_compiled,
    "monai": _monai,
    "smp": _smp,
    "exacta": _exacta,
    "nnunet": _nnunet,
    "nnunet_compiled": _nnunet_compiled,
    "fastdice_nnunet": _fastdice_nnunet,
}
