"""fastdice.compat.monai against the installed MONAI (the oracle): loss values
and input gradients (grad_output != 1), warnings, exception types, output
shapes, and the documented differences."""

import functools
import random
import warnings

import pytest
import torch

monai = pytest.importorskip("monai")
import monai.losses  # noqa: E402
import monai.losses.dice  # noqa: E402
import monai.losses.tversky  # noqa: E402
from monai.networks import one_hot as monai_one_hot  # noqa: E402
from monai.utils import LossReduction, Weight  # noqa: E402

from fastdice.compat import monai as fm  # noqa: E402

from conftest import DEVICES, assert_close  # noqa: E402

NAMES = ("DiceLoss", "GeneralizedDiceLoss", "TverskyLoss")
LOW = (torch.bfloat16, torch.float16)


def _losses(name, **kw):
    return getattr(fm, name)(**kw), getattr(monai.losses, name)(**kw)


def _run(loss_fn, x, t, grad_seed):
    """Loss, input gradient (grad_output random / 0.7) and the warnings raised."""
    x = x.detach().clone().requires_grad_(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = loss_fn(x, t)
    if loss.dim() == 0:
        g = torch.tensor(0.7)
    else:
        g = torch.randn(loss.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    loss.backward(g.to(device=loss.device, dtype=loss.dtype))
    messages = [str(w.message) for w in caught if "single channel prediction" in str(w.message)]
    return loss.detach(), x.grad, messages


def _float64_one_hot(monkeypatch):
    """MONAI's one_hot makes float32 targets whatever the input's dtype; the
    float64 oracle gets a float64 one-hot (a precision change only: otherwise
    its squared_pred sums |t|_2^2 carry float32 rounding)."""
    patched = functools.partial(monai_one_hot, dtype=torch.float64)
    monkeypatch.setattr(monai.losses.dice, "one_hot", patched)
    monkeypatch.setattr(monai.losses.tversky, "one_hot", patched)


def _check_against_monai(name, kw, x, t, dtype, monkeypatch, grad_seed=0):
    """Ours in ``dtype`` against MONAI run in float64 on the same values, within
    ``dtype``'s tolerance. The oracle is float64 for every dtype: MONAI's own
    float32 arithmetic can be off in the absolute sense (e.g. an exactly zero
    gradient where the true one is 1e-11), and in float16/bfloat16 it would
    also sum in that precision, while fastdice accumulates in float32."""
    ours, theirs = _losses(name, **kw)
    _float64_one_hot(monkeypatch)
    t_ref = t.double() if t.is_floating_point() else t
    ref_loss, ref_grad, ref_warn = _run(theirs, x.double(), t_ref, grad_seed)
    loss, grad, warn = _run(ours, x, t, grad_seed)
    assert warn == ref_warn
    assert loss.shape == ref_loss.shape, (loss.shape, ref_loss.shape)
    assert grad.dtype == x.dtype and grad.shape == x.shape
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")
    return loss, ref_loss


# ----------------------------------------------------------------------------
# Broad random sweep
# ----------------------------------------------------------------------------


def _make_case(i):
    rng = random.Random(20240 + i)
    gen = torch.Generator().manual_seed(i)
    name = rng.choices(NAMES, weights=[2, 1, 1])[0]
    c = rng.choice([1, 2, 5])
    spatial = rng.choice([(7, 9), (4, 5, 6)])
    shape = (2, c, *spatial)
    low = rng.random() < 0.12
    dtype = rng.choice(LOW) if low else rng.choice([torch.float32, torch.float64])
    device = rng.choice(DEVICES)

    kw = {}
    act = rng.choice(["none", "sigmoid", "softmax"] + ([] if low else ["other"]))
    if act == "sigmoid":
        kw["sigmoid"] = True
    elif act == "softmax":
        kw["softmax"] = True
    elif act == "other":
        kw["other_act"] = rng.choice([torch.tanh, torch.sigmoid])
    if act == "none":  # probabilities away from 0 and 1: no ties p == t
        x = 0.05 + 0.9 * torch.rand(shape, generator=gen, dtype=torch.float64)
    else:
        x = 3 * torch.randn(shape, generator=gen, dtype=torch.float64)
    x = x.to(dtype)

    kw["include_background"] = rng.random() < 0.6
    kw["batch"] = rng.random() < 0.4
    kw["reduction"] = rng.choice(["mean", "sum", "none"])
    smooth = rng.choice([None, (0.0, 1e-5), (0.5, 2.0), (1.0, 1.0)])
    if smooth is not None:
        kw["smooth_nr"], kw["smooth_dr"] = smooth
    kw["soft_label"] = rng.random() < 0.3
    c_eff = c - 1 if (not kw["include_background"] and c > 1) else c
    if name == "DiceLoss":
        kw["squared_pred"] = rng.random() < 0.3
        kw["jaccard"] = rng.random() < 0.3
        w = rng.choice(["none", "scalar", "list", "tensor"])
        if w == "scalar":
            kw["weight"] = rng.choice([0.5, 2, 1.7])
        elif w in ("list", "tensor"):
            values = [round(rng.uniform(0.0, 3.0), 3) for _ in range(c_eff)]
            kw["weight"] = values if w == "list" else torch.tensor(values)
    elif name == "GeneralizedDiceLoss":
        kw["w_type"] = rng.choice(["square", "simple", "uniform"])
    else:
        kw["alpha"] = round(rng.uniform(0.1, 0.9), 3)
        kw["beta"] = round(rng.uniform(0.1, 1.5), 3)

    # Target kinds: label maps (B, 1, ...) with to_onehot_y, one-hot or soft dense targets.
    kind = rng.choice(["label", "label", "onehot", "soft"]) if c > 1 else rng.choice(["binary", "soft"])
    if low and kind == "soft" and act == "none":
        kind = "onehot" if c > 1 else "binary"
    ignore = None
    if name != "GeneralizedDiceLoss" and rng.random() < 0.45 and not (low and kind != "label"):
        if kind == "label":
            ignore = rng.choice([rng.randrange(c), 255, -1])
        elif kind in ("onehot", "soft"):
            ignore = rng.choice([rng.randrange(c), 255, -1])
        else:
            ignore = rng.choice([0, 1])
        kw["ignore_index"] = ignore
    empty_class = rng.random() < 0.4
    if kw["soft_label"] and c_eff == 1:
        # The only counted class empty with soft_label: the input gradient is
        # smoothing residue (~1e-10) left after the |p| and |p - t| terms
        # (~1e-2) cancel, so its relative error is ~1e-7 / 1e-8 in any
        # float32 / float64 implementation (MONAI's included): not comparable.
        empty_class = False
    all_ignored = ignore is not None and rng.random() < 0.3
    dense_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    b = shape[0]
    labels = torch.randint(0, c, (b, *spatial), generator=gen)
    if empty_class and c > 1:
        k = rng.randrange(c)
        labels[labels == k] = (k + 1) % c
    drop = torch.rand(labels.shape, generator=gen) < 0.2
    if kind == "label":
        kw["to_onehot_y"] = True
        if ignore is not None:
            labels[drop] = ignore
            if all_ignored:
                labels[0] = ignore
        ldtype = rng.choice([torch.int64, torch.float32, torch.int32] + ([torch.uint8] if ignore != -1 else []))
        t = labels.unsqueeze(1).to(ldtype)
    elif kind == "onehot":
        t = torch.nn.functional.one_hot(labels, c).movedim(-1, 1).to(dense_dtype)
        if ignore is not None and not 0 <= ignore < c:  # sentinel: all-zero rows are ignored
            t = t * (~drop).unsqueeze(1)
            if all_ignored:
                t[0] = 0
        elif ignore is not None and all_ignored:
            t[0] = 0
            t[0, ignore] = 1
    elif kind == "soft":
        t = torch.rand(shape, generator=gen, dtype=torch.float64).to(dense_dtype)
        if empty_class:
            t[:, rng.randrange(c)] = 0
        if ignore is not None and not 0 <= ignore < c:
            t = t * (~drop).unsqueeze(1)
            if all_ignored:
                t[0] = 0
        elif ignore is not None and all_ignored:
            t[0, ignore] = 1
    else:  # binary mask, C == 1
        t = (torch.rand(shape, generator=gen) < 0.4).to(dense_dtype)
        if empty_class:
            t[0] = 0
        if all_ignored:
            t[0] = ignore
        kw["to_onehot_y"] = rng.random() < 0.25  # ignored with a warning
    return name, kw, x.to(device), t.to(device), dtype


SWEEP = 150


def _case_id(i):
    """The configuration of sweep case i, as its test id (the number keeps it unique)."""
    name, kw, x, t, dtype = _make_case(i)
    parts = [f"{i:03d}", name, str(dtype).replace("torch.", ""), x.device.type, "x".join(map(str, x.shape))]
    parts.append(f"target={str(t.dtype).replace('torch.', '')}{list(t.shape[1:2])}")
    for key, value in sorted(kw.items()):
        if value is True:
            parts.append(key)
        elif value is False or value is None:
            continue
        elif key == "other_act":
            parts.append(f"other_act={value.__name__}")
        elif key == "weight":
            parts.append("weight")
        else:
            parts.append(f"{key}={value}")
    return "-".join(parts)


@pytest.mark.parametrize("case", range(SWEEP), ids=[_case_id(i) for i in range(SWEEP)])
def test_sweep_matches_monai(case, monkeypatch):
    name, kw, x, t, dtype = _make_case(case)
    _check_against_monai(name, kw, x, t, dtype, monkeypatch, grad_seed=case)


def test_sweep_covers_the_options():
    """The sweep reaches every class, dtype, target kind and the edge cases."""
    seen = set()
    for i in range(SWEEP):
        name, kw, x, t, dtype = _make_case(i)
        seen.add(name)
        seen.add(dtype)
        seen.add(("C", x.shape[1]))
        seen.add(("dim", x.dim()))
        seen.add(("label", bool(kw.get("to_onehot_y")) and x.shape[1] > 1))
        for key in ("sigmoid", "softmax", "soft_label", "squared_pred", "jaccard", "batch"):
            if kw.get(key):
                seen.add(key)
        if kw.get("other_act") is not None:
            seen.add("other_act")
        if "weight" in kw:
            seen.add("weight")
        seen.add(("reduction", kw["reduction"]))
        seen.add(("include_background", kw["include_background"]))
        if kw.get("ignore_index") is not None:
            seen.add(("ignore", kw.get("to_onehot_y", False) and x.shape[1] > 1))
        if kw.get("to_onehot_y") and x.shape[1] > 1 and kw.get("ignore_index") is not None:
            if (t[0] == kw["ignore_index"]).all():
                seen.add("all_ignored_sample")
        if x.shape[1] > 1 and kw.get("to_onehot_y"):
            present = {int(v) for v in t.flatten().tolist()}
            if any(k not in present for k in range(x.shape[1])):
                seen.add("empty_class")
    expected = set(NAMES) | {torch.float32, torch.float64, torch.bfloat16, torch.float16}
    expected |= {("C", 1), ("C", 2), ("C", 5), ("dim", 4), ("dim", 5), ("label", True), ("label", False)}
    expected |= {"sigmoid", "softmax", "soft_label", "squared_pred", "jaccard", "batch", "other_act", "weight"}
    expected |= {("reduction", r) for r in ("mean", "sum", "none")}
    expected |= {("include_background", False), ("ignore", True), ("ignore", False)}
    expected |= {"all_ignored_sample", "empty_class"}
    assert expected <= seen, expected - seen


# ----------------------------------------------------------------------------
# Targeted cases
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "name,kw,expected",
    [
        ("DiceLoss", {}, (2, 3, 1, 1)),
        ("DiceLoss", {"batch": True}, (3, 1, 1)),
        ("DiceLoss", {"include_background": False}, (2, 2, 1, 1)),
        ("DiceLoss", {"batch": True, "include_background": False}, (2, 1, 1)),
        ("GeneralizedDiceLoss", {}, (2, 1, 1, 1)),
        ("GeneralizedDiceLoss", {"batch": True}, (1, 1, 1)),
        ("TverskyLoss", {}, (2, 3)),
        ("TverskyLoss", {"batch": True, "include_background": False}, (2,)),
    ],
)
def test_reduction_none_shapes(name, kw, expected, device, monkeypatch):
    x = torch.randn(2, 3, 7, 9, device=device)
    t = torch.randint(0, 3, (2, 1, 7, 9), device=device)
    kw = dict(kw, reduction="none", softmax=True, to_onehot_y=True)
    loss, _ = _check_against_monai(name, kw, x, t, torch.float32, monkeypatch)
    assert tuple(loss.shape) == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_empty_prediction_and_target(name, device, monkeypatch):
    """p == 0 and g == 0 everywhere: loss 0 (smooth_nr / smooth_dr); g == 0 with
    p > 0 and smooth_nr = 0: loss 1."""
    x = torch.zeros(2, 3, 4, 5, device=device, dtype=torch.float64)
    t = torch.zeros(2, 3, 4, 5, device=device, dtype=torch.float64)
    kw = {"reduction": "none"}
    loss, _ = _check_against_monai(name, kw, x, t, torch.float64, monkeypatch)
    assert torch.all(loss == 0)
    x = torch.full((2, 3, 4, 5), 0.3, device=device, dtype=torch.float64)
    kw = {"reduction": "none", "smooth_nr": 0.0}
    loss, _ = _check_against_monai(name, kw, x, t, torch.float64, monkeypatch)
    assert torch.allclose(loss, torch.ones_like(loss))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("batch", [False, True])
def test_generalized_dice_absent_classes(w_type, batch, device, monkeypatch):
    """Infinite weights of absent classes are replaced by the largest weight
    (per sample, or over the batch); a sample without any class gives 0."""
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1, 3, 3, 0, 1, 3]).reshape(1, 1, 3, 4).repeat(3, 1, 1, 1)
    labels[1, 0, 0] = 4  # class 4 present in sample 1 only, class 2 in no sample
    t = torch.nn.functional.one_hot(labels[:, 0], 5).movedim(-1, 1).double().to(device)
    t[2] = 0  # sample 2 has no class at all
    x = torch.randn(3, 5, 3, 4, dtype=torch.float64, device=device)
    kw = {"w_type": w_type, "batch": batch, "reduction": "none", "sigmoid": True}
    _check_against_monai("GeneralizedDiceLoss", kw, x, t, torch.float64, monkeypatch)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["DiceLoss", "TverskyLoss"])
