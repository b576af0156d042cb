"""fastdice::dice_loss_from_stats, the one-op epilogue: values and gradients
against the textbook formulas written here in tensor ops (autograd is the
oracle of the gradient), opcheck, gradcheck, validation, CPU == CUDA."""

import itertools
import math

import pytest
import torch

from conftest import DEVICES, assert_close
from fastdice import _ops

TP, SP, ST, SP2, ST2, SAD, SAP, SAT, CNT, PL, PLT = range(11)


def oracle(stats, weight=None, ce_weight=None, *, pooling, include_background, form, jaccard, smooth_nr,
           smooth_dr, log_loss, log_eps, reduction, lambda_dice=1.0, lambda_ce=0.0, ce_family="none",
           ce_label_map=True, ce_positions=0, label_smoothing=0.0):
    """The loss in plain tensor ops, written from the formulas."""
    b, c, _ = stats.shape
    s, w = stats, weight
    if not include_background and c > 1:
        s = s[:, 1:]
        w = w[1:] if w is not None else None
    if form == "squared":
        inter, den = s[..., TP], s[..., SP2] + s[..., ST2]
    elif form == "soft_label":
        inter = (s[..., SAP] + s[..., SAT] - s[..., SAD]) / 2
        den = s[..., SAP] + s[..., SAT]
    else:
        inter, den = s[..., TP], s[..., SP] + s[..., ST]
    if pooling == "global":
        ww = w[None, :] if w is not None else 1.0
        inter, den, w = (inter * ww).sum(), (den * ww).sum(), None
    elif pooling == "batch":
        inter, den = inter.sum(0), den.sum(0)
    if jaccard:
        score = (inter + smooth_nr) / (den - inter + smooth_dr)
    else:
        score = (2 * inter + smooth_nr) / (den + smooth_dr)
    loss = -torch.log(torch.clamp(score, min=log_eps)) if log_loss else 1 - score
    if w is not None:
        loss = loss * w
    loss = {"mean": torch.mean, "sum": torch.sum, "none": lambda x: x}[reduction](loss)
    if ce_family == "none":
        return lambda_dice * loss
    cw = ce_weight[None, :] if ce_weight is not None else torch.ones_like(stats[0, :, 0])[None, :]
    if ce_family == "cross_entropy":
        total = (cw * ((1 - label_smoothing) * stats[..., PLT] + label_smoothing / c * stats[..., PL])).sum()
        denominator = (cw * stats[..., ST]).sum() if ce_label_map else torch.tensor(float(ce_positions)).to(stats)
    else:
        total = (cw * stats[..., PL]).sum()
        count = stats[..., ST].sum() if ce_label_map else torch.tensor(float(ce_positions)).to(stats)
        denominator = count * c
    ce = total if reduction == "sum" else total / torch.clamp(denominator, min=torch.finfo(stats.dtype).tiny)
    return lambda_dice * loss + lambda_ce * ce


def random_stats(b, c, dtype=torch.float64, device="cpu", generator=None):
    """Statistics that could come from real data: 0 <= TP <= sum p, sum t etc."""
    n = 50.0
    g = generator
    p = torch.rand(b, c, dtype=torch.float64, generator=g) * n
    t = torch.rand(b, c, dtype=torch.float64, generator=g) * n
    tp = torch.rand(b, c, dtype=torch.float64, generator=g) * torch.minimum(p, t)
    s = torch.empty(b, c, 11, dtype=torch.float64)
    s[..., TP], s[..., SP], s[..., ST] = tp, p, t
    s[..., SP2] = p * torch.rand(b, c, dtype=torch.float64, generator=g)
    s[..., ST2] = t * torch.rand(b, c, dtype=torch.float64, generator=g)
    s[..., SAP], s[..., SAT] = p, t
    s[..., SAD] = p + t - 2 * tp
    s[..., CNT] = n
    s[..., PL] = torch.rand(b, c, dtype=torch.float64, generator=g) * 3 * n
    s[..., PLT] = torch.rand(b, c, dtype=torch.float64, generator=g) * s[..., PL]
    return s.to(dtype=dtype, device=device)


