"""fastdice.compat.monai.DiceCELoss / DiceFocalLoss against the installed MONAI
1.6.1 (the oracle): loss values and input gradients over a random sweep of
constructor arguments, shapes, targets and dtypes."""

import math
import random
import warnings

import pytest
import torch

from conftest import DEVICES, assert_close

monai_losses = pytest.importorskip("monai.losses")
import functools  # noqa: E402

import monai.losses.dice  # noqa: E402
from monai.networks import one_hot as monai_one_hot  # noqa: E402

from fastdice.compat import monai as ours  # noqa: E402


@pytest.fixture(autouse=True)
def _float64_one_hot(monkeypatch):
    """MONAI's one_hot makes float32 targets whatever the input's dtype, which
    puts float32 rounding into its float64 oracle; same values in float64."""
    monkeypatch.setattr(monai.losses.dice, "one_hot", functools.partial(monai_one_hot, dtype=torch.float64))


EXACT_FOCAL_MAX_NUMEL = ours.EXACT_FOCAL_MAX_NUMEL


@pytest.fixture(autouse=True)
def _fused_focal(monkeypatch):
    """Every size takes the fused focal term here (this file's inputs are small, so
    by default their focal term would be MONAI's own PyTorch computation, see
    fastdice.compat.monai.EXACT_FOCAL_MAX_NUMEL); that path has its own test below."""
    monkeypatch.setattr(ours.focal, "EXACT_FOCAL_MAX_NUMEL", 0)


def _case(rng):
    c = rng.choice([1, 2, 5])
    act = rng.choice(["softmax", "sigmoid", "none", "softmax", "sigmoid"])
    return dict(
        classes=c,
        spatial=rng.choice([(7, 9), (4, 5, 6)]),
        act=act,
        target=rng.choice(["label", "onehot"]) if c > 1 else rng.choice(["binary", "soft"]),
        include_background=rng.random() < 0.7,
        batch=rng.random() < 0.3,
        squared_pred=rng.random() < 0.2,
        jaccard=rng.random() < 0.2,
        weight=rng.random() < 0.4,
        lambdas=rng.choice([(1.0, 1.0), (0.4, 1.6)]),
        reduction=rng.choice(["mean", "sum"]),
        label_smoothing=rng.choice([0.0, 0.0, 0.15]),
        gamma=rng.choice([2.0, 0.0, 1.5]),
        alpha=rng.choice([None, None, 0.25]),
        focal_reduction=rng.choice(["mean", "sum", "none"]),
    )


_rng = random.Random(31)
CASES = [_case(_rng) for _ in range(60)]


def _case_id(i):
    """The configuration of CASES[i], as its test id (the number keeps it unique)."""
    k = CASES[i]
    parts = [f"{i:02d}", f"C{k['classes']}", "x".join(map(str, k["spatial"])), k["act"], k["target"]]
    for key in ("include_background", "batch", "squared_pred", "jaccard", "weight"):
        if k[key] is not (key == "include_background"):
            parts.append(f"{key}={k[key]}")
    parts += [f"lambdas={k['lambdas'][0]},{k['lambdas'][1]}", f"reduction={k['reduction']}"]
    if k["label_smoothing"]:
        parts.append(f"label_smoothing={k['label_smoothing']}")
    parts += [f"gamma={k['gamma']}", f"alpha={k['alpha']}", f"focal_reduction={k['focal_reduction']}"]
    return "-".join(parts)


CASE_IDS = [_case_id(i) for i in range(len(CASES))]


def _inputs(k, dtype, device):
    shape = (3, k["classes"], *k["spatial"])
    if k["act"] == "none" or (k["act"] == "softmax" and k["classes"] == 1):
        # The Dice term sees the raw input: keep it in (0, 1) like probabilities,
        # so that a negative Dice term does not cancel the cross-entropy.
        x = torch.rand(shape, dtype=torch.float64, device=device).to(dtype)
    else:
        x = (2.5 * torch.randn(shape, dtype=torch.float64, device=device)).to(dtype)
    b, c, *sp = shape
    labels = torch.randint(0, c, (b, 1, *sp), device=device)
    labels[0][labels[0] == c - 1] = 0  # a class absent from sample 0
    if k["target"] == "label":
        return x, labels
    if k["target"] == "onehot":
        return x, torch.nn.functional.one_hot(labels[:, 0], c).movedim(-1, 1).to(torch.float64)
    if k["target"] == "binary":
        return x, (torch.rand(shape, device=device) < 0.3).to(torch.float64)
    return x, torch.rand(shape, dtype=torch.float64, device=device)


