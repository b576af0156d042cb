"""fastdice.TverskyLoss and GeneralizedDiceLoss against their formulas written
with eager torch ops on materialized probabilities and one-hot targets."""

import random

import pytest
import torch

import fastdice
from fastdice.reference import probabilities_and_target

from conftest import DEVICES, assert_close, random_logits, random_target


def eager_sums(x, target, activation, ignore_index, include_background, pooling):
    p, t, _ = probabilities_and_target(x, target, activation, ignore_index)
    if not include_background and p.shape[1] > 1:
        p, t = p[:, 1:], t[:, 1:]
    dims = tuple(range(2, p.dim()))
    tp, ps, ts = (p * t).sum(dims), p.sum(dims), t.sum(dims)
    if pooling == "batch":
        tp, ps, ts = tp.sum(0), ps.sum(0), ts.sum(0)
    return tp, ps, ts


def reduce(loss, reduction):
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


_rng = random.Random(7)
TVERSKY = [
    dict(
        activation=_rng.choice(["none", "sigmoid", "softmax"]),
        target=_rng.choice(["label", "onehot", "dense"]),
        pooling=_rng.choice(["global", "batch", "sample"]),
        alpha=_rng.choice([0.5, 0.3, 0.7, 1.0]),
        beta=_rng.choice([0.5, 0.7, 0.3, 1.0]),
        gamma=_rng.choice([1.0, 0.75, 2.0]),
        include_background=_rng.random() < 0.6,
        weight=_rng.random() < 0.3,
        reduction=_rng.choice(["mean", "sum", "none"]),
        ignore=_rng.random() < 0.3,
    )
    for _ in range(30)
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(TVERSKY)))
def test_tversky_against_formula(case, dtype, device):
    k = TVERSKY[case]
    shape = (3, 4, 6, 7)
    ignore_index = 255 if (k["ignore"] and k["target"] == "label") else None
    x = random_logits(shape, dtype, device, k["activation"]).requires_grad_()
    target = random_target(k["target"], shape, device, ignore_index=ignore_index)
    target[0] = target[0] * 0 if k["target"] != "label" else target[0]  # an empty sample for dense targets
    weight = [0.5, 1.0, 2.0, 0.25] if k["weight"] else None
    opts = dict(activation=k["activation"], pooling=k["pooling"], include_background=k["include_background"],
                ignore_index=ignore_index, reduction=k["reduction"], smooth_nr=0.5, smooth_dr=0.75, weight=weight)
    loss = fastdice.TverskyLoss(alpha=k["alpha"], beta=k["beta"], gamma=k["gamma"], **opts)(x, target)
    grad_out = torch.rand_like(loss) + 0.5
    loss.backward(grad_out)

    xr = x.detach().double().requires_grad_()
    tp, ps, ts = eager_sums(xr, target, k["activation"], ignore_index, k["include_background"], k["pooling"])
    w = torch.tensor(weight, dtype=torch.float64, device=device) if weight else None
    if w is not None and not k["include_background"]:
        w = w[1:]
    if k["pooling"] == "global":
        if w is not None:
            tp, ps, ts = tp * w, ps * w, ts * w
            w = None
        tp, ps, ts = tp.sum(), ps.sum(), ts.sum()
    score = (tp + 0.5) / (tp + k["alpha"] * (ps - tp) + k["beta"] * (ts - tp) + 0.75)
    expected = (1 - score).clamp_min(0) ** k["gamma"]
    if w is not None:
        expected = expected * w
    expected = reduce(expected, k["reduction"])
    expected.backward(grad_out.double())
    assert_close(loss, expected, dtype, f"loss {k}")
    assert_close(x.grad, xr.grad, dtype, f"grad {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("pooling", ["sample", "batch"])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_generalized_dice_against_formula(reduction, include_background, pooling, w_type, dtype, device):
    shape = (3, 4, 8, 9)
    x = random_logits(shape, dtype, device, "softmax").requires_grad_()
    labels = torch.randint(0, 3, (3, 8, 9), device=device)  # class 3 absent everywhere
    labels[1][labels[1] == 2] = 0  # class 2 absent in sample 1
    loss = fastdice.GeneralizedDiceLoss(
        w_type=w_type, activation="softmax", pooling=pooling, include_background=include_background, reduction=reduction
    )(x, labels)
    grad_out = torch.rand_like(loss) + 0.5
    loss.backward(grad_out)

    xr = x.detach().double().requires_grad_()
    tp, ps, ts = eager_sums(xr, labels, "softmax", None, include_background, pooling)
    w = {"square": 1 / ts**2, "simple": 1 / ts, "uniform": torch.ones_like(ts)}[w_type]
    w = w.detach()
    for row in w.reshape(-1, w.shape[-1]):
        inf = torch.isinf(row)
        row[inf] = 0
        row[inf] = row.max()
    expected = 1 - (2 * (w * tp).sum(-1) + 1e-5) / ((w * (ps + ts)).sum(-1) + 1e-5)
    expected = reduce(expected, reduction)
    expected.backward(grad_out.double())
    assert_close(loss, expected, dtype, "gdl")
    assert_close(x.grad, xr.grad, dtype, "gdl grad")


def test_bad_options():
    with pytest.raises(ValueError, match="alpha"):
        fastdice.TverskyLoss(alpha=-1)
    with pytest.raises(TypeError, match="squared"):
        fastdice.TverskyLoss(squared=True)
    with pytest.raises(ValueError, match="w_type"):
        fastdice.GeneralizedDiceLoss(w_type="cubic")
    with pytest.raises(ValueError, match="pooling"):
        fastdice.GeneralizedDiceLoss(pooling="global")
    with pytest.raises(ValueError, match="weight has 2 entries"):
        fastdice.TverskyLoss(weight=[1.0, 2.0])(torch.rand(2, 3, 4), torch.rand(2, 3, 4))