DICE_CASES = list(
    itertools.product(
        ["global", "batch", "sample"],  # pooling
        [True, False],  # include_background
        ["plain", "squared", "soft_label"],  # form
        [False, True],  # jaccard
        [False, True],  # log_loss
        ["mean", "sum", "none"],  # reduction
        [False, True],  # weight
    )
)


def options(pooling="batch", include_background=False, form="plain", jaccard=False, log_loss=False,
            reduction="mean", **extra):
    o = dict(pooling=pooling, include_background=include_background, form=form, jaccard=jaccard,
             smooth_nr=0.25, smooth_dr=0.75, log_loss=log_loss, log_eps=1e-7, reduction=reduction)
    o.update(extra)
    return o


def call_op(stats, weight, ce_weight, o):
    return _ops.dice_loss_from_stats(stats, weight, ce_weight, **o)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dice_options_match_formula(device, dtype):
    g = torch.Generator().manual_seed(7)
    for i, (pooling, ib, form, jaccard, log_loss, reduction, use_w) in enumerate(DICE_CASES):
        b, c = 1 + i % 3, 1 + i % 4
        stats = random_stats(b, c, dtype, device, g).requires_grad_(True)
        weight = (torch.rand(c, generator=g, dtype=torch.float64) + 0.1).to(dtype=dtype, device=device) if use_w else None
        o = options(pooling, ib, form, jaccard, log_loss, reduction)
        what = f"case {i}: {o} weight={use_w} B={b} C={c}"
        got = call_op(stats, weight, None, o)
        want = oracle(stats, weight, **o)
        assert got.shape == want.shape, what
        assert got.dtype == dtype, what
        assert_close(got, want, dtype, what)
        grad_out = (torch.rand(want.shape, generator=g, dtype=torch.float64) * 2 + 0.5).to(dtype=dtype, device=device)
        (g_got,) = torch.autograd.grad(got, stats, grad_out)
        (g_want,) = torch.autograd.grad(want, stats, grad_out)
        assert_close(g_got, g_want, dtype, what + " (grad)")


CE_CASES = list(
    itertools.product(
        ["cross_entropy", "binary_cross_entropy"],
        [True, False],  # label map
        [0.0, 0.2],  # label smoothing
        [False, True],  # ce_weight
        ["mean", "sum"],
        ["batch", "sample", "global"],
    )
)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dice_plus_cross_entropy_matches_formula(device, dtype):
    g = torch.Generator().manual_seed(11)
    for i, (family, label_map, smoothing, use_cw, reduction, pooling) in enumerate(CE_CASES):
        if family == "binary_cross_entropy" and smoothing:
            continue
        b, c = 2 + i % 2, 2 + i % 3
        stats = random_stats(b, c, dtype, device, g).requires_grad_(True)
        weight = (torch.rand(c, generator=g, dtype=torch.float64) + 0.1).to(dtype=dtype, device=device)
        ce_weight = (torch.rand(c, generator=g, dtype=torch.float64) + 0.1).to(dtype=dtype, device=device) if use_cw else None
        o = options(pooling, False, "plain", False, False, reduction, lambda_dice=0.7, lambda_ce=1.3,
                    ce_family=family, ce_label_map=label_map, ce_positions=97, label_smoothing=smoothing)
        what = f"case {i}: {o} ce_weight={use_cw}"
        got = call_op(stats, weight, ce_weight, o)
        want = oracle(stats, weight, ce_weight, **o)
        assert_close(got, want, dtype, what)
        (g_got,) = torch.autograd.grad(got, stats, torch.tensor(1.7, dtype=dtype, device=device))
        (g_want,) = torch.autograd.grad(want, stats, torch.tensor(1.7, dtype=dtype, device=device))
        assert_close(g_got, g_want, dtype, what + " (grad)")


