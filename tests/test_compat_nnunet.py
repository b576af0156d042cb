"""fastdice.compat.nnunet against nnunetv2 2.8.1 itself (the oracle): loss values,
input gradients (grad_output 0.7), output dtypes, attributes, fused-path use,
DDP batch Dice (gloo, 2 processes) and errors.

Tolerance: nnU-Net sums the Dice statistics in float32 for every input dtype
(``sum(..., dtype=torch.float32)``), so its float64 results carry float32
rounding; results that involve a Dice term are compared with the float32 row
of conftest's table for float64 inputs too (the oracle's own precision).
"""

import os
import random

import pytest
import torch

nn_dice = pytest.importorskip("nnunetv2.training.loss.dice")
nn_compound = pytest.importorskip("nnunetv2.training.loss.compound_losses")
nn_ds = pytest.importorskip("nnunetv2.training.loss.deep_supervision")
from nnunetv2.utilities.helpers import softmax_helper_dim1 as nn_softmax  # noqa: E402

import fastdice._ops  # noqa: E402
from fastdice.compat import nnunet as fnn  # noqa: E402

from conftest import assert_close  # noqa: E402

GRAD_OUTPUT = 0.7


def _custom_nonlin(x):
    """A callable the compat module does not know: the eager fallback."""
    return torch.softmax(x, 1) * 0.5 + 0.25


NONLINS = {
    "nnsoftmax": nn_softmax,
    "oursoftmax": fnn.softmax_helper_dim1,
    "sigmoid": torch.sigmoid,
    "none": None,
    "custom": _custom_nonlin,
}


def _loss_and_grad(loss_fn, x, *args, **kwargs):
    x = x.detach().clone().requires_grad_(True)
    loss = loss_fn(x, *args, **kwargs)
    loss.backward(torch.tensor(GRAD_OUTPUT, dtype=loss.dtype))
    return loss.detach(), x.grad


def _loss_and_grads_ds(loss_fn, xs, ys):
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    loss = loss_fn(xs, ys)
    loss.backward(torch.tensor(GRAD_OUTPUT, dtype=loss.dtype))
    return loss.detach(), [x.grad for x in xs]


def _tol_dtype(dtype):
    return torch.float32  # see the module docstring: nnU-Net's Dice sums are float32


def _compare(ref, ours, tag, dtype):
    (ref_loss, ref_grad), (loss, grad) = ref, ours
    assert loss.dtype == ref_loss.dtype, f"{tag}: dtype {loss.dtype} vs nnU-Net {ref_loss.dtype}"
    assert loss.shape == ref_loss.shape == (), tag
    assert_close(loss, ref_loss, _tol_dtype(dtype), f"loss {tag}")
    ref_grads = ref_grad if isinstance(ref_grad, list) else [ref_grad]
    grads = grad if isinstance(grad, list) else [grad]
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert r is not None and g is not None, f"{tag}: missing gradient {i}"
        assert g.dtype == r.dtype and g.shape == r.shape, tag
        assert r.abs().max() > 0, f"{tag}: the oracle's gradient {i} is zero (case tests nothing)"
        assert_close(g, r, _tol_dtype(dtype), f"grad[{i}] {tag}")


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _logits(shape, dtype, nonlin, gen):
    if nonlin == "none":  # probabilities
        x = 0.05 + 0.9 * torch.rand(shape, dtype=torch.float64, generator=gen)
    else:
        x = 3 * torch.randn(shape, dtype=torch.float64, generator=gen)
    return x.to(dtype)


def _labels(b, c, spatial, gen, absent=None):
    choices = [k for k in range(c) if k != absent] or [0]
    idx = torch.randint(0, len(choices), (b, *spatial), generator=gen)
    return torch.tensor(choices)[idx]


def _target(kind, labels, c, gen):
    """kind: 'label1' (B, 1, ...) int64, 'label1f' float, 'label1u8' uint8, 'label' (B, ...),
    'onehot' float one-hot, 'onehotb' bool one-hot, 'soft' soft float (x's shape)."""
    if kind == "label1":
        return labels.unsqueeze(1)
    if kind == "label1f":
        return labels.unsqueeze(1).float()
    if kind == "label1u8":
        return labels.unsqueeze(1).to(torch.uint8)
    if kind == "label":
        return labels
    onehot = torch.nn.functional.one_hot(labels.clamp(0, c - 1), c).movedim(-1, 1)
    if kind == "onehot":
        return onehot.float()
    if kind == "onehotb":
        return onehot.bool()
    if kind == "soft":
        return torch.rand(onehot.shape, generator=gen)
    raise AssertionError(kind)


