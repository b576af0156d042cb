"""The Dice losses under comparison, each built for one workload.

Every provider computes the same quantity (per-sample, per-class soft Dice of
activated logits against the target, averaged) in its own way. A provider
that is not installed raises Skip, and the table reports it as skipped.

Deep-supervision workloads (Workload.ds_levels > 0: lists of outputs and int16
(B, 1, ...) targets) are nnU-Net's training loss, DC_and_CE_loss in the
DeepSupervisionWrapper with the trainer's weights: only the nnunet,
nnunet_compiled and fastdice_nnunet providers (and the floors) take them.
"""

import os

import torch

import fastdice
from fastdice import reference

SMOOTH = 1e-5


class Skip(Exception):
    pass


class NotApplicable(Skip):
    """A provider that does not apply to this kind of workload (not listed as skipped)."""


def _fastdice(w):
    if w.loss == "seed":
        if w.pooling != "global":
            return fastdice.DiceLoss(pooling=w.pooling)
        return fastdice.DiceLoss()  # what a user swaps in first: no arguments
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


def _textbook(w):
    """The module everyone writes first: 1 - (2 sum p t + 1) / (sum p + sum t + 1), flattened."""
    if w.loss != "seed" or w.pooling != "global":
        raise NotApplicable("the textbook module is the seed workload's peer (global pooling)")

    def fn(p, t):
        p, t = p.reshape(-1), t.reshape(-1)
        return 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)

    return fn


def _read(t):
    """Reads every element of t. torch's CPU sum of narrow integers (the int16 targets of the
    deep-supervision workload) widens element by element, ~18x slower than an int64 sum of the
    same count; amax reads them vectorised."""
    if t.dtype.is_floating_point or t.dtype == torch.int64:
        return t.sum()
    return t.amax()


class _Floor(torch.autograd.Function):
    """What any loss of this workload must do, timed like a loss.

    kind "read": the forward reads input and target once; the backward reads
    them again and writes an input-sized gradient into memory that stays mapped
    between steps (a preallocated buffer, no page faults). kind "exp": one exp
    per element of the input into the preallocated buffer, forward and backward
    (the softmax / sigmoid paths evaluate it in both passes). The backward
    returns no gradient, so autograd allocates nothing either.
    """

    @staticmethod
    def forward(ctx, x, t, buf, kind):
        ctx.save_for_backward(x, t)
        ctx.buf, ctx.kind = buf, kind
        if kind == "exp":
            torch.exp(x, out=buf)
            return buf.reshape(-1)[:1].sum()
        return x.sum() + _read(t)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        if ctx.kind == "exp":
            torch.exp(x, out=ctx.buf)
        else:
            torch.mul(x, 1.0, out=ctx.buf)
            _read(t)
        return None, None, None, None


def _floor(kind):
    def make(w):
        if kind == "exp" and w.activation == "none":
            raise NotApplicable("no exponential in this path")
        buffers = {}

        def one(x, t):
            key = (x.shape, x.dtype, x.device)
            if key not in buffers:
                buffers[key] = torch.zeros_like(x, requires_grad=False)  # mapped once, reused
            return _Floor.apply(x, t, buffers[key], kind)

        if not w.ds_levels:
            return one
        used = [i for i, v in enumerate(w.ds_weights()) if v != 0]
        return lambda xs, ts: sum(one(xs[i], ts[i]) for i in used)  # the outputs the loss reads

    return make


def _single_output(make):
    """A provider of one output's loss: deep-supervision workloads are nnU-Net's providers' only."""

    def wrapped(w):
        if w.ds_levels:
            raise NotApplicable("deep supervision: nnU-Net's loss and fastdice.compat.nnunet only")
        return make(w)

    wrapped.__doc__ = make.__doc__
    return wrapped