def test_no_valid_position_gives_zero_cross_entropy():
    stats = random_stats(2, 3)
    stats[..., ST] = 0
    stats[..., PLT] = 0
    stats.requires_grad_(True)
    o = options(lambda_dice=0.0, lambda_ce=1.0, ce_family="cross_entropy", ce_label_map=True)
    loss = call_op(stats, None, None, o)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, stats)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("pooling", ["global", "batch", "sample"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck(pooling, reduction):
    stats = random_stats(2, 3).requires_grad_(True)
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    for form, jaccard, log_loss in [("plain", False, False), ("squared", True, False), ("soft_label", False, True)]:
        o = options(pooling, False, form, jaccard, log_loss, reduction)
        assert torch.autograd.gradcheck(lambda s: call_op(s, weight, None, o), (stats,))
    ce = options(pooling, True, reduction="mean", lambda_ce=0.5, ce_family="cross_entropy", label_smoothing=0.1)
    assert torch.autograd.gradcheck(lambda s: call_op(s, weight, weight.flip(0), ce), (stats,))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    stats = random_stats(2, 3, torch.float32, device).requires_grad_(True)
    weight = torch.rand(3, device=device)
    for o, ce_weight in [
        (options("sample", True, "plain", False, False, "none"), None),
        (options("batch", False, "soft_label", True, True, "none"), None),
        (options("global", True, "squared", False, False, "sum"), None),
        (options("batch", False, lambda_ce=1.0, ce_family="cross_entropy", label_smoothing=0.1), weight),
    ]:
        args = (stats, weight, ce_weight, o["pooling"], o["include_background"], o["form"], o["jaccard"],
                o["smooth_nr"], o["smooth_dr"], o["log_loss"], o["log_eps"], o["reduction"],
                o.get("lambda_dice", 1.0), o.get("lambda_ce", 0.0), o.get("ce_family", "none"), True, 0,
                o.get("label_smoothing", 0.0))
        torch.library.opcheck(torch.ops.fastdice.dice_loss_from_stats.default, args)


def test_clamp_ties_match_torch():
    """At score == log_eps (and a CE denominator == the dtype's tiny) torch's
    clamp passes no gradient; the op must not either."""
    stats = random_stats(1, 1)
    stats[0, 0, TP], stats[0, 0, SP], stats[0, 0, ST] = 0.0, 0.0, 1.0  # score (0 + 1) / (0 + 1 + 1) = 0.5
    o = options("global", True, log_loss=True, smooth_nr=1.0, smooth_dr=1.0, log_eps=0.5)
    for what, weight, ce_weight, extra in [
        ("log clamp", None, None, {}),
        ("CE floor", None, torch.tensor([torch.finfo(torch.float64).tiny], dtype=torch.float64),
         dict(lambda_ce=1.0, ce_family="cross_entropy")),
    ]:
        s = stats.clone().requires_grad_(True)
        o2 = dict(o, **extra)
        got, want = call_op(s, weight, ce_weight, o2), oracle(s, weight, ce_weight, **o2)
        (g_got,) = torch.autograd.grad(got, s)
        (g_want,) = torch.autograd.grad(want, s)
        assert_close(got, want, torch.float64, what)
        assert_close(g_got, g_want, torch.float64, what + " (grad)")


def test_nan_statistics_propagate():
    stats = random_stats(2, 3)
    stats[1, 2, TP] = math.nan
    for pooling in ("global", "batch", "sample"):
        loss = call_op(stats.clone().requires_grad_(True), None, None, options(pooling, True))
        assert math.isnan(loss.item()), pooling


def test_empty_batch_matches_formula():
    stats = random_stats(0, 3).requires_grad_(True)
    for pooling, reduction in itertools.product(["global", "batch", "sample"], ["mean", "sum", "none"]):
        o = options(pooling, False, reduction=reduction)
        got, want = call_op(stats, None, None, o), oracle(stats, **o)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, equal_nan=True)


def test_weight_requiring_grad_raises():
    stats = random_stats(2, 3)
    weight = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="constants"):
        call_op(stats, weight, None, options())


def test_second_derivative_raises():
    stats = random_stats(2, 3).requires_grad_(True)
    loss = call_op(stats, None, None, options())
    (grad,) = torch.autograd.grad(loss, stats, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        grad.sum().backward()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(pooling="pixel"), "pooling"),
        (dict(form="cubed"), "form"),
        (dict(reduction="max"), "reduction"),
        (dict(ce_family="dice"), "ce_family"),
        (dict(smooth_dr=-1.0), "smooth_dr"),
        (dict(log_eps=0.0), "log_eps"),
        (dict(reduction="none", ce_family="cross_entropy"), "reduction 'none'"),
        (dict(label_smoothing=0.1), "label_smoothing"),
        (dict(label_smoothing=1.5, ce_family="cross_entropy"), "label_smoothing"),
    ],
)
def test_bad_options_raise(change, match):
    o = options(**change)
    with pytest.raises(ValueError, match=match):
        call_op(random_stats(2, 3), None, None, o)