def _run(module, x, target, grad_out):
    x = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = module(x, target)
    loss.backward(grad_out.to(loss.dtype))
    return loss, x.grad


def _common(k):
    kw = dict(
        include_background=k["include_background"],
        to_onehot_y=k["target"] == "label",
        sigmoid=k["act"] == "sigmoid",
        softmax=k["act"] == "softmax",
        squared_pred=k["squared_pred"],
        jaccard=k["jaccard"],
        batch=k["batch"],
    )
    return kw


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_dice_ce_matches_monai(case, dtype, device):
    k = CASES[case]
    x, target = _inputs(k, dtype, device)
    c = k["classes"]
    weight = (torch.rand(c, dtype=torch.float64) + 0.25).to(device) if k["weight"] else None
    kw = dict(
        _common(k), reduction=k["reduction"], weight=weight, lambda_dice=k["lambdas"][0], lambda_ce=k["lambdas"][1],
        label_smoothing=k["label_smoothing"],
    )
    grad_out = torch.tensor(0.7, device=device)
    loss, grad = _run(ours.DiceCELoss(**kw), x, target, grad_out)
    # Oracle: MONAI in float64 on the same values.
    expected, expected_grad = _run(monai_losses.DiceCELoss(**kw), x.double(), target, grad_out)
    assert_close(loss, expected, dtype, f"DiceCE {k}")
    assert_close(grad, expected_grad, dtype, f"DiceCE grad {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_dice_focal_matches_monai(case, dtype, device):
    k = CASES[case]
    x, target = _inputs(k, dtype, device)
    c_after = k["classes"] - (0 if k["include_background"] or k["classes"] == 1 else 1)
    weight = [0.5 + i for i in range(c_after)] if (k["weight"] and c_after > 1) else (2.0 if k["weight"] else None)
    kw = dict(
        _common(k), reduction=k["focal_reduction"], weight=weight, lambda_dice=k["lambdas"][0],
        lambda_focal=k["lambdas"][1], gamma=k["gamma"], alpha=k["alpha"],
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shape = ours.DiceFocalLoss(**kw)(x, target).shape
    grad_out = torch.rand(shape, dtype=torch.float64, device=device) + 0.5
    loss, grad = _run(ours.DiceFocalLoss(**kw), x, target, grad_out)
    expected, expected_grad = _run(monai_losses.DiceFocalLoss(**kw), x.double(), target, grad_out)
    # MONAI's FocalLoss casts to float32 (input.float()): its focal term is a
    # float32 oracle whatever the input precision.
    assert_close(loss, expected, torch.float32, f"DiceFocal {k}")
    assert_close(grad, expected_grad, torch.float32, f"DiceFocal grad {k}")


@pytest.mark.parametrize("device", DEVICES)
def test_dice_ce_is_one_pass_with_softmax(device, monkeypatch):
    """softmax=True: the cross-entropy rides along in the Dice pass (one op call)."""
    from fastdice import _ops

    calls = []
    real = _ops.dice_stats
    monkeypatch.setattr(_ops, "dice_stats", lambda *a: calls.append(a[2:]) or real(*a))
    x = torch.randn(2, 3, 8, 8, device=device)
    labels = torch.randint(0, 3, (2, 1, 8, 8), device=device)
    ours.DiceCELoss(softmax=True, to_onehot_y=True)(x, labels)
    assert len(calls) == 1 and calls[0][3] == "cross_entropy"
    calls.clear()
    ours.DiceFocalLoss(sigmoid=True, to_onehot_y=True)(x, labels)
    assert len(calls) == 1 and calls[0][3] == "binary_cross_entropy"


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_dice_ce(half):
    x = 2 * torch.randn(2, 4, 8, 9)
    labels = torch.randint(0, 4, (2, 1, 8, 9))
    loss, grad = _run(ours.DiceCELoss(softmax=True, to_onehot_y=True), x.to(half), labels, torch.tensor(1.3))
    expected, expected_grad = _run(
        monai_losses.DiceCELoss(softmax=True, to_onehot_y=True), x.to(half).double(), labels, torch.tensor(1.3)
    )
    assert_close(loss, expected, half, "loss")
    assert_close(grad, expected_grad, half, "grad")


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        ("DiceCELoss", dict(lambda_ce=-1.0)),
        ("DiceCELoss", dict(lambda_dice=-0.5)),
        ("DiceCELoss", dict(reduction="none")),
        ("DiceCELoss", dict(softmax=True, sigmoid=True)),
        ("DiceFocalLoss", dict(lambda_focal=-1.0)),
        ("DiceFocalLoss", dict(reduction="avg")),
    ],
)
def test_constructor_errors_match_monai(cls, kwargs):
    with pytest.raises(ValueError) as theirs:
        getattr(monai_losses, cls)(**kwargs)
    with pytest.raises(type(theirs.value)):
        getattr(ours, cls)(**kwargs)


