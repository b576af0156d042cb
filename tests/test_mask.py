"""The per-position loss mask, read by the op in place in the same pass: a
masked-out position adds to no statistic (pixel-loss sums included) and gets
exactly zero gradient, for dense targets and label maps alike. Oracles: the
statistics written out in torch over the kept positions, fastdice.reference
on the masked data, and nnU-Net / MONAI as installed packages."""

import random

import pytest
import torch
import torch.nn.functional as F

import fastdice
from fastdice import _ops, reference

from conftest import DEVICES, assert_close, written_stats


def oracle_stats(x, target, activation, ignore_index, mask, pixel_loss="none", gamma=0.0):
    """[B, C, 11] written out: sums over positions that are kept (mask != 0) and not ignored."""
    x = x.double()
    p, t, valid = reference.probabilities_and_target(x, target, activation if activation != "identity" else "none",
                                                     ignore_index)
    m = mask.reshape(x.shape[0], 1, *x.shape[2:]).double() if mask is not None else torch.ones_like(x[:, :1])
    return written_stats(x, p, t, valid.double() * m, pixel_loss, gamma)


def random_mask(shape, kind, device, generator=None):
    """(B, *spatial) keep-mask of about 70 % ones as bool / uint8 / float32 / float64; 'channel': (B, 1, *spatial)."""
    b, _, *spatial = shape
    keep = torch.rand((b, *spatial), generator=generator) < 0.7
    keep = keep.to(device)
    if kind == "bool":
        return keep
    if kind == "uint8":
        return keep.to(torch.uint8)
    if kind == "float64":
        return keep.double()
    if kind == "channel":
        return keep.unsqueeze(1).float()
    if kind == "transposed":  # a strided view: read in place
        return keep.transpose(-1, -2).contiguous().transpose(-1, -2)
    return keep.float()


CASES = []
_rng = random.Random(20261130)
for _ in range(36):
    act = _rng.choice(["none", "sigmoid", "softmax"])
    pixel = "none"
    if act == "softmax":
        pixel = _rng.choice(["none", "cross_entropy", "binary_cross_entropy"])
    elif act == "sigmoid":
        pixel = _rng.choice(["none", "binary_cross_entropy"])
    CASES.append(dict(
        activation=act, pixel_loss=pixel, gamma=_rng.choice([0.0, 2.0]) if pixel != "none" else 0.0,
        target=_rng.choice(["dense", "label", "label_ignore"]), full=_rng.random() < 0.5,
        mask=_rng.choice(["bool", "uint8", "float32", "float64", "channel", "transposed"]),
        shape=_rng.choice([(2, 3, 7, 9), (3, 4, 600), (2, 2, 5, 6, 7), (1, 5, 4100)]),
        dtype=_rng.choice([torch.float32, torch.float64]),
    ))


def make_inputs(case, device, generator):
    shape = case["shape"]
    if case["activation"] == "none":
        x = torch.rand(shape, dtype=torch.float64, generator=generator)
    else:
        x = 3 * torch.randn(shape, dtype=torch.float64, generator=generator)
    x = x.to(device=device, dtype=case["dtype"])
    ignore = 7 if case["target"] == "label_ignore" else None
    if case["target"] == "dense":
        t = torch.rand(shape, generator=generator).to(device)
    else:
        t = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
        if ignore is not None:
            t[torch.rand(t.shape, generator=generator) < 0.2] = ignore
        t = t.to(device)
    mask_kind = case["mask"] if len(shape) == 4 or case["mask"] != "transposed" else "bool"
    return x, t, ignore, random_mask(shape, mask_kind, device, generator)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=lambda i: "-".join(
    f"{v}" for k, v in CASES[i].items() if k != "dtype") + f"-{str(CASES[i]['dtype'])[6:]}")