# ---------------------------------------------------------------------------
# The sweep: each case is drawn from its own seed; its id names the configuration.
# ---------------------------------------------------------------------------

KINDS = ["dice", "memeff", "dcce", "dcbce", "deepsup"]
CASES_PER_KIND = 24


def _draw(kind, index):
    rng = random.Random(f"{kind}-{index}")
    cfg = {
        "kind": kind,
        "seed": 1000 * KINDS.index(kind) + index,
        "dtype": ("f32", "f64")[index % 2],  # every kind sees every dtype x dimensionality
        "dim": (2, 3)[(index // 2) % 2],
        "batch": rng.choice([1, 2, 3]),
        "classes": rng.choice([2, 3, 5]),
        "batch_dice": rng.random() < 0.5,
        "do_bg": rng.random() < 0.5,
        "smooth": rng.choice([1e-5, 1e-5, 1.0, 0.0]),
    }
    if kind in ("dice", "memeff"):
        cfg["nonlin"] = rng.choice(["nnsoftmax", "nnsoftmax", "oursoftmax", "sigmoid", "sigmoid", "none", "custom"])
        cfg["target"] = rng.choice(["label1", "label1", "label1f", "label", "onehot", "onehotb", "soft"])
        cfg["mask"] = rng.choice([None, None, None, "bool", "float"])
        if kind == "dice":
            cfg["clip_tp"] = rng.choice([None, None, 0.5, 30.0])
    elif kind in ("dcce", "deepsup"):
        cfg["dice_class"] = rng.choice(["memeff", "memeff", "soft", "ours"])
        cfg["target"] = rng.choice(["label1", "label1", "label1f", "label1u8", "onehot"])
        cfg["ignore"] = None if cfg["target"] == "onehot" else rng.choice([None, "out", "in"])
        cfg["weights"] = rng.choice([(1, 1), (1, 1), (0.5, 2.0), (0, 1), (1, 0)])
        cfg["ce"] = rng.choice(["none", "none", "weight", "smoothing"])
        if cfg["dice_class"] == "soft":
            cfg["clip_tp"] = rng.choice([None, 0.5])
        if kind == "deepsup":
            cfg["target"] = rng.choice(["label1", "label1f"])
    elif kind == "dcbce":
        cfg["dice_class"] = rng.choice(["memeff", "memeff", "soft"])
        cfg["target"] = rng.choice(["onehot", "onehotb", "regionu8", "soft"])
        cfg["use_ignore"] = rng.random() < 0.35
        cfg["weights"] = rng.choice([(1, 1), (1, 1), (0.5, 2.0), (0, 1)])
        cfg["bce"] = rng.choice(["none", "none", "pos_weight", "sum"])
    return cfg


def _case_id(cfg):
    parts = [cfg["kind"]]
    for key in ("dice_class", "nonlin", "target", "mask", "ignore", "ce", "bce"):
        if cfg.get(key) is not None:
            parts.append(f"{key}={cfg[key]}")
    if cfg.get("use_ignore"):
        parts.append("use_ignore")
    if cfg.get("clip_tp") is not None:
        parts.append(f"clip={cfg['clip_tp']}")
    if "weights" in cfg:
        parts.append("w={}/{}".format(*cfg["weights"]))
    parts += [
        f"bd={int(cfg['batch_dice'])}", f"bg={int(cfg['do_bg'])}", f"s={cfg['smooth']:g}",
        cfg["dtype"], f"{cfg['dim']}d", f"B{cfg['batch']}C{cfg['classes']}",
    ]
    return "-".join(parts)


CASES = [_draw(kind, i) for kind in KINDS for i in range(CASES_PER_KIND)]


def _dice_kwargs(cfg):
    kw = {"batch_dice": cfg["batch_dice"], "do_bg": cfg["do_bg"], "smooth": cfg["smooth"], "ddp": False}
    if cfg.get("clip_tp") is not None:
        kw["clip_tp"] = cfg["clip_tp"]
    return kw


def _dice_classes(name):
    return {
        "memeff": (nn_dice.MemoryEfficientSoftDiceLoss, nn_dice.MemoryEfficientSoftDiceLoss),
        "soft": (nn_dice.SoftDiceLoss, nn_dice.SoftDiceLoss),
        "ours": (nn_dice.MemoryEfficientSoftDiceLoss, fnn.MemoryEfficientSoftDiceLoss),
    }[name]


def _spatial(cfg, rng_gen, scale=1):
    if cfg["dim"] == 2:
        return (9 * scale, 11 * scale)
    return (5 * scale, 6 * scale, 7 * scale)


@pytest.mark.parametrize("cfg", CASES, ids=[_case_id(c) for c in CASES])
def test_sweep_against_nnunet(cfg):
    gen = torch.Generator().manual_seed(cfg["seed"])
    dtype = {"f32": torch.float32, "f64": torch.float64}[cfg["dtype"]]
    b, c = cfg["batch"], cfg["classes"]
    spatial = _spatial(cfg, gen)
    shape = (b, c, *spatial)
    kind = cfg["kind"]
    tag = _case_id(cfg)

    if kind in ("dice", "memeff"):
        nonlin = NONLINS[cfg["nonlin"]]
        x = _logits(shape, dtype, cfg["nonlin"], gen)
        absent = 0 if torch.rand((), generator=gen) < 0.3 else None  # a class missing from the target
        y = _target(cfg["target"], _labels(b, c, spatial, gen, absent), c, gen)
        kwargs = {}
        if cfg["mask"] is not None:
            mask = torch.rand((b, 1, *spatial), generator=gen) < 0.7
            kwargs["loss_mask"] = mask if cfg["mask"] == "bool" else mask * torch.rand(mask.shape, generator=gen)
        name = "SoftDiceLoss" if kind == "dice" else "MemoryEfficientSoftDiceLoss"
        kw = dict(_dice_kwargs(cfg), apply_nonlin=nonlin)
        ref = _loss_and_grad(getattr(nn_dice, name)(**kw), x, y, **kwargs)
        ours = _loss_and_grad(getattr(fnn, name)(**kw), x, y, **kwargs)
        _compare(ref, ours, tag, dtype)
        return

    if kind == "dcbce":
        x = _logits(shape, dtype, "sigmoid", gen)
        channels = c + 1 if cfg["use_ignore"] else c
        regions = torch.rand((b, channels, *spatial), generator=gen) < 0.4
        if cfg["use_ignore"]:
            regions[:, :-1] &= ~regions[:, -1:]  # ignored positions carry no region
        y = {
            "onehot": regions.float(),
            "onehotb": regions,
            "regionu8": regions.to(torch.uint8),
            "soft": torch.where(regions, torch.rand(regions.shape, generator=gen), 0.0),
        }[cfg["target"]]
        if cfg["use_ignore"] and cfg["target"] == "soft":
            y[:, -1:] = regions[:, -1:].float()
        bce = {"none": {}, "pos_weight": {"pos_weight": torch.rand((c, *[1] * cfg["dim"]), generator=gen) + 0.5},
               "sum": {"reduction": "sum"}}[cfg["bce"]]
        if cfg["use_ignore"]:
            bce = {k: v for k, v in bce.items() if k != "reduction"}
        theirs_cls, ours_cls = _dice_classes(cfg["dice_class"])
        wce, wdc = cfg["weights"]
        ref = _loss_and_grad(
            nn_compound.DC_and_BCE_loss(dict(bce), _dice_kwargs(cfg), wce, wdc, cfg["use_ignore"], theirs_cls), x, y
        )
        ours = _loss_and_grad(
            fnn.DC_and_BCE_loss(dict(bce), _dice_kwargs(cfg), wce, wdc, cfg["use_ignore"], ours_cls), x, y
        )
        _compare(ref, ours, tag, dtype)
        return

    # DC_and_CE_loss, alone or under deep supervision
    ignore = {None: None, "out": c, "in": 1}[cfg["ignore"]]
    ce = {"none": {}, "weight": {"weight": torch.rand(c, generator=gen) + 0.5},
          "smoothing": {"label_smoothing": 0.1}}[cfg["ce"]]
    if cfg["ce"] == "weight" and dtype == torch.float64:
        ce["weight"] = ce["weight"].double()  # torch's CE needs the weight in the input dtype
    theirs_cls, ours_cls = _dice_classes(cfg["dice_class"])
    wce, wdc = cfg["weights"]
    dkw = _dice_kwargs(cfg)

    def make_pair():
        return (nn_compound.DC_and_CE_loss(dict(dkw), dict(ce), wce, wdc, ignore, theirs_cls),
                fnn.DC_and_CE_loss(dict(dkw), dict(ce), wce, wdc, ignore, ours_cls))

    def target_for(spatial_here):
        labels = _labels(b, c, spatial_here, gen)
        if ignore is not None:
            drop = torch.rand(labels.shape, generator=gen) < 0.25
            labels = labels.masked_fill(drop, ignore)
            if b > 1 and torch.rand((), generator=gen) < 0.3:
                labels[0] = ignore  # a fully ignored sample
        return _target(cfg["target"], labels, c, gen)

    theirs, ours = make_pair()
    if kind == "dcce":
        x = _logits(shape, dtype, "softmax", gen)
        y = target_for(spatial)
        _compare(_loss_and_grad(theirs, x, y), _loss_and_grad(ours, x, y), tag, dtype)
        return

    # Deep supervision as nnU-Net's trainer builds it: weights 1, 1/2, 1/4 normalised, the last one 0.
    scales = [1, 2, 4]
    xs, ys = [], []
    for s in scales:
        sp = tuple(max(1, n // s) for n in spatial)
        xs.append(_logits((b, c, *sp), dtype, "softmax", gen))
        ys.append(target_for(sp))
    w = [1 / (2 ** i) for i in range(len(scales))]
    w[-1] = 0
    w = [v / sum(w) for v in w]
    ref = _loss_and_grads_ds(nn_ds.DeepSupervisionWrapper(theirs, w), xs, ys)
    got = _loss_and_grads_ds(fnn.DeepSupervisionWrapper(ours, w), xs, ys)
    # The last output has weight 0: no gradient reaches it in either.
    assert ref[1][-1] is None and got[1][-1] is None, tag
    _compare((ref[0], ref[1][:-1]), (got[0], got[1][:-1]), tag, dtype)


def test_sweep_covers_the_configurations():
    """The sweep reaches every kind x dtype x dimensionality, every target kind and the fused/eager branches."""
    seen = {(c["kind"], c["dtype"], c["dim"]) for c in CASES}
    assert seen == {(k, d, n) for k in KINDS for d in ("f32", "f64") for n in (2, 3)}
    dice_targets = {c["target"] for c in CASES if c["kind"] in ("dice", "memeff")}
    assert dice_targets == {"label1", "label1f", "label", "onehot", "onehotb", "soft"}
    assert {c["nonlin"] for c in CASES if "nonlin" in c} == set(NONLINS)
    assert {c["ignore"] for c in CASES if c["kind"] == "dcce"} == {None, "out", "in"}
    assert any(c.get("mask") for c in CASES) and any(c.get("use_ignore") for c in CASES)
    assert any(c.get("clip_tp") is not None for c in CASES)
    assert {c["dice_class"] for c in CASES if c["kind"] == "dcce"} == {"memeff", "soft", "ours"}


# ---------------------------------------------------------------------------
# The fused paths are taken (one op call, Dice and CE together) where the docstring says
# ---------------------------------------------------------------------------


@pytest.fixture
def op_calls(monkeypatch):
    calls = []
    real = fastdice._ops.dice_stats

    def counting(x, y, activation, full_stats=False, ignore_index=None, pixel_loss="none", *rest):
        calls.append({"activation": activation, "ignore_index": ignore_index, "pixel_loss": pixel_loss,
                      "target_dtype": y.dtype, "target_shape": tuple(y.shape)})
        return real(x, y, activation, full_stats, ignore_index, pixel_loss, *rest)

    monkeypatch.setattr(fastdice._ops, "dice_stats", counting)
    return calls


def _trainer_dcce(ignore_label=None, batch_dice=True, ours=True):
    mod = fnn if ours else nn_compound
    return mod.DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                              weight_ce=1, weight_dice=1, ignore_label=ignore_label,
                              dice_class=nn_dice.MemoryEfficientSoftDiceLoss)


@pytest.mark.parametrize("target_dtype", [torch.int64, torch.float32, torch.int16])
def test_trainer_dc_and_ce_is_one_fused_pass(op_calls, target_dtype):
    """nnU-Net's trainer configuration (MemoryEfficientSoftDiceLoss from nnunetv2, ignore label):
    one op call carrying Dice and CE; the ignore label is the op's ignore_index."""
    x = torch.randn(2, 4, 8, 9)
    y = torch.randint(0, 5, (2, 1, 8, 9)).to(target_dtype)  # 4 = ignore
    ref = _loss_and_grad(_trainer_dcce(4, ours=False), x, y)
    got = _loss_and_grad(_trainer_dcce(4), x, y)
    assert len(op_calls) == 1, op_calls
    assert op_calls[0]["pixel_loss"] == "cross_entropy" and op_calls[0]["ignore_index"] == 4
    assert op_calls[0]["activation"] == "softmax" and op_calls[0]["target_shape"] == (2, 1, 8, 9)
    assert op_calls[0]["target_dtype"] != torch.float32  # read as a label map, never one-hot
    _compare(ref, got, "trainer dcce", torch.float32)


def test_trainer_dc_and_bce_is_one_fused_pass(op_calls):
    x = torch.randn(2, 3, 8, 9)
    y = torch.rand(2, 3, 8, 9) < 0.3
    kw = {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False}
    ref = _loss_and_grad(nn_compound.DC_and_BCE_loss({}, dict(kw)), x, y)
    got = _loss_and_grad(fnn.DC_and_BCE_loss({}, dict(kw)), x, y)
    assert [c["pixel_loss"] for c in op_calls] == ["binary_cross_entropy"]
    assert op_calls[0]["target_dtype"] == torch.bool  # read in place
    _compare(ref, got, "trainer dcbce", torch.float32)


def test_compiled_dc_attribute_stays_fused(op_calls):
    """The trainer replaces loss.dc by torch.compile(loss.dc): ours is unwrapped (no compilation runs)."""
    loss = _trainer_dcce(None)
    loss.dc = torch.compile(loss.dc)
    x, y = torch.randn(2, 3, 6, 7), torch.randint(0, 3, (2, 1, 6, 7))
    got = _loss_and_grad(loss, x, y)
    assert [c["pixel_loss"] for c in op_calls] == ["cross_entropy"]
    _compare(_loss_and_grad(_trainer_dcce(None, ours=False), x, y), got, "compiled dc", torch.float32)


@pytest.mark.parametrize("nonlin", ["nnsoftmax", "oursoftmax", "sigmoid", "none"])
def test_known_nonlins_are_fused(op_calls, nonlin):
    x = _logits((2, 3, 5, 6), torch.float32, nonlin, None)
    y = torch.randint(0, 3, (2, 1, 5, 6))
    fnn.MemoryEfficientSoftDiceLoss(NONLINS[nonlin], ddp=False)(x, y)
    # Without a nonlinearity nnU-Net takes any values: the op's unchecked 'identity'.
    expected = {"nnsoftmax": "softmax", "oursoftmax": "softmax", "sigmoid": "sigmoid", "none": "identity"}[nonlin]
    assert [c["activation"] for c in op_calls] == [expected]


def test_unknown_nonlin_and_float_loss_mask_fall_back(op_calls):
    """A floating loss_mask may hold weights (nnU-Net multiplies by it): eager; a bool one is the op's mask."""
    x, y = torch.randn(2, 3, 5, 6), torch.randint(0, 3, (2, 1, 5, 6))
    fnn.SoftDiceLoss(_custom_nonlin, ddp=False)(x, y)
    fnn.SoftDiceLoss(nn_softmax, ddp=False)(x, y, loss_mask=torch.ones(2, 1, 5, 6))
    assert op_calls == []
    fnn.SoftDiceLoss(nn_softmax, ddp=False)(x, y, loss_mask=torch.ones(2, 1, 5, 6, dtype=torch.bool))
    assert len(op_calls) == 1


# ---------------------------------------------------------------------------
# Edge cases against nnU-Net
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["SoftDiceLoss", "MemoryEfficientSoftDiceLoss"])
def test_empty_class_with_zero_smooth_takes_nnunets_clamp(cls):
    """Probabilities and target both 0 for a class, smooth 0: nnU-Net's 1e-8 floor gives dc = 0, not NaN."""
    x = 0.1 + 0.8 * torch.rand(2, 3, 4, 5, dtype=torch.float64)
    x[:, 2] = 0
    y = torch.randint(0, 2, (2, 1, 4, 5))
    kw = dict(apply_nonlin=None, batch_dice=False, do_bg=True, smooth=0.0, ddp=False)
    ref = _loss_and_grad(getattr(nn_dice, cls)(**kw), x, y)
    got = _loss_and_grad(getattr(fnn, cls)(**kw), x, y)
    _compare(ref, got, f"{cls} empty class", torch.float64)


def test_all_positions_ignored_gives_dice_only():
    x = torch.randn(2, 3, 4, 5)
    y = torch.full((2, 1, 4, 5), 3)
    for bd in (False, True):
        ref = _loss_and_grad(_trainer_dcce(3, batch_dice=bd, ours=False), x, y)
        got = _loss_and_grad(_trainer_dcce(3, batch_dice=bd), x, y)
        assert_close(got[0], ref[0], torch.float32, "all ignored loss")
        assert_close(got[1], ref[1], torch.float32, "all ignored grad")
        assert torch.all(got[1] == 0)


def test_attributes_match_nnunet():
    for cls in ("SoftDiceLoss", "MemoryEfficientSoftDiceLoss"):
        kw = dict(apply_nonlin=nn_softmax, batch_dice=True, do_bg=False, smooth=0.5, ddp=False)
        theirs, ours = getattr(nn_dice, cls)(**kw), getattr(fnn, cls)(**kw)
        for name in ("apply_nonlin", "batch_dice", "do_bg", "smooth", "ddp"):
            assert getattr(ours, name) == getattr(theirs, name), (cls, name)
    assert fnn.SoftDiceLoss(clip_tp=0.3).clip_tp == nn_dice.SoftDiceLoss(clip_tp=0.3).clip_tp == 0.3
    theirs, ours = _trainer_dcce(7, ours=False), _trainer_dcce(7)
    for name in ("weight_ce", "weight_dice", "ignore_label"):
        assert getattr(ours, name) == getattr(theirs, name)
    assert ours.ce.ignore_index == theirs.ce.ignore_index == 7
    assert isinstance(ours.dc, fnn.MemoryEfficientSoftDiceLoss) and ours.dc.do_bg is False
    b_theirs = nn_compound.DC_and_BCE_loss({}, {}, use_ignore_label=True)
    b_ours = fnn.DC_and_BCE_loss({}, {}, use_ignore_label=True)
    assert b_ours.ce.reduction == b_theirs.ce.reduction == "none" and b_ours.use_ignore_label
    assert b_ours.dc.apply_nonlin is torch.sigmoid


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_label_out_of_range_is_runtime_and_value_error():
    x, y = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 1, 4, 5))
    y[1, 0, 2, 2] = 3
    with pytest.raises(RuntimeError):
        _trainer_dcce(None, ours=False)(x, y)
    with pytest.raises(fnn.LabelOutOfRangeError, match="outside") as e:
        _trainer_dcce(None)(x, y)
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, ValueError)