@pytest.mark.parametrize("cls", ["DiceCELoss", "DiceFocalLoss"])
@pytest.mark.parametrize(
    "x_shape,t_shape", [((2, 3, 4, 4), (2, 4, 4)), ((2, 3, 4, 4), (2, 2, 4, 4))]
)
def test_forward_shape_errors_match_monai(cls, x_shape, t_shape):
    x, t = torch.randn(x_shape), torch.zeros(t_shape)
    with pytest.raises(ValueError) as theirs:
        getattr(monai_losses, cls)()(x, t)
    with pytest.raises(ValueError, match=str(theirs.value)[:40].replace("(", r"\(").replace(")", r"\)")):
        getattr(ours, cls)()(x, t)


def test_focal_weight_errors_match_monai():
    x = torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 1, 4, 4))
    for kw in (dict(weight=[1.0, 2.0]), dict(weight=[1.0, -2.0, 1.0])):
        with pytest.raises(ValueError):
            monai_losses.DiceFocalLoss(to_onehot_y=True, sigmoid=True, **kw)(x, t)
        with pytest.raises(ValueError):
            ours.DiceFocalLoss(to_onehot_y=True, sigmoid=True, **kw)(x, t)


@pytest.mark.parametrize("device", DEVICES)
def test_readme_migration_rows_native_api(device):
    """The README's MONAI -> native fastdice rows give MONAI's numbers."""
    import fastdice

    x = 2 * torch.randn(2, 4, 6, 7, dtype=torch.float64, device=device)
    labels = torch.randint(0, 4, (2, 1, 6, 7), device=device)
    rows = [
        (
            monai_losses.DiceLoss(softmax=True, to_onehot_y=True, include_background=False),
            fastdice.DiceLoss(activation="softmax", pooling="sample", include_background=False, smooth_nr=1e-5, smooth_dr=1e-5),
        ),
        (
            monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True),
            fastdice.DiceLoss(activation="softmax", pooling="batch", smooth_nr=1e-5, smooth_dr=1e-5),
        ),
        (
            monai_losses.DiceCELoss(softmax=True, to_onehot_y=True),
            fastdice.DiceCELoss(pooling="sample", smooth_nr=1e-5, smooth_dr=1e-5),
        ),
    ]
    for theirs, mine in rows:
        expected, expected_grad = _run(theirs, x, labels, torch.tensor(0.9))
        got, grad = _run(mine, x, labels, torch.tensor(0.9))
        assert_close(got, expected, torch.float64, type(theirs).__name__)
        assert_close(grad, expected_grad, torch.float64, type(theirs).__name__ + " grad")


