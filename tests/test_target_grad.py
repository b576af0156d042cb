"""Gradients with respect to a dense float target (mutual learning,
distillation from a teacher being trained): the op's second output, written
in the same backward pass, against autograd through the classic formulas
(fastdice.reference, the pixel-loss oracle of test_combined.py) and against
MONAI, smp and nnU-Net as installed packages."""

import random

import pytest
import torch

import fastdice
from fastdice import reference

from conftest import DEVICES, assert_close, random_logits
from test_combined import oracle_pixel_loss


def soft_target(shape, dtype, device, generator=None):
    """A soft target away from 0 and 1, so that |t| and |p - t| keep off their kinks."""
    t = 0.05 + 0.9 * torch.rand(shape, dtype=torch.float64, device=device, generator=generator)
    return t.to(dtype)


def probabilities_off_kinks(shape, device):
    return 0.05 + 0.9 * torch.rand(shape, dtype=torch.float64, device=device)


OP_CASES = [
    ("none", "none", 0.0),
    ("sigmoid", "none", 0.0),
    ("softmax", "none", 0.0),
    ("softmax", "cross_entropy", 0.0),
    ("softmax", "cross_entropy", 1.5),
    ("softmax", "binary_cross_entropy", 0.0),
    ("sigmoid", "binary_cross_entropy", 0.0),
    ("sigmoid", "binary_cross_entropy", 2.0),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("full", [False, True], ids=["basic", "full"])
@pytest.mark.parametrize("activation,pixel_loss,gamma", OP_CASES, ids=lambda v: str(v))
def test_gradcheck_input_and_target(activation, pixel_loss, gamma, full, device):
    shape = (2, 3, 13)
    if activation == "none":
        x = probabilities_off_kinks(shape, device)
    else:
        x = 2 * torch.randn(shape, dtype=torch.float64, device=device)
    t = soft_target(shape, torch.float64, device)
    x.requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: fastdice.dice_stats(a, b, activation, full, None, pixel_loss, gamma), (x, t), eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("device", DEVICES)
def test_target_only_requires_grad(device):
    """Input detached, target requiring grad (a student's output as the target)."""
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64, device=device)
    t = soft_target(x.shape, torch.float64, device).requires_grad_(True)
    loss = fastdice.DiceLoss(activation="softmax", pooling="sample")(x, t)
    (0.7 * loss).backward()
    tr = t.detach().clone().requires_grad_(True)
    (0.7 * reference.dice_loss(x, tr, activation="softmax", pooling="sample")).backward()
    assert_close(t.grad, tr.grad, torch.float64, "target grad")