def test_masked_stats_and_gradients_match_the_written_sums(case, device):
    c = CASES[case]
    g = torch.Generator().manual_seed(case)
    x, t, ignore, mask = make_inputs(c, device, g)
    args = (c["activation"], c["full"], ignore, c["pixel_loss"], c["gamma"])
    xg = x.clone().requires_grad_(True)
    stats = _ops.dice_stats(xg, t, *args, mask=mask)
    expected = oracle_stats(x, t, c["activation"], ignore, mask, c["pixel_loss"], c["gamma"])
    columns = list(range(3)) + (list(range(3, 9)) if c["full"] else []) + ([9, 10] if c["pixel_loss"] != "none" else [])
    assert_close(stats[..., columns], expected[..., columns], c["dtype"], f"stats {c}")
    grad_stats = torch.randn(stats.shape, generator=g, dtype=torch.float64).to(device=device, dtype=stats.dtype)
    stats.backward(grad_stats)
    xr = x.detach().double().requires_grad_(True)
    oracle = oracle_stats(xr, t, c["activation"], ignore, mask, c["pixel_loss"], c["gamma"])
    (oracle[..., columns] * grad_stats.double()[..., columns]).sum().backward()
    assert_close(xg.grad, xr.grad, c["dtype"], f"grad {c}")
    dropped = (mask.reshape(x.shape[0], -1) == 0)
    assert (xg.grad.reshape(x.shape[0], x.shape[1], -1).transpose(0, 1)[:, dropped] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation,pixel_loss", [("none", "none"), ("softmax", "cross_entropy"),
                                                   ("sigmoid", "binary_cross_entropy")])