@pytest.mark.parametrize("ignore_index", [1, 255])
def test_all_ignored_sample_and_ignored_class(name, ignore_index, device, monkeypatch):
    x = torch.randn(3, 3, 5, 6, dtype=torch.float64, device=device)
    labels = torch.randint(0, 3, (3, 1, 5, 6), device=device)
    labels[0] = ignore_index
    labels[1, :, :2] = ignore_index
    kw = {"softmax": True, "to_onehot_y": True, "ignore_index": ignore_index, "reduction": "none"}
    _check_against_monai(name, kw, x, labels, torch.float64, monkeypatch)
    # Ignored positions get exactly zero gradient.
    xg = x.clone().requires_grad_(True)
    getattr(fm, name)(**kw)(xg, labels).sum().backward()
    assert torch.all(xg.grad[0] == 0)
    assert torch.all(xg.grad[1, :, :2] == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["DiceLoss", "TverskyLoss"])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_input_without_spatial_axes(name, batch, reduction, device, monkeypatch):
    """(B, C) input: MONAI's torch.sum(dim=[]) pools over every axis when batch=False."""
    x = torch.randn(4, 3, dtype=torch.float64, device=device)
    t = torch.nn.functional.one_hot(torch.randint(0, 3, (4,)), 3).double().to(device)
    kw = {"sigmoid": True, "batch": batch, "reduction": reduction}
    if name == "DiceLoss":
        kw["weight"] = [0.5, 1.0, 2.0]
    _check_against_monai(name, kw, x, t, torch.float64, monkeypatch)
    labels = t.argmax(1)  # (B,) label map, reshaped to (B, 1) by MONAI's one_hot
    kw = dict(kw, to_onehot_y=True, softmax=True, sigmoid=False)
    _check_against_monai(name, kw, x, labels, torch.float64, monkeypatch)