def test_dice_focal_without_spatial_axes_matches_monai():
    """(B, C) input: MONAI's 'sum' averages over every axis (mean(dim=[]))."""
    x = 2 * torch.randn(4, 3, dtype=torch.float64)
    labels = torch.randint(0, 3, (4, 1))
    for reduction in ("sum", "mean"):
        kw = dict(sigmoid=True, to_onehot_y=True, reduction=reduction, lambda_dice=0.3)
        got, grad = _run(ours.DiceFocalLoss(**kw), x, labels, torch.tensor(0.8))
        expected, expected_grad = _run(monai_losses.DiceFocalLoss(**kw), x, labels, torch.tensor(0.8))
        assert_close(got, expected, torch.float32, reduction)
        assert_close(grad, expected_grad, torch.float32, reduction + " grad")


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        ("DiceCELoss", dict(weight=torch.tensor([0.2, 1.0, 3.0]))),
        ("DiceFocalLoss", dict(weight=[0.2, 1.0, 3.0], gamma=1.5, alpha=0.3)),
    ],
)
def test_state_dict_and_attributes_match_monai(cls, kwargs):
    theirs, mine = getattr(monai_losses, cls)(**kwargs), getattr(ours, cls)(**kwargs)
    assert set(mine.state_dict()) == set(theirs.state_dict())
    mine.load_state_dict(theirs.state_dict())
    for sub in ("dice", "cross_entropy", "binary_cross_entropy", "focal"):
        assert hasattr(mine, sub) == hasattr(theirs, sub), sub
    if cls == "DiceFocalLoss":
        for attr in ("gamma", "alpha", "include_background", "use_softmax", "reduction"):
            assert getattr(mine.focal, attr) == getattr(theirs.focal, attr), attr


def test_dice_ce_argument_errors_match_monai():
    x, t = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 4))
    with pytest.raises(TypeError):
        monai_losses.DiceCELoss(weight=[0.2, 1.0, 3.0])
    with pytest.raises(TypeError):
        ours.DiceCELoss(weight=[0.2, 1.0, 3.0])
    with pytest.raises(RuntimeError):
        monai_losses.DiceCELoss(to_onehot_y=True, label_smoothing=1.5)(x, t)
    with pytest.raises(RuntimeError):
        ours.DiceCELoss(to_onehot_y=True, label_smoothing=1.5)(x, t)


# ----------------------------------------------------------------------------
# GeneralizedDiceFocalLoss (MONAI 1.6.1 is the oracle)
# ----------------------------------------------------------------------------


def _gdf_case(rng):
    c = rng.choice([1, 2, 5])
    return dict(
        classes=c,
        spatial=rng.choice([(7, 9), (4, 5, 6)]),
        act=rng.choice(["softmax", "sigmoid", "none", "softmax", "sigmoid"]),
        target=rng.choice(["label", "onehot"]) if c > 1 else rng.choice(["binary", "soft"]),
        include_background=rng.random() < 0.7,
        batch=rng.random() < 0.3,
        w_type=rng.choice(["square", "simple", "uniform"]),
        weight=rng.random() < 0.4,
        lambdas=rng.choice([(1.0, 1.0), (0.4, 1.6)]),
        reduction=rng.choice(["mean", "sum", "none"]),
        gamma=rng.choice([2.0, 0.0, 1.5]),
    )


_gdf_rng = random.Random(1015)
GDF_CASES = [_gdf_case(_gdf_rng) for _ in range(40)]