def _reference(w):
    if w.loss == "seed":
        return lambda x, t: reference.dice_loss(x, t, pooling=w.pooling)

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
    if w.loss == "seed":
        if w.pooling == "batch":
            return DiceLoss(batch=True)
        return DiceLoss()  # no activation, dense target (per sample and class: the same work as global)
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
    if w.loss == "seed":
        raise Skip("smp takes logits only")
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
    if w.loss == "seed":
        raise Skip("exacta takes logits only")
    return (DiceCELoss if w.loss == "dice_ce" else DiceLoss)(
        activation=w.activation, target_format="one-hot" if w.dense_target else "index", smooth=SMOOTH
    )


def _nnunet_kwargs(w):
    # As nnUNetTrainer._build_loss: batch Dice, smooth 1e-5, no background for softmax (regions:
    # sigmoid, background kept). The workloads' other providers pool per sample; the work per
    # element is the same.
    return {"batch_dice": True, "smooth": SMOOTH, "do_bg": w.activation != "softmax", "ddp": False}


def _nnunet_loss(w, module, helper):
    if w.loss == "seed":
        raise NotApplicable("nnU-Net's losses take logits")
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
        from nnunetv2.training.loss import compound_losses, deep_supervision, dice
        from nnunetv2.utilities.helpers import softmax_helper_dim1
    except ImportError as e:
        raise Skip(f"nnunetv2 not installed ({e})")

    class Module:  # nnU-Net's classes under one namespace, like fastdice.compat.nnunet
        MemoryEfficientSoftDiceLoss = dice.MemoryEfficientSoftDiceLoss
        DC_and_CE_loss = compound_losses.DC_and_CE_loss
        DeepSupervisionWrapper = deep_supervision.DeepSupervisionWrapper

    return Module, softmax_helper_dim1


def _label_channel(loss, w, module):
    """nnU-Net's targets carry a channel axis: (B, 1, *spatial) label maps. Deep supervision:
    the loss in the module's DeepSupervisionWrapper with the trainer's weights, on the workload's
    lists of outputs and (B, 1, ...) targets."""
    if w.ds_levels:
        return module.DeepSupervisionWrapper(loss, w.ds_weights())
    if w.dense_target:
        return loss
    return lambda x, t: loss(x, t.unsqueeze(1))


def _nnunet(w):
    """nnU-Net's own loss as its trainer builds it, eager."""
    module, helper = _nnunet_modules()
    return _label_channel(_nnunet_loss(w, module, helper), w, module)


def _nnunet_compiled(w):
    """nnU-Net's loss with the Dice part under torch.compile, as its trainer does on CUDA."""
    module, helper = _nnunet_modules()
    loss = _nnunet_loss(w, module, helper)
    if w.loss == "dice_ce":
        loss.dc = torch.compile(loss.dc)  # nnUNetTrainer._build_loss, before the deep-supervision wrapper
    else:
        loss = torch.compile(loss)
    return _label_channel(loss, w, module)


def _fastdice_nnunet(w):
    """fastdice.compat.nnunet with nnU-Net's arguments (fused: Dice and CE in one pass)."""
    from fastdice.compat import nnunet as module

    return _label_channel(_nnunet_loss(w, module, module.softmax_helper_dim1), w, module)


PROVIDERS = {
    "fastdice": _single_output(_fastdice),
    "fastdice_thread": _single_output(_fastdice_thread),
    "textbook": _single_output(_textbook),
    "reference": _single_output(_reference),
    "reference_compiled": _single_output(_reference_compiled),
    "monai": _single_output(_monai),
    "smp": _single_output(_smp),
    "exacta": _single_output(_exacta),
    "nnunet": _nnunet,
    "nnunet_compiled": _nnunet_compiled,
    "fastdice_nnunet": _fastdice_nnunet,
    "floor_read": _floor("read"),
    "floor_exp": _floor("exp"),
}

#: Pseudo-providers: the floors each fastdice time is a multiple of.
FLOORS = ("floor_read", "floor_exp")