def test_generalized_dice_without_spatial_axes_raises_like_monai():
    x, t = torch.rand(4, 3), torch.ones(4, 3)
    for loss in _losses("GeneralizedDiceLoss"):
        with pytest.raises(IndexError):
            loss(x, t)


@pytest.mark.parametrize("device", DEVICES)
def test_float_labels_are_truncated_like_monai(device, monkeypatch):
    labels = torch.randint(0, 4, (2, 1, 6, 7)).double() + 0.25 * torch.rand(2, 1, 6, 7).double()
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    kw = {"softmax": True, "to_onehot_y": True, "reduction": "none"}
    _check_against_monai("DiceLoss", kw, x.to(device), labels.to(device), torch.float64, monkeypatch)


@pytest.mark.parametrize("device", DEVICES)
def test_scalar_weight_becomes_per_class_like_monai(device):
    """MONAI stores a scalar weight expanded to the class count on first use:
    a later call with another class count raises; state_dicts agree."""
    ours, theirs = _losses("DiceLoss", weight=2.0, softmax=True)
    x3, t3 = torch.randn(2, 3, 4, 4, device=device), torch.rand(2, 3, 4, 4, device=device)
    x4, t4 = torch.randn(2, 4, 4, 4, device=device), torch.rand(2, 4, 4, 4, device=device)
    for loss in (ours, theirs):
        assert loss.state_dict()["class_weight"].shape == ()
        loss(x3, t3)
        assert loss.state_dict()["class_weight"].shape == (3,)
        with pytest.raises(ValueError, match="length of the `weight`"):
            loss(x4, t4)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())