def _gdf_id(k):
    return (
        f"C{k['classes']}-{'x'.join(map(str, k['spatial']))}-{k['act']}-{k['target']}"
        f"{'' if k['include_background'] else '-nobg'}{'-batch' if k['batch'] else ''}-{k['w_type']}"
        f"{'-weight' if k['weight'] else ''}-l{k['lambdas'][0]}-{k['reduction']}-g{k['gamma']}"
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("k", GDF_CASES, ids=[_gdf_id(k) for k in GDF_CASES])
def test_generalized_dice_focal_matches_monai(k, dtype, device):
    x, target = _inputs(k, dtype, device)
    c_after = k["classes"] - (0 if k["include_background"] or k["classes"] == 1 else 1)
    weight = [0.5 + i for i in range(c_after)] if (k["weight"] and c_after > 1) else (2.0 if k["weight"] else None)
    kw = dict(
        include_background=k["include_background"], to_onehot_y=k["target"] == "label",
        sigmoid=k["act"] == "sigmoid", softmax=k["act"] == "softmax", w_type=k["w_type"], reduction=k["reduction"],
        batch=k["batch"], gamma=k["gamma"], weight=weight, lambda_gdl=k["lambdas"][0], lambda_focal=k["lambdas"][1],
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shape = monai_losses.GeneralizedDiceFocalLoss(**kw)(x.double(), target).shape
    grad_out = torch.rand(shape, dtype=torch.float64, device=device) + 0.5  # != 1, per element for "none"
    loss, grad = _run(ours.GeneralizedDiceFocalLoss(**kw), x, target, grad_out)
    expected, expected_grad = _run(monai_losses.GeneralizedDiceFocalLoss(**kw), x.double(), target, grad_out)
    assert loss.shape == expected.shape
    # MONAI's FocalLoss computes in float32 (input.float()), and its GDL weights too.
    assert_close(loss, expected, torch.float32, f"GDFocal {k}")
    assert_close(grad, expected_grad, torch.float32, f"GDFocal grad {k}")


def test_generalized_dice_focal_is_one_pass_with_logits(monkeypatch):
    from fastdice import _ops

    calls = []
    real = _ops.dice_stats
    monkeypatch.setattr(_ops, "dice_stats", lambda *a: calls.append(a[2:]) or real(*a))
    x = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 1, 8, 8))
    ours.GeneralizedDiceFocalLoss(softmax=True, to_onehot_y=True)(x, labels)
    assert len(calls) == 1 and calls[0][3] == "binary_cross_entropy" and labels.dtype == torch.int64


def test_generalized_dice_focal_constructor_matches_monai():
    import inspect

    theirs = inspect.signature(monai_losses.GeneralizedDiceFocalLoss)
    mine = inspect.signature(ours.GeneralizedDiceFocalLoss)
    assert list(mine.parameters) == list(theirs.parameters)
    for name, p in theirs.parameters.items():
        default = p.default.value if hasattr(p.default, "value") else p.default
        assert mine.parameters[name].default == default, name
    for kwargs in (dict(lambda_gdl=-1.0), dict(lambda_focal=-0.5), dict(reduction="avg"), dict(w_type="cubic")):
        with pytest.raises(ValueError) as info:
            monai_losses.GeneralizedDiceFocalLoss(**kwargs)
        with pytest.raises(type(info.value)):
            ours.GeneralizedDiceFocalLoss(**kwargs)
    a = ours.GeneralizedDiceFocalLoss(weight=[1.0, 2.0, 3.0], gamma=1.5)
    b = monai_losses.GeneralizedDiceFocalLoss(weight=[1.0, 2.0, 3.0], gamma=1.5)
    assert list(a.state_dict()) == list(b.state_dict())
    assert (a.lambda_gdl, a.lambda_focal, a.focal.gamma) == (b.lambda_gdl, b.lambda_focal, b.focal.gamma)


@pytest.mark.parametrize("act", ["sigmoid", "none"])  # the focal sums from the Dice pass / from a second pass
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_alpha_focal_term_within_an_ulp_in_float32(act, reduction):
    """DiceFocalLoss' alpha-balanced focal term in float32 is within ~1 ulp of
    MONAI's sigmoid_focal_loss evaluated in float64 (values and input
    gradients). The term recombines two fused sums, (1 - alpha) * sum(L) +
    (2 * alpha - 1) * sum(t * L), which cancels: done in float32 it was up to
    ~3 ulps off (MONAI's own float32 FocalLoss: up to ~1.5 ulps here), enough
    for MONAI's test_dice_focal_loss (rtol=1e-7) to fail."""
    from monai.losses.focal_loss import sigmoid_focal_loss

    gen = torch.Generator().manual_seed(7)
    worst = 0.0
    for i in range(48):
        shape = (3, 3, 5, 5) if i % 2 else (2, 4, 17, 13)
        x = (torch.randn(shape, generator=gen) * (1 + i % 3)).requires_grad_()
        t = torch.randint(0, 2, shape, generator=gen)
        alpha, gamma = [0.25, 0.1, 0.75, 0.9][i % 4], [1.0, 0.0, 2.0][i % 3]
        # lambda_dice=0: the focal term alone (the Dice term on raw logits is ill-conditioned).
        loss = ours.DiceFocalLoss(sigmoid=act == "sigmoid", gamma=gamma, alpha=alpha, lambda_dice=0.0,
                                  reduction=reduction)(x, t)
        (grad,) = torch.autograd.grad(loss, x)
        x64 = x.detach().double().requires_grad_()
        elementwise = sigmoid_focal_loss(x64, t.double(), gamma=gamma, alpha=alpha)
        expected = elementwise.mean(dim=[2, 3]).sum() if reduction == "sum" else elementwise.mean()
        (expected_grad,) = torch.autograd.grad(expected, x64)
        assert loss.dtype == torch.float32
        worst = max(worst, float((loss.detach().double() - expected.detach()).abs() / expected.detach()))
        assert_close(grad, expected_grad, torch.float32, f"alpha focal grad {i}")
    assert worst <= 1.2e-7, f"float32 focal term {worst:.2e} (relative) from the float64 value"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", ["DiceFocalLoss", "GeneralizedDiceFocalLoss"])