def test_gradcheck_with_mask(activation, pixel_loss, device):
    x = 2 * torch.randn(2, 3, 6, 5, dtype=torch.float64, device=device)
    if activation == "none":
        x = 0.05 + 0.9 * torch.rand_like(x)
    t = (0.05 + 0.9 * torch.rand(x.shape, dtype=torch.float64, device=device)).requires_grad_(True)
    mask = torch.rand(2, 6, 5, device=device) < 0.6
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: _ops.dice_stats(a, b, activation, True, None, pixel_loss, 0.0, mask), (x, t), eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("target_kind", ["dense", "label"])
def test_masked_positions_never_read_as_numbers(target_kind, device):
    """Masked-out positions: NaN logits and out-of-range targets there change nothing."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=device)
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool, device=device)
    mask[1, 0, 2:5, 3:6] = False
    if target_kind == "dense":
        t = torch.rand(2, 3, 8, 8, dtype=torch.float64, device=device)
        t_bad = t.clone()
        t_bad[1, :, 2:5, 3:6] = 255.0  # a fill value in an unannotated region
    else:
        t = torch.randint(0, 3, (2, 8, 8), device=device)
        t_bad = t.clone()
        t_bad[1, 2:5, 3:6] = 0
    x_bad = x.clone()
    x_bad[1, :, 2:5, 3:6] = float("nan")
    x_bad.requires_grad_(True)
    loss_fn = fastdice.DiceCELoss(activation="softmax", pooling="sample")
    loss = loss_fn(x_bad, t_bad, mask=mask)
    loss.backward()
    x_ok = x.clone().requires_grad_(True)
    expected = loss_fn(x_ok, t, mask=mask)
    expected.backward()
    assert_close(loss, expected, torch.float64, "masked NaN logits")
    assert_close(x_bad.grad, x_ok.grad, torch.float64, "gradient")
    assert (x_bad.grad[1, :, 2:5, 3:6] == 0).all()


NATIVE = [
    ("DiceLoss", dict(activation="softmax", pooling="sample")),
    ("DiceLoss", dict(activation="sigmoid", squared=True, pooling="batch", include_background=False)),
    ("DiceLoss", dict(soft_label=True, jaccard=True)),
    ("TverskyLoss", dict(activation="softmax", alpha=0.3, beta=0.7)),
    ("GeneralizedDiceLoss", dict(activation="softmax", reduction="none")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,kw", NATIVE, ids=lambda v: str(v))
def test_native_losses_with_a_mask_equal_the_loss_of_the_masked_data(name, kw, device):
    """Multiplying p and t by a 0/1 mask (after the activation) removes the
    masked positions from every Dice sum: the oracle is the unmasked loss of
    those products, computed by fastdice.reference / the class itself on
    probabilities."""
    shape = (2, 3, 7, 6)
    x = 2 * torch.randn(shape, dtype=torch.float64, device=device)
    if kw.get("activation", "none") == "none":
        x = torch.rand(shape, dtype=torch.float64, device=device)
    t = torch.rand(shape, dtype=torch.float64, device=device)
    mask = torch.rand(2, 7, 6, device=device) < 0.6
    xg = x.clone().requires_grad_(True)
    loss_fn = getattr(fastdice, name)(**kw)
    loss = loss_fn(xg, t, mask=mask)
    grad_out = torch.rand_like(loss) + 0.5
    loss.backward(grad_out)
    act = kw.get("activation", "none")
    xr = x.clone().requires_grad_(True)
    p = {"softmax": lambda v: v.softmax(1), "sigmoid": torch.sigmoid, "none": lambda v: v}[act](xr)
    m = mask.unsqueeze(1).double()
    kw_none = dict(kw, activation="none")
    if name == "DiceLoss":
        expected = reference.dice_loss(p * m, t * m, **kw_none)
    else:
        expected = getattr(fastdice, name)(**kw_none)(p * m, t * m)
    expected.backward(grad_out)
    assert_close(loss, expected, torch.float64, f"{name} loss")
    assert_close(xg.grad, xr.grad, torch.float64, f"{name} grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("target_kind", ["dense", "label"])
def test_dice_ce_mean_is_over_the_kept_positions(target_kind, activation, device):
    shape = (2, 3, 6, 7)
    x = (2 * torch.randn(shape, dtype=torch.float64, device=device)).requires_grad_(True)
    if target_kind == "dense":
        t = torch.rand(shape, dtype=torch.float64, device=device)
        onehot = t
    else:
        t = torch.randint(0, 3, (2, 6, 7), device=device)
        onehot = F.one_hot(t, 3).movedim(-1, 1).double()
    mask = torch.rand(2, 6, 7, device=device) < 0.6
    loss = fastdice.DiceCELoss(activation=activation, lambda_dice=0.0, lambda_ce=1.0)(x, t, mask=mask)
    loss.backward()
    xr = x.detach().clone().requires_grad_(True)
    m = mask.unsqueeze(1).double()
    if activation == "softmax":
        per_position = -(onehot * xr.log_softmax(1)).sum(1, keepdim=True)
        expected = (per_position * m).sum() / m.sum()
    else:
        bce = F.binary_cross_entropy_with_logits(xr, onehot, reduction="none")
        expected = (bce * m).sum() / (m.sum() * 3)
    expected.backward()
    assert_close(loss, expected, torch.float64, "ce over kept positions")
    assert_close(x.grad, xr.grad, torch.float64, "ce grad")


@pytest.mark.parametrize(
    "mask,error,match",
    [
        (torch.ones(2, 3, 4, 5, dtype=torch.bool), ValueError, r"mask must have shape"),
        (torch.ones(2, 5, 4, dtype=torch.bool), ValueError, r"mask must have shape"),
        (torch.ones(2, 4, 5, dtype=torch.int64), TypeError, r"mask must be bool, uint8 or floating"),
        (torch.full((2, 4, 5), 0.5), ValueError, r"mask values must be 0 or 1; got 0.5 at sample 0, spatial position"),
        (torch.full((2, 4, 5), 255, dtype=torch.uint8), ValueError, r"mask values must be 0 or 1"),
        ("not a tensor", TypeError, r"mask must be a tensor"),
    ],
    ids=["class-axis", "spatial-shape", "int64", "fraction", "uint8-255", "not-a-tensor"],
)
def test_bad_masks_raise(mask, error, match):
    x = torch.randn(2, 3, 4, 5)
    t = torch.randint(0, 3, (2, 4, 5))
    with pytest.raises(error, match=match):
        fastdice.DiceLoss(activation="softmax")(x, t, mask=mask)


def test_compile_fullgraph_with_mask():
    loss_fn = fastdice.DiceCELoss(activation="softmax")
    compiled = torch.compile(loss_fn, fullgraph=True, dynamic=True, backend="aot_eager")
    for b in (2, 3):
        x = torch.randn(b, 3, 6, 5, requires_grad=True)
        t = torch.randint(0, 3, (b, 6, 5))
        mask = torch.rand(b, 1, 6, 5) < 0.6
        compiled(x, t, mask=mask).backward()
        g = x.grad.clone()
        x.grad = None
        loss_fn(x, t, mask=mask).backward()
        assert_close(g, x.grad, torch.float32, "compiled")


def test_opcheck_with_mask():
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    t = torch.rand(2, 3, 6, 5)
    mask = torch.rand(2, 1, 6, 5) < 0.5
    torch.library.opcheck(torch.ops.fastdice.dice_stats.default, (x, t, "softmax", True, None, "none", 0.0, mask))
    gs = torch.randn(2, 3, fastdice.NUM_STATS)
    torch.library.opcheck(torch.ops.fastdice.dice_stats_backward.default,
                          (gs, x.detach(), t, "softmax", True, None, "none", 0.0, True, mask))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", range(0, len(CASES), 3))
def test_cuda_mask_matches_cpu(case):
    c = CASES[case]
    g = torch.Generator().manual_seed(case)
    x, t, ignore, mask = make_inputs(c, "cpu", g)
    args = (c["activation"], c["full"], ignore, c["pixel_loss"], c["gamma"])
    for strategy in ("warp", "thread"):
        import os
        os.environ["FASTDICE_CUDA_FORWARD"] = strategy
        try:
            cpu = torch.ops.fastdice.dice_stats(x, t, *args, mask)
            gpu = torch.ops.fastdice.dice_stats(x.cuda(), t.cuda(), *args, mask.cuda())
        finally:
            os.environ.pop("FASTDICE_CUDA_FORWARD")
        assert_close(gpu.cpu(), cpu, c["dtype"], f"stats {strategy} {c}")
    gs = torch.randn_like(cpu)
    gc = torch.ops.fastdice.dice_stats_backward(gs, x, t, *args, False, mask)[0]
    gg = torch.ops.fastdice.dice_stats_backward(gs.cuda(), x.cuda(), t.cuda(), *args, False, mask.cuda())[0]
    assert_close(gg.cpu(), gc, c["dtype"], f"grad {c}")
    bad = torch.full_like(mask, 1, dtype=torch.float32)
    bad.view(-1)[3] = 0.5
    assert torch.isnan(torch.ops.fastdice.dice_stats(x.cuda(), t.cuda(), *args, bad.cuda())[0]).all()


# ---- compat: nnU-Net's loss_mask and ignore channel, MONAI's MaskedDiceLoss ----

@pytest.mark.parametrize("batch_dice", [False, True], ids=["sample", "batch"])
@pytest.mark.parametrize("name", ["SoftDiceLoss", "MemoryEfficientSoftDiceLoss"])
def test_nnunet_loss_mask_is_fused_and_equal(name, batch_dice, monkeypatch):
    nn_dice = pytest.importorskip("nnunetv2.training.loss.dice")
    from nnunetv2.utilities.helpers import softmax_helper_dim1
    from fastdice.compat import nnunet as fnn

    x0 = 2 * torch.randn(2, 4, 9, 8)
    y = torch.randint(0, 4, (2, 1, 9, 8))
    loss_mask = torch.rand(2, 1, 9, 8) < 0.7
    calls = []
    real = _ops.dice_stats
    monkeypatch.setattr(_ops, "dice_stats", lambda *a, **k: calls.append(k.get("mask", a[7] if len(a) > 7 else None))
                        or real(*a, **k))
    results = []
    for module, nonlin in ((getattr(fnn, name), fnn.softmax_helper_dim1), (getattr(nn_dice, name), softmax_helper_dim1)):
        x = x0.clone().requires_grad_(True)
        loss = module(apply_nonlin=nonlin, batch_dice=batch_dice, do_bg=False, smooth=1e-5, ddp=False)(
            x, y, loss_mask=loss_mask)
        (0.7 * loss).backward()
        results.append((loss.detach(), x.grad))
    assert len(calls) == 1 and calls[0].data_ptr() == loss_mask.data_ptr(), "one fused pass reading the mask"
    assert_close(results[0][0], results[1][0], torch.float32, f"{name} loss")
    assert_close(results[0][1], results[1][1], torch.float32, f"{name} grad")


@pytest.mark.parametrize("dice_class", ["SoftDiceLoss", "MemoryEfficientSoftDiceLoss"])
@pytest.mark.parametrize("batch_dice", [False, True], ids=["sample", "batch"])
def test_nnunet_dc_and_bce_ignore_channel_is_one_pass(dice_class, batch_dice, monkeypatch):
    nn_compound = pytest.importorskip("nnunetv2.training.loss.compound_losses")
    nn_dice = pytest.importorskip("nnunetv2.training.loss.dice")
    from fastdice.compat import nnunet as fnn

    x0 = 2 * torch.randn(2, 3, 10, 9)
    regions = torch.rand(2, 3, 10, 9) < 0.4
    ignore = torch.rand(2, 1, 10, 9) < 0.25
    target = torch.cat([regions, ignore], 1).to(torch.uint8)
    target[:, :3][ignore.expand(-1, 3, -1, -1)] = 1  # junk under the ignore channel
    calls = []
    real = _ops.dice_stats
    monkeypatch.setattr(_ops, "dice_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = []
    for mod, dice_mod in ((fnn, fnn), (nn_compound, nn_dice)):
        x = x0.clone().requires_grad_(True)
        loss_fn = mod.DC_and_BCE_loss({}, {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": False},
                                      use_ignore_label=True, dice_class=getattr(dice_mod, dice_class))
        loss = loss_fn(x, target)
        (0.7 * loss).backward()
        results.append((loss.detach(), x.grad))
    assert len(calls) == 1, "Dice and the masked BCE from one pass"
    assert_close(results[0][0], results[1][0], torch.float32, "loss")
    assert_close(results[0][1], results[1][1], torch.float32, "grad")


_mrng = random.Random(11)
MASKED_MONAI = []
for _ in range(16):
    kw = dict(include_background=_mrng.random() < 0.6, batch=_mrng.random() < 0.5,
              squared_pred=_mrng.random() < 0.3, jaccard=_mrng.random() < 0.3)
    act = _mrng.choice(["sigmoid", "softmax", "none"])
    if act != "none":
        kw[act] = True
    if _mrng.random() < 0.4:
        kw["to_onehot_y"] = True
    MASKED_MONAI.append((kw, _mrng.choice(["bool", "uint8", "float", "float_fraction"])))
MASKED_MONAI.append(({"other_act": torch.tanh}, "float"))
MASKED_MONAI.append(({"softmax": True}, "batch1"))


@pytest.mark.parametrize("case", range(len(MASKED_MONAI)), ids=lambda i: f"{MASKED_MONAI[i][0]}-{MASKED_MONAI[i][1]}")
def test_monai_masked_dice_loss(case):
    monai_losses = pytest.importorskip("monai.losses")
    from fastdice.compat import monai as fmonai

    kw, mask_kind = MASKED_MONAI[case]
    g = torch.Generator().manual_seed(case)
    shape = (2, 3, 6, 7)
    x0 = 2 * torch.randn(shape, dtype=torch.float64, generator=g)
    if not (kw.get("sigmoid") or kw.get("softmax") or "other_act" in kw):
        x0 = torch.rand(shape, dtype=torch.float64, generator=g)
    if kw.get("to_onehot_y"):
        t = torch.randint(0, 3, (2, 1, 6, 7), generator=g)
    else:
        t = (torch.rand(shape, generator=g) > 0.5).double()
    keep = torch.rand(2, 1, 6, 7, generator=g) < 0.7
    mask = {"bool": keep, "uint8": keep.to(torch.uint8), "float": keep.double(),
            "float_fraction": keep.double() * torch.rand(2, 1, 6, 7, dtype=torch.float64, generator=g),
            "batch1": keep[:1]}[mask_kind]
    results = []
    for module in (fmonai.MaskedDiceLoss, monai_losses.MaskedDiceLoss):
        x = x0.clone().requires_grad_(True)
        loss = module(**kw)(x, t, mask=mask)
        (0.7 * loss).backward()
        results.append((loss.detach(), x.grad))
    # MONAI's one-hot target is float32, so its squared sums carry float32 rounding.
    tol = torch.float32 if kw.get("to_onehot_y") else torch.float64
    assert_close(results[0][0], results[1][0], tol, "loss")
    assert_close(results[0][1], results[1][1], tol, "grad")


def test_monai_masked_dice_loss_is_fused_for_a_bool_mask(monkeypatch):
    from fastdice.compat import monai as fmonai

    calls = []
    real = _ops.dice_stats
    monkeypatch.setattr(_ops, "dice_stats", lambda *a, **k: calls.append(a[7] if len(a) > 7 else k.get("mask"))
                        or real(*a, **k))
    x = torch.randn(2, 3, 6, 7)
    t = torch.randint(0, 3, (2, 1, 6, 7))
    mask = torch.rand(2, 1, 6, 7) < 0.7
    fmonai.MaskedDiceLoss(softmax=True, to_onehot_y=True, include_background=False)(x, t, mask=mask)
    assert len(calls) == 1 and calls[0] is mask
    with pytest.warns(UserWarning, match="No mask value specified"):
        fmonai.MaskedDiceLoss(softmax=True)(x, torch.rand(2, 3, 6, 7))


@pytest.mark.parametrize("device", DEVICES)
def test_labels_out_of_range_where_masked_out_are_not_read(device):
    """Unannotated regions often hold a fill label (255, -100): where the mask drops them, the
    label is never classified; where it keeps them, the usual error."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=device)
    t = torch.randint(0, 3, (2, 8, 8), device=device)
    mask = torch.rand(2, 8, 8, device=device) < 0.7
    t_fill = torch.where(mask, t, torch.full_like(t, 255))
    t_fill[0][~mask[0]] = -100
    loss_fn = fastdice.DiceLoss(activation="softmax", pooling="sample")
    assert_close(loss_fn(x, t_fill, mask=mask), loss_fn(x, t, mask=mask), torch.float64, "fill labels")
    if device == "cpu":
        keep_bad = mask.clone()
        keep_bad[~mask] = True
        with pytest.raises(ValueError, match="target label"):
            loss_fn(x, t_fill, mask=keep_bad)