def test_attributes_and_enum_arguments():
    kw = {"reduction": LossReduction.SUM, "smooth_nr": 0, "smooth_dr": 1, "batch": True}
    for name in NAMES:
        ours, theirs = _losses(name, **kw)
        assert ours.reduction == theirs.reduction == "sum"
        attrs = ("include_background", "to_onehot_y", "sigmoid", "softmax", "other_act")
        for attr in attrs + ("smooth_nr", "smooth_dr", "batch", "soft_label"):
            assert getattr(ours, attr) == getattr(theirs, attr), attr
        assert isinstance(ours, torch.nn.modules.loss._Loss)
    for w_type in (Weight.SIMPLE, " simple ", "simple"):
        ours, theirs = _losses("GeneralizedDiceLoss", w_type=w_type)
        assert ours.w_type == theirs.w_type == "simple"
    ours, theirs = _losses("DiceLoss", weight=[1, 2])
    assert torch.equal(ours.class_weight, theirs.class_weight)
    assert ours.class_weight.dtype == theirs.class_weight.dtype


# ----------------------------------------------------------------------------
# Errors and warnings: the same types as MONAI
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "kw,exc",
    [
        ({"sigmoid": True, "softmax": True}, ValueError),
        ({"sigmoid": True, "other_act": torch.tanh}, ValueError),
        ({"softmax": True, "other_act": torch.tanh}, ValueError),
        ({"other_act": 3}, TypeError),
        ({"other_act": "tanh"}, TypeError),
        ({"reduction": "avg"}, ValueError),
        ({"reduction": None}, ValueError),
        ({"reduction": "MEAN"}, ValueError),
        ({"smooth_nr": "a"}, ValueError),
    ],
)
def test_constructor_errors(name, kw, exc):
    with pytest.raises(exc):
        getattr(monai.losses, name)(**kw)
    with pytest.raises(exc):
        getattr(fm, name)(**kw)