NATIVE_OPTIONS = [
    {},
    {"activation": "softmax", "pooling": "sample", "include_background": False},
    {"activation": "sigmoid", "squared": True, "pooling": "batch"},
    {"activation": "none", "soft_label": True, "pooling": "sample", "reduction": "sum"},
    {"activation": "softmax", "jaccard": True, "log_loss": True, "pooling": "sample"},
    {"activation": "sigmoid", "weight": [1.0, 0.25, 3.0], "pooling": "batch"},
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("options", NATIVE_OPTIONS, ids=str)
def test_dice_loss_target_grad_matches_reference(options, dtype, device):
    shape = (2, 3, 6, 7)
    activation = options.get("activation", "none")
    x = random_logits(shape, torch.float64, device, activation)
    if activation == "none":
        x = probabilities_off_kinks(shape, device)
    x = x.to(dtype).requires_grad_(True)
    t = soft_target(shape, dtype, device).requires_grad_(True)
    loss = fastdice.DiceLoss(**options)(x, t)
    grad_out = torch.rand_like(loss) + 0.5
    loss.backward(grad_out)
    xr = x.detach().double().requires_grad_(True)
    tr = t.detach().double().requires_grad_(True)
    expected = reference.dice_loss(xr, tr, **options)
    expected.backward(grad_out.double())
    assert_close(loss, expected, dtype, "loss")
    assert_close(x.grad, xr.grad, dtype, "input grad")
    assert_close(t.grad, tr.grad, dtype, "target grad")
    assert t.grad.dtype == t.dtype


COMBINED = [
    dict(activation="softmax", gamma=0.0, smoothing=0.0, reduction="mean", pooling="global"),
    dict(activation="softmax", gamma=0.0, smoothing=0.1, reduction="sum", pooling="sample"),
    dict(activation="softmax", gamma=2.0, smoothing=0.0, reduction="mean", pooling="batch"),
    dict(activation="sigmoid", gamma=0.0, smoothing=0.0, reduction="mean", pooling="sample"),
    dict(activation="sigmoid", gamma=1.5, smoothing=0.0, reduction="sum", pooling="global"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", COMBINED, ids=str)
def test_dice_ce_and_focal_target_grad(case, dtype, device):
    shape = (2, 4, 5, 6)
    x = (3 * torch.randn(shape, dtype=torch.float64, device=device)).to(dtype).requires_grad_(True)
    t = soft_target(shape, dtype, device).requires_grad_(True)
    ce_weight = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    dice_opts = dict(activation=case["activation"], pooling=case["pooling"], reduction=case["reduction"],
                     smooth_nr=1e-5, smooth_dr=1e-5)
    loss_fn = fastdice.DiceCELoss(lambda_dice=0.6, lambda_ce=1.3, ce_weight=ce_weight,
                                  label_smoothing=case["smoothing"], focal_gamma=case["gamma"], **dice_opts)
    loss = loss_fn(x, t)
    (0.7 * loss).backward()
    xr = x.detach().double().requires_grad_(True)
    tr = t.detach().double().requires_grad_(True)
    expected = 0.6 * reference.dice_loss(xr, tr, **dice_opts) + 1.3 * oracle_pixel_loss(
        xr, tr, activation=case["activation"], ignore_index=None, weight=ce_weight.to(device),
        label_smoothing=case["smoothing"], gamma=case["gamma"], reduction=case["reduction"],
    )
    (0.7 * expected).backward()
    assert_close(loss, expected, dtype, "loss")
    assert_close(x.grad, xr.grad, dtype, "input grad")
    assert_close(t.grad, tr.grad, dtype, "target grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
def test_generalized_dice_differentiates_its_weights(w_type, device):
    """The weights are functions of the target volume; an absent class takes
    the largest weight and must not make the gradient NaN."""
    shape = (2, 4, 6, 5)
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    t = soft_target(shape, torch.float64, device)
    t[:, 3] = 0  # class 3 absent: infinite weight, replaced
    t.requires_grad_(True)
    loss = fastdice.GeneralizedDiceLoss(w_type=w_type, activation="softmax", reduction="none")(x, t)
    grad_out = torch.rand_like(loss) + 0.5
    loss.backward(grad_out)

    xr = x.detach().clone().requires_grad_(True)
    tr = t.detach().clone().requires_grad_(True)
    p = torch.softmax(xr, 1)
    tp, ps, ts = (p * tr).sum((2, 3)), p.sum((2, 3)), tr.sum((2, 3))
    absent = ts == 0
    safe = torch.where(absent, torch.ones_like(ts), ts)
    w = {"square": 1 / safe**2, "simple": 1 / safe, "uniform": torch.ones_like(ts)}[w_type]
    if w_type != "uniform":
        w = torch.where(absent, torch.zeros_like(w), w)
        w = torch.where(absent, w.max(-1, keepdim=True).values.expand_as(w), w)
    expected = 1 - (2 * (w * tp).sum(-1) + 1e-5) / ((w * (ps + ts)).sum(-1) + 1e-5)
    expected.backward(grad_out)
    assert_close(loss, expected, torch.float64, "gdl")
    assert_close(x.grad, xr.grad, torch.float64, "gdl input grad")
    assert_close(t.grad, tr.grad, torch.float64, "gdl target grad")


@pytest.mark.parametrize("device", DEVICES)
def test_grad_target_dtype_and_layout(device):
    """The gradient has the target's dtype, whatever the input's, and any layout of the target works."""
    shape = (2, 3, 8, 9)
    for x_dtype, t_dtype in [(torch.float32, torch.float64), (torch.bfloat16, torch.float32),
                             (torch.float64, torch.float16), (torch.float32, torch.bfloat16)]:
        x = torch.randn(shape, device=device).to(x_dtype).requires_grad_(True)
        t64 = soft_target(shape, torch.float64, device)
        t = t64.to(t_dtype).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        fastdice.DiceLoss(activation="softmax", pooling="sample")(x, t).backward()
        assert t.grad is not None and t.grad.dtype == t_dtype and t.grad.shape == t.shape
        tr = t.detach().double().requires_grad_(True)
        reference.dice_loss(x.detach().double(), tr, activation="softmax", pooling="sample").backward()
        tol_dtype = t_dtype if t_dtype in (torch.float16, torch.bfloat16) else (
            torch.bfloat16 if x_dtype == torch.bfloat16 else torch.float32)
        assert_close(t.grad, tr.grad, tol_dtype, f"{x_dtype} input, {t_dtype} target")
    # A transposed (non-collapsible) target.
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=device, requires_grad=True)
    t = soft_target((2, 3, 6, 5), torch.float64, device).transpose(2, 3).requires_grad_(True)
    fastdice.DiceLoss(activation="sigmoid")(x, t).backward()
    tr = t.detach().clone().requires_grad_(True)
    reference.dice_loss(x.detach(), tr, activation="sigmoid").backward()
    assert_close(t.grad, tr.grad, torch.float64, "transposed target")


@pytest.mark.parametrize("device", DEVICES)
def test_op_target_grad_output(device):
    x = torch.randn(2, 3, 11, device=device)
    t = soft_target(x.shape, torch.float32, device)
    stats = torch.ops.fastdice.dice_stats(x, t, "softmax", True, None, "none", 0.0)
    grad_stats = torch.randn_like(stats)
    gi, gt = torch.ops.fastdice.dice_stats_backward(grad_stats, x, t, "softmax", True, None, "none", 0.0, True)
    gi2, empty = torch.ops.fastdice.dice_stats_backward(grad_stats, x, t, "softmax", True, None, "none", 0.0, False)
    assert torch.equal(gi, gi2), "asking for the target gradient must not change the input gradient"
    assert empty.numel() == 0 and gt.shape == t.shape
    labels = torch.randint(0, 3, (2, 11), device=device)
    with pytest.raises(ValueError, match="dense floating-point target"):
        torch.ops.fastdice.dice_stats_backward(grad_stats, x, labels, "softmax", True, None, "none", 0.0, True)
    with pytest.raises(ValueError, match="dense floating-point target"):
        torch.ops.fastdice.dice_stats_backward(grad_stats, x, t > 0.5, "softmax", True, None, "none", 0.0, True)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_with_target_grad(device):
    x = torch.randn(2, 3, 6, 5, device=device)
    t = soft_target(x.shape, torch.float32, device)
    grad_stats = torch.randn(2, 3, fastdice.NUM_STATS, device=device)
    for args in [("sigmoid", True, None, "binary_cross_entropy", 2.0, True), ("none", False, None, "none", 0.0, True),
                 ("softmax", True, None, "cross_entropy", 0.0, True)]:
        xa = x.sigmoid() if args[0] == "none" else x
        torch.library.opcheck(torch.ops.fastdice.dice_stats_backward.default, (grad_stats, xa, t) + args)
    xg = x.clone().requires_grad_(True)
    tg = t.clone().requires_grad_(True)
    torch.library.opcheck(torch.ops.fastdice.dice_stats.default, (xg, tg, "softmax", True, None, "none", 0.0))


def test_compile_fullgraph_with_target_grad():
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    t = soft_target(x.shape, torch.float32, "cpu").requires_grad_(True)
    loss_fn = fastdice.DiceCELoss(activation="softmax")
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    compiled(x, t).backward()
    gx, gt = x.grad.clone(), t.grad.clone()
    x.grad = t.grad = None
    loss_fn(x, t).backward()
    assert_close(gx, x.grad, torch.float32, "compiled input grad")
    assert_close(gt, t.grad, torch.float32, "compiled target grad")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("activation,pixel_loss,gamma", OP_CASES, ids=lambda v: str(v))
def test_cuda_target_grad_matches_cpu(activation, pixel_loss, gamma):
    for shape in [(2, 3, 13), (3, 5, 1000), (2, 4, 17, 19)]:
        x = 2 * torch.randn(shape, dtype=torch.float64)
        if activation == "none":
            x = x.sigmoid()
        t = soft_target(shape, torch.float32, "cpu")
        for full in (False, True):
            args = (activation, full, None, pixel_loss, gamma)
            stats = torch.ops.fastdice.dice_stats(x, t, *args)
            grad_stats = torch.randn_like(stats)
            cpu = torch.ops.fastdice.dice_stats_backward(grad_stats, x, t, *args, True)
            gpu = torch.ops.fastdice.dice_stats_backward(grad_stats.cuda(), x.cuda(), t.cuda(), *args, True)
            assert_close(gpu[0].cpu(), cpu[0], torch.float64, f"input grad {shape} {args}")
            assert_close(gpu[1].cpu(), cpu[1], torch.float32, f"target grad {shape} {args}")


# ---- compat layers against the installed packages ----

_rng = random.Random(20261130)
MONAI_CASES = []
for _name in ["DiceLoss", "GeneralizedDiceLoss", "TverskyLoss", "DiceCELoss", "DiceFocalLoss",
              "GeneralizedDiceFocalLoss"]:
    for _ in range(4):
        act = _rng.choice(["sigmoid", "softmax", "none"])
        kw = dict(include_background=_rng.random() < 0.7, batch=_rng.random() < 0.5)
        if act == "sigmoid":
            kw["sigmoid"] = True
        elif act == "softmax":
            kw["softmax"] = True
        if _name == "DiceLoss":
            kw.update(squared_pred=_rng.random() < 0.4, jaccard=_rng.random() < 0.3, soft_label=_rng.random() < 0.3)
        if _name == "GeneralizedDiceLoss":
            kw["w_type"] = _rng.choice(["square", "simple", "uniform"])
        if _name == "TverskyLoss":
            kw.update(alpha=0.3, beta=0.7)
        if _name in ("DiceCELoss", "DiceFocalLoss", "GeneralizedDiceFocalLoss") and act == "none":
            kw["sigmoid"] = True
            act = "sigmoid"
        if _name == "DiceCELoss" and act == "sigmoid":
            kw["include_background"] = True
        MONAI_CASES.append((_name, kw))


@pytest.mark.parametrize("case", range(len(MONAI_CASES)), ids=lambda i: f"{MONAI_CASES[i][0]}-{MONAI_CASES[i][1]}")
def test_compat_monai_target_grad(case):
    monai_losses = pytest.importorskip("monai.losses")
    from fastdice.compat import monai as fmonai

    name, kw = MONAI_CASES[case]
    g = torch.Generator().manual_seed(case)
    shape = (2, 3, 6, 5)
    if kw.get("sigmoid") or kw.get("softmax"):
        x0 = 2 * torch.randn(shape, dtype=torch.float64, generator=g)
    else:
        x0 = 0.05 + 0.9 * torch.rand(shape, dtype=torch.float64, generator=g)
    t0 = soft_target(shape, torch.float64, "cpu", generator=g)
    if name.startswith("Generalized") and kw.get("w_type", "square") != "uniform":
        t0[:, 1] = 0  # an absent class: its infinite weight is replaced
    # MONAI's generalized weights are written in place (w[infs] = 0) after a
    # reciprocal, so autograd refuses its target gradient: there the oracle is
    # MONAI's value, its input gradient (target detached) and a numerical
    # gradient of our loss in the target.
    monai_differentiates_target = not (name.startswith("Generalized") and kw.get("w_type", "square") != "uniform")
    results = []
    for module in (getattr(fmonai, name), getattr(monai_losses, name)):
        x = x0.clone().requires_grad_(True)
        t = t0.clone().requires_grad_(module is getattr(fmonai, name) or monai_differentiates_target)
        loss = module(**kw)(x, t)
        (0.7 * loss).backward()
        results.append((loss.detach(), x.grad, t.grad))
    (ours, gx, gt), (theirs, rx, rt) = results
    # MONAI's FocalLoss computes in float32 even for float64 input (a documented difference).
    tol = torch.float32 if "Focal" in name else torch.float64
    assert_close(ours, theirs, tol, f"{name} loss")
    assert_close(gx, rx, tol, f"{name} input grad")
    assert gt is not None
    if monai_differentiates_target:
        assert_close(gt, rt, tol, f"{name} target grad")
    else:
        with pytest.raises(RuntimeError, match="inplace"):
            t = t0.clone().requires_grad_(True)
            getattr(monai_losses, name)(**kw)(x0, t).backward()
        assert torch.isfinite(gt).all(), "an absent class must not make the target gradient NaN"
        # Numerically, where the loss is smooth in t (no class absent: at t = 0
        # the weight jumps from the replacement to 1 / t^2). MONAI's weights are
        # float32 even for float64 input, so the differences use a wide step.
        loss_fn = getattr(fmonai, name)(**kw)
        present = soft_target(shape, torch.float64, "cpu", generator=g).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda tt: loss_fn(x0, tt), (present,), eps=1e-3, atol=1e-4, rtol=1e-2)


@pytest.mark.parametrize("name", ["DiceLoss", "JaccardLoss", "TverskyLoss"])
@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_compat_smp_target_grad(mode, name):
    smp_losses = pytest.importorskip("segmentation_models_pytorch.losses")
    from fastdice.compat import smp as fsmp

    shape = (2, 1 if mode == "binary" else 3, 6, 5)
    x0 = 2 * torch.randn(shape, dtype=torch.float64)
    t0 = soft_target(shape, torch.float64, "cpu")
    results = []
    for module in (getattr(fsmp, name), getattr(smp_losses, name)):
        x = x0.clone().requires_grad_(True)
        t = t0.clone().requires_grad_(True)
        loss = module(mode)(x, t)
        (0.7 * loss).backward()
        results.append((loss.detach(), x.grad, t.grad))
    (ours, gx, gt), (theirs, rx, rt) = results
    assert_close(ours, theirs, torch.float64, f"{name} loss")
    assert_close(gx, rx, torch.float64, f"{name} input grad")
    assert_close(gt, rt, torch.float64, f"{name} target grad")


@pytest.mark.parametrize("t_dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("do_bg", [False, True], ids=["no_bg", "bg"])
@pytest.mark.parametrize("batch_dice", [False, True], ids=["sample", "batch"])
@pytest.mark.parametrize("name", ["SoftDiceLoss", "MemoryEfficientSoftDiceLoss"])
def test_compat_nnunet_target_grad(name, batch_dice, do_bg, t_dtype):
    """nnU-Net builds its one-hot under no_grad: only a float32 target keeps a
    gradient (MemoryEfficientSoftDiceLoss: only with do_bg, and not through sum(y))."""
    nn_dice = pytest.importorskip("nnunetv2.training.loss.dice")
    from nnunetv2.utilities.helpers import softmax_helper_dim1
    from fastdice.compat import nnunet as fnn

    shape = (2, 3, 6, 5)
    x0 = 2 * torch.randn(shape)
    t0 = soft_target(shape, t_dtype, "cpu")
    results = []
    for module, nonlin in ((getattr(fnn, name), fnn.softmax_helper_dim1), (getattr(nn_dice, name), softmax_helper_dim1)):
        x = x0.clone().requires_grad_(True)
        t = t0.clone().requires_grad_(True)
        loss = module(apply_nonlin=nonlin, batch_dice=batch_dice, do_bg=do_bg, smooth=1e-5, ddp=False)(x, t)
        (0.7 * loss).backward()
        results.append((loss.detach(), x.grad, t.grad))
    (ours, gx, gt), (theirs, rx, rt) = results
    assert_close(ours, theirs, torch.float32, f"{name} loss")
    assert_close(gx, rx, torch.float32, f"{name} input grad")
    assert (gt is None) == (rt is None), f"nnU-Net's target grad is {'None' if rt is None else 'defined'}"
    if rt is not None:
        assert_close(gt, rt, torch.float32, f"{name} target grad")