def test_monai_masked_dice_loss_with_fill_labels():
    monai_losses = pytest.importorskip("monai.losses")
    from fastdice.compat import monai as fmonai

    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 1, 6, 7))
    m = torch.rand(2, 1, 6, 7) < 0.7
    y[~m] = 255
    kw = dict(to_onehot_y=True, include_background=False, softmax=True)
    assert_close(fmonai.MaskedDiceLoss(**kw)(x, y, mask=m), monai_losses.MaskedDiceLoss(**kw)(x, y, mask=m),
                 torch.float64, "fill labels under the mask")


@pytest.mark.parametrize("kind", ["batch1", "per_class", "uint8_255", "float"])
def test_nnunet_loss_masks_it_multiplies_by_go_eager_and_match(kind):
    nn_dice = pytest.importorskip("nnunetv2.training.loss.dice")
    from nnunetv2.utilities.helpers import softmax_helper_dim1
    from fastdice.compat import nnunet as fnn

    x0 = 2 * torch.randn(2, 3, 6, 7)
    y = torch.randint(0, 3, (2, 1, 6, 7))
    keep = torch.rand(2, 1, 6, 7) < 0.7
    mask = {"batch1": keep[:1], "per_class": torch.rand(2, 3, 6, 7) < 0.7,
            "uint8_255": keep.to(torch.uint8) * 255, "float": keep.float() * 0.5}[kind]
    results = []
    for module, nonlin in ((fnn.MemoryEfficientSoftDiceLoss, fnn.softmax_helper_dim1),
                           (nn_dice.MemoryEfficientSoftDiceLoss, softmax_helper_dim1)):
        x = x0.clone().requires_grad_(True)
        loss = module(apply_nonlin=nonlin, batch_dice=True, do_bg=True, smooth=1e-5, ddp=False)(x, y, loss_mask=mask)
        loss.backward()
        results.append((loss.detach(), x.grad))
    assert_close(results[0][0], results[1][0], torch.float32, f"{kind} loss")
    assert_close(results[0][1], results[1][1], torch.float32, f"{kind} grad")