@pytest.mark.parametrize("w_type", ["cubic", "SQUARE", 2, None])
def test_generalized_dice_w_type_error(w_type):
    with pytest.raises(ValueError):
        monai.losses.GeneralizedDiceLoss(w_type=w_type)
    with pytest.raises(ValueError, match="Unsupported option"):
        fm.GeneralizedDiceLoss(w_type=w_type)


def _x(*shape):
    return torch.randn(*shape)


FORWARD_ERRORS = [
    # dense target of another shape
    ("DiceLoss", {}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 6), AssertionError, "different shape"),
    ("GeneralizedDiceLoss", {}, _x(2, 3, 4, 5), torch.rand(2, 2, 4, 5), AssertionError, "differing shape"),
    ("TverskyLoss", {}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 5, 1), AssertionError, "differing shape"),
    # label map without to_onehot_y
    ("DiceLoss", {}, _x(2, 3, 4, 5), torch.randint(0, 3, (2, 1, 4, 5)), AssertionError, "different shape"),
    ("DiceLoss", {"include_background": False}, _x(2, 2, 4, 5), torch.randint(0, 2, (2, 1, 4, 5)), AssertionError, "shape"),
    # to_onehot_y with a one-hot target or a label map without a channel axis
    ("DiceLoss", {"to_onehot_y": True}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 5), AssertionError, "channel with length"),
    ("TverskyLoss", {"to_onehot_y": True}, _x(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5)), AssertionError, "channel with length"),
    ("GeneralizedDiceLoss", {"to_onehot_y": True}, _x(2, 3, 4, 5), torch.randint(0, 3, (2, 1, 4, 6)), AssertionError, "differing shape"),
    # weights
    ("DiceLoss", {"weight": [1.0, 2.0]}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 5), ValueError, "length of the `weight`"),
    ("DiceLoss", {"weight": [1.0, 2.0, 3.0], "include_background": False}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 5), ValueError, "length of the `weight`"),
    ("DiceLoss", {"weight": [1.0, -2.0, 3.0]}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 5), ValueError, "no less than 0"),
    ("DiceLoss", {"weight": -1}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 5), ValueError, "no less than 0"),
    ("DiceLoss", {"weight": torch.tensor([0.5, -0.1])}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 5), ValueError, "length of the `weight`"),
    ("DiceLoss", {"weight": torch.tensor([0.5, -0.1]), "include_background": False}, _x(2, 3, 4, 5), torch.rand(2, 3, 4, 5), ValueError, "no less than 0"),
]