def test_ignore_label_with_one_hot_target_asserts_like_nnunet():
    x = torch.randn(2, 3, 4, 5)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 4, 5)), 3).movedim(-1, 1).float()
    for loss in (_trainer_dcce(3, ours=False), _trainer_dcce(3)):
        with pytest.raises(AssertionError, match="ignore label"):
            loss(x, y)


def test_do_bg_false_with_one_channel_raises():
    with pytest.raises(ValueError, match="do_bg=False needs at least 2 channels"):
        fnn.MemoryEfficientSoftDiceLoss(torch.sigmoid, do_bg=False, ddp=False)(
            torch.randn(2, 1, 4, 5), torch.randint(0, 2, (2, 1, 4, 5)))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(TypeError, match="must be tensors"):
        fnn.SoftDiceLoss(ddp=False)([1.0], torch.zeros(1))
    with pytest.raises(TypeError, match="smooth must be a number"):
        fnn.SoftDiceLoss(smooth="1")
    with pytest.raises(AssertionError, match="At least one weight factor"):
        fnn.DeepSupervisionWrapper(_trainer_dcce(), [0, 0])
    with pytest.raises(AssertionError, match="tuple or list"):
        fnn.DeepSupervisionWrapper(_trainer_dcce(), [1, 0.5])(torch.zeros(1), torch.zeros(1))
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"needs a target of shape \(B, 1"):
        _trainer_dcce()(x, torch.randint(0, 3, (2, 4, 5)))
    with pytest.raises(ValueError, match="target"):  # shape mismatch: neither dense nor a label map
        fnn.MemoryEfficientSoftDiceLoss(nn_softmax, ddp=False)(x, torch.randint(0, 3, (2, 2, 4, 5)))


