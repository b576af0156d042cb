"""fastdice.DiceCELoss / DiceFocalLoss against an oracle written with torch ops:
fastdice.reference for the Dice term and torch's cross-entropy (or the focal
formula written out) for the other, values and input gradients."""

import random

import pytest
import torch
import torch.nn.functional as F

import fastdice
from fastdice import reference

from conftest import DEVICES, assert_close, random_target


def oracle_pixel_loss(x, target, *, activation, ignore_index, weight, label_smoothing, gamma, reduction):
    """The cross-entropy / focal term from its textbook formula, in float64."""
    x = x.double()
    b, c = x.shape[:2]
    is_label = not target.dtype.is_floating_point and target.shape != x.shape
    if is_label:
        labels = target.reshape(b, *x.shape[2:]).long()
        valid = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
        t = F.one_hot(torch.where(valid, labels, 0), c).movedim(-1, 1).double() * valid.unsqueeze(1)
        valid = valid.unsqueeze(1).double()
    else:
        t = target.double()
        valid = torch.ones_like(x[:, :1])
    w = (weight.double() if weight is not None else torch.ones(c, dtype=torch.float64, device=x.device)).reshape(
        1, c, *([1] * (x.dim() - 2))
    )
    if activation == "softmax":
        lp = x.log_softmax(1)
        elem = -lp * (1 - lp.exp()).pow(gamma)
        per_pos = ((1 - label_smoothing) * t + label_smoothing / c * valid) * w * elem
        total = per_pos.sum()
        if reduction == "sum":
            return total
        den = (t * w).sum() if is_label else torch.tensor(float(x.numel() // c), dtype=torch.float64)
        return total / den
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    elem = torch.exp(gamma * F.logsigmoid(-x * (2 * t - 1))) * bce * w * valid
    if reduction == "sum":
        return elem.sum()
    return elem.sum() / (valid.sum() * c)


CASES = []
_rng = random.Random(20261125)
for _ in range(60):
    CASES.append(
        dict(
            activation=_rng.choice(["softmax", "sigmoid"]),
            target_kind=_rng.choice(["label", "label1", "onehot", "dense"]),
            classes=_rng.choice([2, 3, 5]),
            spatial=_rng.choice([(7, 9), (4, 5, 6), (33,)]),
            ignore=_rng.random() < 0.3,
            ce_weight=_rng.random() < 0.4,
            smoothing=_rng.choice([0.0, 0.0, 0.1]),
            gamma=_rng.choice([0.0, 0.0, 2.0, 0.5]),
            reduction=_rng.choice(["mean", "sum"]),
            pooling=_rng.choice(["global", "batch", "sample"]),
            include_background=_rng.random() < 0.7,
            lambdas=_rng.choice([(1.0, 1.0), (0.3, 1.7)]),
        )
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_dice_ce_against_oracle(case, dtype, device):
    k = CASES[case]
    if k["activation"] == "sigmoid":
        k = dict(k, smoothing=0.0)
    if k["target_kind"] in ("onehot", "dense"):
        k = dict(k, ignore=False)
    shape = (2, k["classes"], *k["spatial"])
    ignore_index = 255 if k["ignore"] else None
    x = (3 * torch.randn(shape, dtype=torch.float64, device=device)).to(dtype).requires_grad_()
    target = random_target("label" if k["target_kind"] == "label" else k["target_kind"], shape, device, ignore_index=ignore_index)
    if k["target_kind"] == "dense":
        target = target.to(dtype)
    ce_weight = torch.rand(k["classes"], dtype=torch.float64) + 0.2 if k["ce_weight"] else None
    dice_opts = dict(
        activation=k["activation"],
        pooling=k["pooling"],
        include_background=k["include_background"],
        ignore_index=ignore_index,
        reduction=k["reduction"],
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )
    lambda_dice, lambda_ce = k["lambdas"]
    loss_fn = fastdice.DiceCELoss(
        lambda_dice=lambda_dice,
        lambda_ce=lambda_ce,
        ce_weight=ce_weight,
        label_smoothing=k["smoothing"],
        focal_gamma=k["gamma"],
        **dice_opts,
    )
    loss = loss_fn(x, target)
    (0.7 * loss).backward()

    xr = x.detach().double().requires_grad_()
    expected = lambda_dice * reference.dice_loss(xr, target, **dice_opts) + lambda_ce * oracle_pixel_loss(
        xr,
        target,
        activation=k["activation"],
        ignore_index=ignore_index,
        weight=ce_weight.to(device) if ce_weight is not None else None,
        label_smoothing=k["smoothing"],
        gamma=k["gamma"],
        reduction=k["reduction"],
    )
    (0.7 * expected).backward()
    assert_close(loss, expected, dtype, f"loss {k}")
    assert_close(x.grad, xr.grad, dtype, f"grad {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_term_is_torch_cross_entropy(label_smoothing, reduction, device):
    """lambda_dice = 0: the term is exactly torch.nn.CrossEntropyLoss (weight,
    ignore_index, label_smoothing), values and gradients."""
    x = (2 * torch.randn(3, 4, 6, 7, dtype=torch.float64, device=device)).requires_grad_()
    labels = torch.randint(0, 4, (3, 6, 7), device=device)
    labels[0, :2] = -100
    w = torch.rand(4, dtype=torch.float64, device=device) + 0.1
    ours = fastdice.DiceCELoss(
        lambda_dice=0.0, ce_weight=w, ignore_index=-100, label_smoothing=label_smoothing, reduction=reduction
    )(x, labels)
    xr = x.detach().clone().requires_grad_()
    theirs = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=label_smoothing, reduction=reduction)(xr, labels)
    ours.backward(torch.tensor(1.3, dtype=torch.float64, device=device))
    theirs.backward(torch.tensor(1.3, dtype=torch.float64, device=device))
    assert_close(ours, theirs, torch.float64, "ce")
    assert_close(x.grad, xr.grad, torch.float64, "ce grad")


@pytest.mark.parametrize("device", DEVICES)
def test_binary_cross_entropy_term_is_torch_bce(device):
    x = (2 * torch.randn(2, 3, 5, 9, dtype=torch.float64, device=device)).requires_grad_()
    t = torch.rand(2, 3, 5, 9, dtype=torch.float64, device=device)
    w = torch.rand(3, dtype=torch.float64, device=device) + 0.1
    ours = fastdice.DiceCELoss(lambda_dice=0.0, activation="sigmoid", ce_weight=w)(x, t)
    xr = x.detach().clone().requires_grad_()
    theirs = F.binary_cross_entropy_with_logits(xr, t, weight=w.reshape(1, 3, 1, 1))
    ours.backward()
    theirs.backward()
    assert_close(ours, theirs, torch.float64, "bce")
    assert_close(x.grad, xr.grad, torch.float64, "bce grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(dtype, device):
    x = (3 * torch.randn(2, 4, 16, 16, device=device)).to(dtype).requires_grad_()
    labels = torch.randint(0, 4, (2, 16, 16), device=device)
    loss = fastdice.DiceFocalLoss(gamma=2.0)(x, labels)
    loss.backward()
    xr = x.detach().double().requires_grad_()
    expected = reference.dice_loss(xr, labels, activation="softmax", smooth_nr=1e-5, smooth_dr=1e-5)
    expected = reference.dice_loss(xr, labels, activation="softmax") + oracle_pixel_loss(
        xr, labels, activation="softmax", ignore_index=None, weight=None, label_smoothing=0.0, gamma=2.0, reduction="mean"
    )
    expected.backward()
    assert loss.dtype == torch.float32
    assert_close(loss, expected, dtype, "loss")
    assert_close(x.grad, xr.grad, dtype, "grad")


@pytest.mark.parametrize("device", DEVICES)
def test_all_ignored_is_a_differentiable_zero_cross_entropy(device):
    x = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    labels = torch.full((2, 4, 4), 9, device=device)
    loss = fastdice.DiceCELoss(lambda_dice=0.0, ignore_index=9)(x, labels)
    loss.backward()
    assert loss.item() == 0.0 and (x.grad == 0).all()


def test_stats_of_one_pass_match_two_passes():
    """The Dice statistics do not change when the pixel loss is fused in."""
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 9, 11))
    plain = fastdice.dice_stats(x, labels, "softmax", True, None)
    fused = fastdice.dice_stats(x, labels, "softmax", True, None, "cross_entropy", 2.0)
    assert torch.equal(plain[..., : fastdice._ops.PIXEL_LOSS], fused[..., : fastdice._ops.PIXEL_LOSS])
    assert (fused[..., fastdice._ops.PIXEL_LOSS :] > 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "activation,pixel_loss", [("softmax", "cross_entropy"), ("softmax", "binary_cross_entropy"), ("sigmoid", "binary_cross_entropy")]
)
@pytest.mark.parametrize("gamma", [0.0, 1.5])
@pytest.mark.parametrize("full", [False, True])
def test_gradcheck_fused_op(full, gamma, activation, pixel_loss, device):
    x = (2 * torch.randn(2, 3, 13, dtype=torch.float64, device=device)).requires_grad_()
    labels = torch.randint(0, 3, (2, 13), device=device)
    labels[1, :4] = 7
    torch.autograd.gradcheck(
        lambda x: fastdice.dice_stats(x, labels, activation, full, 7, pixel_loss, gamma), (x,)
    )


def test_opcheck_fused_op():
    x = torch.randn(2, 3, 5, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 5, 4))
    torch.library.opcheck(
        torch.ops.fastdice.dice_stats.default, (x, labels, "softmax", False, None, "cross_entropy", 2.0)
    )


def test_compile_fullgraph():
    loss_fn = fastdice.DiceCELoss(label_smoothing=0.1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 8, 8))
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    got = compiled(x, labels)
    got.backward()
    g = x.grad.clone()
    x.grad = None
    expected = loss_fn(x, labels)
    expected.backward()
    assert_close(got, expected, torch.float32, "compiled")
    assert_close(g, x.grad, torch.float32, "compiled grad")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(activation="none"), "activation"),
        (dict(reduction="none"), "reduction"),
        (dict(lambda_ce=-1.0), "lambda_ce"),
        (dict(label_smoothing=1.5), "label_smoothing"),
        (dict(activation="sigmoid", label_smoothing=0.1), "label_smoothing"),
        (dict(focal_gamma=float("nan")), "focal_gamma"),
        (dict(ce_weight=[1.0, -1.0]), "weight"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastdice.DiceCELoss(**kwargs)


def test_op_rejects_bad_pixel_options():
    x = torch.randn(2, 3, 4)
    t = torch.randint(0, 3, (2, 4))
    with pytest.raises(ValueError, match="pixel_loss"):
        torch.ops.fastdice.dice_stats(x, t, "softmax", False, None, "hinge", 0.0)
    with pytest.raises(ValueError, match="needs activation='softmax'"):
        torch.ops.fastdice.dice_stats(x, t, "sigmoid", False, None, "cross_entropy", 0.0)
    with pytest.raises(ValueError, match="logits"):
        torch.ops.fastdice.dice_stats(x, t, "none", False, None, "binary_cross_entropy", 0.0)
    with pytest.raises(ValueError, match="focal_gamma"):
        torch.ops.fastdice.dice_stats(x, t, "softmax", False, None, "cross_entropy", -1.0)


def test_ce_weight_length_is_checked():
    with pytest.raises(ValueError, match="ce_weight has 2 entries"):
        fastdice.DiceCELoss(ce_weight=[1.0, 2.0])(torch.randn(2, 3, 4), torch.randint(0, 3, (2, 4)))


def test_dice_focal_argument_errors_name_its_own_arguments():
    with pytest.raises(TypeError, match="'gamma', not 'focal_gamma'"):
        fastdice.DiceFocalLoss(focal_gamma=2.0)
    with pytest.raises(TypeError, match="'focal_weight', not 'ce_weight'"):
        fastdice.DiceFocalLoss(ce_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="gamma must be"):
        fastdice.DiceFocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="ce_weight must be a number or a 1-D"):
        fastdice.DiceCELoss(ce_weight=[[1.0, 2.0, 3.0]])


def test_repr_and_pickle():
    import pickle

    loss = fastdice.DiceCELoss(pooling="batch", ce_weight=[1.0, 2.0, 0.5], label_smoothing=0.1)
    text = repr(loss)
    assert "pooling='batch'" in text and "ce_weight=[1.0, 2.0, 0.5]" in text and "label_smoothing=0.1" in text
    x = torch.randn(2, 3, 5, 5)
    labels = torch.randint(0, 3, (2, 5, 5))
    clone = pickle.loads(pickle.dumps(loss))
    assert torch.equal(clone(x, labels), loss(x, labels))