@pytest.mark.parametrize("name,kw,x,t,exc,match", FORWARD_ERRORS)
def test_forward_errors(name, kw, x, t, exc, match):
    ours, theirs = _losses(name, **kw)
    with pytest.raises(exc, match=match):
        theirs(x, t)
    with pytest.raises(exc, match=match):
        ours(x, t)


def test_weight_ignored_for_a_single_channel(monkeypatch):
    """Any weight (negative, wrong length) is ignored with one channel, as in MONAI."""
    x, t = torch.randn(2, 1, 4, 5, dtype=torch.float64), (torch.rand(2, 1, 4, 5) < 0.5).double()
    _check_against_monai("DiceLoss", {"weight": [-1.0, 2.0], "sigmoid": True}, x, t, torch.float64, monkeypatch)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "kw,message",
    [
        ({"softmax": True}, "single channel prediction, `softmax=True` ignored."),
        ({"to_onehot_y": True}, "single channel prediction, `to_onehot_y=True` ignored."),
        ({"include_background": False}, "single channel prediction, `include_background=False` ignored."),
    ],
)
def test_single_channel_warnings(name, kw, message, monkeypatch):
    x = torch.randn(2, 1, 4, 5, dtype=torch.float64)
    t = (torch.rand(2, 1, 4, 5) < 0.5).double()
    for loss in _losses(name, **kw):
        with pytest.warns(UserWarning, match=message.replace("(", r"\(").replace(")", r"\)")):
            loss(x, t)
    _check_against_monai(name, dict(kw, reduction="none"), x, t, torch.float64, monkeypatch)