def test_deep_supervision_without_weights_weighs_all_outputs_by_one():
    loss = _trainer_dcce()
    xs = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    ys = [torch.randint(0, 3, (2, 1, 8, 8)), torch.randint(0, 3, (2, 1, 4, 4))]
    got = fnn.DeepSupervisionWrapper(loss)(xs, ys)
    ref = nn_ds.DeepSupervisionWrapper(_trainer_dcce(ours=False), [1, 1])(xs, ys)
    assert_close(got, ref, torch.float32, "ds weights None")


# ---------------------------------------------------------------------------
# DDP: batch Dice over 2 gloo processes, statistics all-gathered with gradient
# ---------------------------------------------------------------------------

DDP_CONFIGS = {
    "memeff": lambda m: m.MemoryEfficientSoftDiceLoss(
        apply_nonlin=NONLINS["nnsoftmax"], batch_dice=True, do_bg=False, smooth=1e-5, ddp=True),
    "soft_clip": lambda m: m.SoftDiceLoss(
        apply_nonlin=NONLINS["nnsoftmax"], batch_dice=True, do_bg=True, smooth=1e-5, ddp=True, clip_tp=0.5),
    "dcce_ignore": lambda m: m.DC_and_CE_loss(
        {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": True}, {}, ignore_label=3,
        dice_class=m.MemoryEfficientSoftDiceLoss),
    "dcbce": lambda m: m.DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": True}),
}


def _ddp_worker(rank, world, store_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=world)
    try:
        from nnunetv2.training.loss import compound_losses, dice

        class Theirs:  # nnU-Net's classes under the names the configs use
            MemoryEfficientSoftDiceLoss = dice.MemoryEfficientSoftDiceLoss
            SoftDiceLoss = dice.SoftDiceLoss
            DC_and_CE_loss = compound_losses.DC_and_CE_loss
            DC_and_BCE_loss = compound_losses.DC_and_BCE_loss

        gen = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
        out = {}
        for name, make in DDP_CONFIGS.items():
            for dtype in (torch.float32, torch.float64):
                x = (3 * torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64)).to(dtype)
                if name == "dcbce":
                    y = torch.rand(2, 3, 6, 7, generator=gen) < 0.4
                else:
                    y = torch.randint(0, 4 if name == "dcce_ignore" else 3, (2, 1, 6, 7), generator=gen)
                out[(name, str(dtype))] = (_loss_and_grad(make(Theirs), x, y), _loss_and_grad(make(fnn), x, y))
        torch.save(out, os.path.join(store_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_batch_dice_matches_nnunet_gloo(tmp_path):
    import torch.multiprocessing as mp

    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path)), nprocs=world, join=True)
    losses = {}
    for rank in range(world):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(out) == 2 * len(DDP_CONFIGS)
        for (name, dtype), (ref, got) in out.items():
            _compare(ref, got, f"ddp rank {rank} {name} {dtype}", torch.float32)
            losses.setdefault((name, dtype), []).append(float(got[0]))
    for key, values in losses.items():
        if key[0] in ("memeff", "soft_clip"):  # the Dice of the global batch: the same on every rank
            assert values[0] == pytest.approx(values[1], rel=1e-6), key