def test_bad_tensors_raise():
    with pytest.raises(ValueError, match="stats must have shape"):
        call_op(torch.zeros(2, 3, 9, dtype=torch.float64), None, None, options())
    with pytest.raises(TypeError, match="float32 or float64"):
        call_op(torch.zeros(2, 3, 11, dtype=torch.float16), None, None, options())
    with pytest.raises(ValueError, match="weight must have shape"):
        call_op(random_stats(2, 3), torch.ones(4, dtype=torch.float64), None, options())
    with pytest.raises(ValueError, match="ce_weight must have shape"):
        call_op(random_stats(2, 3), None, torch.ones(2, 2, dtype=torch.float64), options())
    with pytest.raises(ValueError, match="grad must have shape"):
        torch.ops.fastdice.dice_loss_from_stats_backward(
            torch.ones(3, dtype=torch.float64), random_stats(2, 3), None, None, "batch", True, "plain", False,
            1.0, 1.0, False, 1e-7, "mean", 1.0, 0.0, "none", True, 0, 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_on_many_rows():
    """More rows than the CUDA kernel's 256 threads, every pooling: the
    block-strided loops and reductions against the CPU's serial loops."""
    g = torch.Generator().manual_seed(3)
    stats = random_stats(37, 21, torch.float64, "cpu", g)
    weight = torch.rand(21, generator=g, dtype=torch.float64) + 0.1
    for pooling, reduction in itertools.product(["global", "batch", "sample"], ["mean", "sum", "none"]):
        o = options(pooling, False, reduction=reduction)
        if reduction != "none":
            o.update(lambda_ce=0.5, ce_family="cross_entropy", label_smoothing=0.1)
        cpu_stats = stats.clone().requires_grad_(True)
        cuda_stats = stats.cuda().requires_grad_(True)
        a = call_op(cpu_stats, weight, weight, o)
        b = call_op(cuda_stats, weight.cuda(), weight.cuda(), o)
        assert_close(b.cpu(), a, torch.float64, f"{o}")
        grad_out = torch.rand(a.shape, generator=g, dtype=torch.float64) + 0.5
        (ga,) = torch.autograd.grad(a, cpu_stats, grad_out)
        (gb,) = torch.autograd.grad(b, cuda_stats, grad_out.cuda())
        assert_close(gb.cpu(), ga, torch.float64, f"{o} (grad)")


def graph_node_names(tensor):
    """Names of the autograd nodes behind tensor, depth first."""
    seen, stack, names = set(), [tensor.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(node.name())
        stack.extend(f for f, _ in node.next_functions)
    return names


def test_losses_are_two_fused_ops():
    """The losses' whole graph: the statistics op, the epilogue op, the leaf."""
    import fastdice
    from fastdice.compat import monai as compat_monai

    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    t = torch.randint(0, 3, (2, 5, 6))
    losses = [
        fastdice.DiceLoss(activation="softmax", pooling="batch", include_background=False, weight=[1.0, 2.0, 3.0]),
        fastdice.DiceCELoss(ce_weight=[0.5, 1.0, 2.0], label_smoothing=0.1),
        fastdice.DiceFocalLoss(),
        lambda x, t: compat_monai.DiceLoss(softmax=True, to_onehot_y=True, include_background=False)(x, t[:, None]),
    ]
    for loss in losses:
        names = graph_node_names(loss(x, t))
        assert len(names) == 3, names
        assert "DiceLossFromStatsFunction" in names[0] and "DiceStatsFunction" in names[1], names


def test_python_option_list_matches_the_op_schema():
    """_ops.EPILOGUE_OPTIONS (read from the schema) names the schema's arguments
    after (stats, weight, ce_weight), in order and with their types."""
    schema = torch.ops.fastdice.dice_loss_from_stats.default._schema
    arguments = [(a.name, str(a.type)) for a in schema.arguments[3:]]
    kinds = {str: "str", bool: "bool", float: "float", int: "int"}
    assert arguments == [(name, kinds[kind]) for name, _, kind in _ops.EPILOGUE_OPTIONS]