# ----------------------------------------------------------------------------
# Documented differences: where MONAI does something the op cannot, we raise
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DiceLoss", "TverskyLoss"])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_label_out_of_range_raises_value_error(name, ignore_index):
    x = torch.randn(2, 3, 4, 5)
    t = torch.randint(0, 3, (2, 1, 4, 5))
    t[1, 0, 2, 3] = 3
    ours, theirs = _losses(name, to_onehot_y=True, softmax=True, ignore_index=ignore_index)
    with pytest.raises(RuntimeError):  # MONAI: scatter index out of bounds
        theirs(x, t)
    with pytest.raises(ValueError, match="outside"):
        ours(x, t)


def test_dense_target_outside_unit_interval_raises():
    x, t = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    t[0, 0, 0, 0] = 2.0
    monai.losses.DiceLoss()(x, t)  # MONAI computes something
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fm.DiceLoss()(x, t)


def test_fractional_float_labels_with_ignore_index_raise():
    x = torch.randn(2, 3, 4, 5)
    t = torch.randint(0, 3, (2, 1, 4, 5)).float()
    t[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match="ignore_index"):
        fm.DiceLoss(to_onehot_y=True, softmax=True, ignore_index=1)(x, t)
    fm.DiceLoss(to_onehot_y=True, softmax=True, ignore_index=1)(x, t.round())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_result_dtype(dtype):
    x, t = torch.randn(2, 3, 4, 5, dtype=dtype), torch.rand(2, 3, 4, 5)
    for name in NAMES:
        assert getattr(fm, name)(sigmoid=True)(x, t).dtype == torch.float32
    assert fm.DiceLoss()(torch.rand(2, 3, 4, 5, dtype=torch.float64), t).dtype == torch.float64


@pytest.mark.parametrize("device", DEVICES)
def test_class_weight_read_once_per_version(device):
    """MONAI checks the weight's sign on every call; reading a CUDA weight is a
    host sync, so the check reads it once per tensor and version: an in-place
    change is still caught."""
    from fastdice.compat import monai as compat

    x = torch.randn(2, 3, 4, 5, device=device)
    t = torch.randint(0, 3, (2, 1, 4, 5), device=device)
    for loss, name, message in [
        (compat.DiceLoss(softmax=True, to_onehot_y=True, weight=[1.0, 2.0, 3.0]), "class_weight", "no less than 0"),
        (compat.DiceFocalLoss(to_onehot_y=True, weight=[1.0, 2.0, 3.0]), "focal.class_weight", "non-negative"),
    ]:
        loss = loss.to(device)
        loss(x, t)
        key = loss._fd_nonnegative_weights[name]
        loss(x, t)
        assert loss._fd_nonnegative_weights[name] == key
        weight = loss.class_weight if name == "class_weight" else loss.focal.class_weight
        with torch.no_grad():
            weight[1] = -1.0  # in place: a new version of the same tensor
        with pytest.raises(ValueError, match=message):
            loss(x, t)