def test_small_input_focal_term_is_monais_to_the_bit(cls, device, monkeypatch):
    """Eager inputs of up to EXACT_FOCAL_MAX_NUMEL elements: the focal term is
    MONAI's FocalLoss to the bit (float32), so MONAI's own tests (``DiceFocal ==
    Dice + lambda * FocalLoss`` at rtol=1e-7, on random draws) hold with equality.
    The fused term, as accurate, missed them for ~45-65% of the draws (1-2 ulps
    of MONAI's float32 rounding). Input gradients: within float32 tolerance."""
    monkeypatch.setattr(ours.focal, "EXACT_FOCAL_MAX_NUMEL", EXACT_FOCAL_MAX_NUMEL)
    gen = torch.Generator(device=device).manual_seed(1415)
    rng = random.Random(1415)
    shapes = [(3, 3, 5, 5), (2, 4, 7, 9), (2, 2, 4, 5, 6), (2, 1, 6, 6), (2, 3, 20, 30), (4, 1, 32, 32)]
    if cls == "DiceFocalLoss":
        shapes.append((5, 3))  # no spatial axes (MONAI's GeneralizedDiceLoss raises there)
    for i in range(42):
        shape = shapes[i % len(shapes)]
        assert math.prod(shape) <= EXACT_FOCAL_MAX_NUMEL
        c = shape[1]
        label = c > 1 and rng.random() < 0.5
        include_background = c == 1 or rng.random() < 0.5
        act = rng.choice(["sigmoid", "softmax", "none"])
        c_after = c if include_background else c - 1
        weight = rng.choice([None, 2.0, [0.5 + j for j in range(c_after)] if c_after > 1 else 1.5])
        lambda_focal = rng.choice([0.5, 1.0, 1.5])
        reduction = rng.choice(["mean", "sum"])
        common = dict(include_background=include_background, to_onehot_y=label, reduction=reduction)
        focal_kw = dict(common, gamma=rng.choice([1.0, 2.0, 1.5]), weight=weight)
        if cls == "DiceFocalLoss":
            focal_kw["alpha"] = rng.choice([None, 0.25, 0.1])
            inner = ours.DiceLoss(**common, weight=weight, sigmoid=act == "sigmoid", softmax=act == "softmax")
        else:
            inner = ours.GeneralizedDiceLoss(**common, sigmoid=act == "sigmoid", softmax=act == "softmax")
        combined = getattr(ours, cls)(
            **focal_kw, sigmoid=act == "sigmoid", softmax=act == "softmax", lambda_focal=lambda_focal
        )
        x = (2 * torch.randn(shape, generator=gen, device=device)).requires_grad_()
        if label:
            t = torch.randint(0, c, (shape[0], 1, *shape[2:]), generator=gen, device=device)
        else:
            t = torch.randint(0, 2, shape, generator=gen, device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = combined(x, t)
            expected = inner(x, t) + lambda_focal * monai_losses.FocalLoss(**focal_kw)(x, t)
        what = f"{cls} {shape} {act} {focal_kw} lambda_focal={lambda_focal}"
        assert got.dtype == expected.dtype == torch.float32
        assert torch.equal(got, expected), f"{what}: {got.item()!r} != {expected.item()!r}"
        (grad,) = torch.autograd.grad(got, x)
        (expected_grad,) = torch.autograd.grad(expected, x)
        assert_close(grad, expected_grad, torch.float32, what)
