"""fastdice.compat.smp against segmentation_models_pytorch 0.6 itself (the oracle):
loss values, input gradients (grad_output 0.7), output dtypes, attributes and errors."""

import random

import pytest
import torch

smp_losses = pytest.importorskip("segmentation_models_pytorch.losses")

import fastdice._ops  # noqa: E402
from fastdice.compat import smp as fsmp  # noqa: E402

from conftest import DEVICES, assert_close  # noqa: E402

PAIRS = {
    "dice": (smp_losses.DiceLoss, fsmp.DiceLoss),
    "jaccard": (smp_losses.JaccardLoss, fsmp.JaccardLoss),
    "tversky": (smp_losses.TverskyLoss, fsmp.TverskyLoss),
}
GRAD_OUTPUT = 0.7


def _loss_and_grad(loss_fn, x, t):
    x = x.detach().clone().requires_grad_(True)
    loss = loss_fn(x, t)
    loss.backward(torch.tensor(GRAD_OUTPUT, dtype=loss.dtype, device=loss.device))
    return loss.detach(), x.grad


def _compare(name, kwargs, x, t, what=""):
    """Ours against smp on the same tensors: value, dtype, input gradient."""
    smp_cls, our_cls = PAIRS[name]
    ref_loss, ref_grad = _loss_and_grad(smp_cls(**kwargs), x, t)
    loss, grad = _loss_and_grad(our_cls(**kwargs), x, t)
    tag = f"{what} {name} {kwargs} x{tuple(x.shape)} {x.dtype} t{tuple(t.shape)} {t.dtype}"
    assert loss.dtype == ref_loss.dtype, tag
    assert loss.shape == ref_loss.shape == (), tag
    assert grad.dtype == x.dtype and grad.shape == x.shape, tag
    assert_close(loss, ref_loss, x.dtype, f"loss {tag}")
    assert_close(grad, ref_grad, x.dtype, f"grad {tag}")
    return loss, grad


def _inputs(shape, dtype, device, from_logits, gen):
    if from_logits:
        x = 3 * torch.randn(shape, dtype=torch.float64, generator=gen)
    else:  # probabilities away from the hard targets 0 / 1: no ties p == t
        x = 0.05 + 0.9 * torch.rand(shape, dtype=torch.float64, generator=gen)
    return x.to(device=device, dtype=dtype)


def _labels(shape, num_classes, gen, absent=None):
    """int64 labels in [0, C), leaving out class `absent` (when C > 1)."""
    choices = [c for c in range(num_classes) if c != absent] or [0]
    idx = torch.randint(0, len(choices), shape, generator=gen)
    return torch.tensor(choices)[idx]


# ---------------------------------------------------------------------------
# A randomized sweep of constructor arguments, targets and shapes.
# ---------------------------------------------------------------------------

NUM_CASES = 120


def _draw_case(index, device):
    rng = random.Random(9000 + index)
    gen = torch.Generator().manual_seed(9000 + index)
    name = rng.choice(list(PAIRS))
    mode = rng.choice(["binary", "multiclass", "multilabel"])
    spatial = rng.choice([(9, 11), (5, 6, 7)])
    batch = rng.choice([1, 2, 3])
    dtype = rng.choice([torch.float32, torch.float64])
    kw = {
        "mode": mode,
        "from_logits": rng.random() < 0.6,
        "log_loss": rng.random() < 0.4,
        "smooth": rng.choice([0.0, 0.5]),
        "eps": rng.choice([1e-7, 1e-2, 0.5]),
    }
    if name == "tversky":
        kw.update(
            alpha=rng.choice([0.3, 0.5, 1.0]), beta=rng.choice([0.2, 0.5, 0.7]), gamma=rng.choice([1.0, 1.5, 2.0])
        )
    ignore = rng.choice([None, None, 255, -1])
    info = {"absent": False, "all_ignored": False}

    if mode == "binary":
        channels = rng.choice([1, 1, 1, None, 3])  # None: input (B, *spatial); 3: smp flattens channels
        x_shape = (batch, *spatial) if channels is None else (batch, channels, *spatial)
        t_shape = rng.choice([x_shape, (batch, *spatial)]) if channels == 1 else x_shape
        num_classes = 1
    else:
        num_classes = rng.choice([1, 2, 5])
        x_shape = (batch, num_classes, *spatial)

    if mode == "multiclass":
        if ignore == -1:
            ignore = rng.choice([-100, num_classes - 1])  # out of range, or a real class ignored
        absent = rng.randrange(num_classes) if num_classes > 1 and rng.random() < 0.4 else None
        info["absent"] = absent is not None
        t = _labels((batch, *spatial), num_classes, gen, absent)
        if ignore is not None:
            drop = torch.rand(t.shape, generator=gen) < 0.25
            t = t.masked_fill(drop, ignore)
            if batch > 1 and rng.random() < 0.3:
                t[0] = ignore
                info["all_ignored"] = True
            # smp converts label maps with (y_true * mask).long() when ignore_index is set.
            t = t.to(rng.choice([torch.int64, torch.int64, torch.int32, torch.float32]))
        if rng.random() < 0.3:
            t = t.unsqueeze(1)  # (B, 1, *spatial)
    else:
        dense_shape = t_shape if mode == "binary" else x_shape
        if mode == "multilabel" and rng.random() < 0.2:
            dense_shape = (batch, num_classes, -1)  # smp views targets as (B, C, N)
        soft = rng.random() < 0.3
        t = torch.rand(x_shape, generator=gen) if soft else (torch.rand(x_shape, generator=gen) < 0.4).float()
        if mode == "multilabel" and num_classes > 1 and rng.random() < 0.4:
            t[:, rng.randrange(num_classes)] = 0  # an absent class
            info["absent"] = True
        if not soft:
            t = t.to(rng.choice([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]))
        if ignore is not None:
            if ignore == -1 and t.dtype in (torch.uint8, torch.bool):
                t = t.float()
            if t.dtype == torch.bool:
                t = t.to(torch.int64)
            drop = torch.rand(t.shape, generator=gen) < 0.2
            t = t.masked_fill(drop, ignore)
            if batch > 1 and rng.random() < 0.3:
                t[0] = ignore
                info["all_ignored"] = True
        t = t.reshape(dense_shape)

    if kw["mode"] != "binary":
        if rng.random() < 0.5:
            k = rng.randint(1, num_classes)
            classes = rng.sample(range(num_classes), k)
            if rng.random() < 0.3:
                classes = classes + [-1]  # negative and repeated indices index like smp's loss[classes]
            kw["classes"] = classes
        if rng.random() < 0.4:
            kw["class_weights"] = [round(rng.uniform(0.2, 3.0), 3) for _ in range(num_classes)]
    if ignore is not None:
        kw["ignore_index"] = ignore
    x = _inputs(x_shape, dtype, device, kw["from_logits"], gen)
    return name, kw, x, t.to(device), info


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", range(NUM_CASES))
def test_random_sweep_matches_smp(index, device):
    name, kw, x, t, _ = _draw_case(index, device)
    _compare(name, kw, x, t, what=f"case {index}")


def test_sweep_covers_every_option():
    """The sweep is broad: every value of every axis is drawn at least once."""
    seen = {}

    def note(key, value):
        seen.setdefault(key, set()).add(value)

    for i in range(NUM_CASES):
        name, kw, x, t, info = _draw_case(i, "cpu")
        note("loss", name)
        note("mode", kw["mode"])
        note("dtype", x.dtype)
        note("ndim", x.dim())
        note("C", x.shape[1] if x.dim() > 3 else None)
        for key in ("from_logits", "log_loss", "smooth", "eps"):
            note(key, kw[key])
        note("classes", "classes" in kw)
        note("class_weights", "class_weights" in kw)
        note(("ignore", kw["mode"]), "ignore_index" in kw)
        note("target_dtype", t.dtype)
        note(("absent", kw["mode"]), info["absent"])
        note(("all_ignored", kw["mode"]), info["all_ignored"])
    assert seen["loss"] == set(PAIRS)
    assert seen["mode"] == {"binary", "multiclass", "multilabel"}
    assert seen["dtype"] == {torch.float32, torch.float64}
    assert {3, 4, 5} <= seen["ndim"]
    assert {1, 2, 5} <= seen["C"]
    for key in ("from_logits", "log_loss", "classes", "class_weights"):
        assert seen[key] == {True, False}, key
    assert seen["smooth"] == {0.0, 0.5} and seen["eps"] == {1e-7, 1e-2, 0.5}
    for mode in ("binary", "multiclass", "multilabel"):
        assert seen[("ignore", mode)] == {True, False}, mode
        assert True in seen[("all_ignored", mode)], mode
    assert True in seen[("absent", "multiclass")] and True in seen[("absent", "multilabel")]
    assert {torch.int64, torch.int32, torch.float32, torch.uint8, torch.bool, torch.float64} <= seen["target_dtype"]


# ---------------------------------------------------------------------------
# Targeted cases.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_half_precision_against_smp_in_float32(name, mode, dtype, device):
    """Half inputs: smp run in float32 on the same (upcast) values is the oracle;
    the loss comes back in the dtype smp itself would return."""
    gen = torch.Generator().manual_seed(7)
    c = 1 if mode == "binary" else 4
    x = _inputs((2, c, 9, 11), dtype, device, True, gen)
    if mode == "multiclass":
        t = _labels((2, 9, 11), c, gen).to(device)
        kw = {"mode": mode, "ignore_index": 255, "smooth": 0.5}
        t[1, :2] = 255
    else:
        t = (torch.rand(x.shape, generator=gen) < 0.5).float().to(device)
        kw = {"mode": mode, "log_loss": True}
    if name == "tversky":
        kw.update(alpha=0.3, beta=0.7, gamma=2.0)
    smp_cls, our_cls = PAIRS[name]
    ref_loss, ref_grad = _loss_and_grad(smp_cls(**kw), x.float(), t)
    loss, grad = _loss_and_grad(our_cls(**kw), x, t)
    assert loss.dtype == smp_cls(**kw)(x, t).dtype == dtype
    assert grad.dtype == dtype
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")
    if mode != "binary":  # class_weights (float32) promote smp's result to float32
        kw["class_weights"] = [1.0, 2.0, 0.5, 1.5]
        ref_loss, _ = _loss_and_grad(smp_cls(**kw), x.float(), t)
        loss = our_cls(**kw)(x, t)
        assert loss.dtype == smp_cls(**kw)(x, t).dtype == torch.float32
        assert_close(loss, ref_loss, dtype, "weighted loss")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(PAIRS))
def test_absent_class_and_all_ignored_sample(name, device):
    gen = torch.Generator().manual_seed(3)
    x = _inputs((3, 4, 5, 6, 7), torch.float64, device, True, gen)
    labels = _labels((3, 5, 6, 7), 4, gen, absent=2).to(device)
    labels[1] = 255  # a whole sample ignored
    labels[0, 0] = 255
    kw = {"mode": "multiclass", "ignore_index": 255}
    _compare(name, kw, x, labels)
    # The absent class alone: loss exactly 0 and no gradient (smp's absent-class zeroing).
    loss, grad = _loss_and_grad(PAIRS[name][1](classes=[2], **kw), x, labels)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0
    # The ignored sample gets no gradient at all.
    _, grad = _loss_and_grad(PAIRS[name][1](**kw), x, labels)
    assert torch.count_nonzero(grad[1]) == 0 and torch.count_nonzero(grad[0]) > 0

    dense = (torch.rand((3, 4, 5, 6, 7), generator=gen) < 0.5).to(device=device, dtype=torch.float32)
    dense[:, 1] = 0  # absent
    dense[2] = 255  # a whole sample ignored
    for mode in ("multilabel", "binary"):
        xm = x if mode == "multilabel" else x[:, :1]
        tm = dense if mode == "multilabel" else dense[:, :1]
        kw = {"mode": mode, "ignore_index": 255, "log_loss": True}
        _compare(name, kw, xm, tm)
        _, grad = _loss_and_grad(PAIRS[name][1](**kw), xm, tm)
        assert torch.count_nonzero(grad[2]) == 0
    loss, grad = _loss_and_grad(PAIRS[name][1](mode="multilabel", classes=[1]), x[:2], dense[:2])
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["binary", "multilabel", "multiclass"])
def test_gradient_at_ties(mode, device):
    """p == t exactly at some positions: smp's |p - t| subgradient there is 0, and so is ours."""
    gen = torch.Generator().manual_seed(11)
    c = 1 if mode == "binary" else 3
    x = _inputs((2, c, 9, 11), torch.float64, device, False, gen)
    if mode == "multiclass":
        t = _labels((2, 9, 11), c, gen).to(device)
        onehot = torch.nn.functional.one_hot(t, c).movedim(-1, 1).to(x.dtype)
        x = torch.where(torch.rand(x.shape, generator=gen).to(device) < 0.3, onehot, x)
    else:
        t = torch.rand(x.shape, generator=gen).to(device)
        t = torch.where(t < 0.4, 0.0, torch.where(t < 0.8, 1.0, t)).double()
        x = torch.where(torch.rand(x.shape, generator=gen).to(device) < 0.3, t, x)  # hard and soft ties
    assert (x == (t if mode != "multiclass" else onehot)).any()
    for name in PAIRS:
        _compare(name, {"mode": mode, "from_logits": False, "smooth": 0.5}, x, t)
    # The op's own rule: d sum|p - t| / dp = sign(p - t), with sign(0) = 0.
    p = torch.tensor([[[0.5, 0.3, 1.0, 0.0, 0.9]]], dtype=torch.float64, device=device, requires_grad=True)
    tt = torch.tensor([[[0.5, 0.0, 1.0, 0.0, 1.0]]], dtype=torch.float64, device=device)
    fastdice._ops.dice_stats(p, tt, "none", True, None)[..., fastdice._ops.SUM_ABS_DIFF].sum().backward()
    assert p.grad.tolist() == [[[0.0, 1.0, 0.0, 0.0, -1.0]]]


@pytest.mark.parametrize("device", DEVICES)
def test_layouts_and_target_shapes(device):
    gen = torch.Generator().manual_seed(5)
    x = _inputs((2, 4, 9, 11), torch.float32, device, True, gen)
    labels = _labels((2, 9, 11), 4, gen).to(device)
    xcl = x.contiguous(memory_format=torch.channels_last)
    for name in PAIRS:
        _compare(name, {"mode": "multiclass"}, xcl, labels, "channels_last")
        _compare(name, {"mode": "multiclass"}, x, labels.unsqueeze(1), "(B, 1, H, W) labels")
        _compare(name, {"mode": "multiclass"}, x, labels.transpose(1, 2).contiguous().transpose(1, 2), "strided labels")
        _compare(name, {"mode": "multiclass"}, x[..., 0], labels[..., 0], "(B, C, H)")
        _compare(name, {"mode": "multiclass"}, x[..., 0, 0], labels[..., 0, 0], "(B, C) input, (B,) labels")
        dense = (torch.rand(x.shape, generator=gen) < 0.5).float().to(device)
        _compare(name, {"mode": "multilabel"}, xcl, dense, "channels_last")
        _compare(name, {"mode": "multilabel"}, x, dense.reshape(2, 4, -1), "(B, C, N) target")
        _compare(name, {"mode": "multilabel"}, x, dense.transpose(2, 3).contiguous().transpose(2, 3), "strided")
        _compare(name, {"mode": "binary"}, x[:, :1], dense[:, 0], "(B, H, W) target")
        _compare(name, {"mode": "binary"}, x[:, 0], dense[:, 0], "(B, H, W) input")
        _compare(name, {"mode": "binary", "ignore_index": 255}, x[:, 0], dense[:, 0], "(B, H, W) input, ignore")
        _compare(name, {"mode": "binary"}, x, dense, "binary over 4 channels")
        _compare(name, {"mode": "binary"}, x[:, 1:2], dense[:, 1:2], "non-contiguous input")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int8, torch.int16, torch.int32], ids=str)
def test_integer_label_dtypes(label_dtype, device):
    gen = torch.Generator().manual_seed(8)
    x = _inputs((2, 3, 9, 11), torch.float64, device, True, gen)
    labels = _labels((2, 9, 11), 3, gen).to(device)
    # Without ignore_index smp's F.one_hot takes int64 only; ours reads any integer
    # label map in place: the int64 result is the oracle.
    with pytest.raises(RuntimeError):
        smp_losses.DiceLoss("multiclass")(x, labels.to(label_dtype))
    for name in PAIRS:
        ref_loss, ref_grad = _loss_and_grad(PAIRS[name][0]("multiclass"), x, labels)
        loss, grad = _loss_and_grad(PAIRS[name][1]("multiclass"), x, labels.to(label_dtype))
        assert_close(loss, ref_loss, x.dtype, "loss")
        assert_close(grad, ref_grad, x.dtype, "grad")
    # With ignore_index smp converts any dtype, and compares in the label dtype:
    # uint8 labels != -1 ignores 255 (torch wraps the scalar); != 0.5 ignores nothing.
    ignore_value = 255 if label_dtype == torch.uint8 else -1
    marked = labels.masked_fill(torch.rand(labels.shape, generator=gen).to(device) < 0.3, ignore_value).to(label_dtype)
    bits = torch.iinfo(label_dtype).bits
    matched = []
    for ignore in (-1, 255, 255.0, -1.0, 2**bits - 1, -(2**bits) - 1, 0.5, 1, 1.0):
        kw = {"mode": "multiclass", "ignore_index": ignore}
        try:
            smp_losses.DiceLoss(**kw)(x, marked)
        except RuntimeError:  # no label value equals ignore: the marks are out of range
            if x.device.type == "cuda":  # the CUDA kernels poison the statistics instead of syncing
                assert torch.isnan(fsmp.DiceLoss(**kw)(x, marked))
            else:
                with pytest.raises(RuntimeError):
                    fsmp.DiceLoss(**kw)(x, marked)
            continue
        _compare("dice", kw, x, marked, f"ignore {ignore!r}")
        matched.append(ignore)
    # torch wraps an int scalar into the label dtype (-1 and 2**bits - 1 match the marks alike).
    assert {-1, 2**bits - 1, -(2**bits) - 1} <= set(matched) and 0.5 not in matched


@pytest.mark.parametrize("device", DEVICES)
def test_float_and_bool_label_maps(device):
    gen = torch.Generator().manual_seed(9)
    x = _inputs((2, 3, 5, 6, 7), torch.float64, device, True, gen)
    labels = _labels((2, 5, 6, 7), 3, gen).to(device)
    marked = labels.masked_fill(torch.rand(labels.shape, generator=gen).to(device) < 0.3, 255)
    # smp truncates toward zero: 1.25 -> 1, -0.5 -> 0.
    fractional = torch.where(marked == 255, 255.0, marked + 0.25).double()
    some_zeros = (marked == 0) & (torch.rand(labels.shape, generator=gen).to(device) < 0.5)
    fractional = torch.where(some_zeros, -0.5, fractional)
    for name in PAIRS:
        _compare(name, {"mode": "multiclass", "ignore_index": 255}, x, marked.float(), "float labels")
        _compare(name, {"mode": "multiclass", "ignore_index": 255}, x, fractional, "fractional labels")
        _compare(name, {"mode": "multiclass", "ignore_index": 7}, x[:, :2], labels.remainder(2).bool(), "bool labels")
        for cls in PAIRS[name]:
            with pytest.raises(RuntimeError, match="LongTensor"):
                cls("multiclass")(x, labels.float())
            for bad in (3.5, -1.5):  # a non-ignored float label truncating outside [0, C)
                with pytest.raises(RuntimeError):
                    cls("multiclass", ignore_index=255)(x, marked.float().masked_fill(marked == 1, bad))


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_unnormalized_probabilities(mode):
    """from_logits=False with values outside [0, 1]: smp sums p itself (not |p|); so do we."""
    gen = torch.Generator().manual_seed(4)
    c = 1 if mode == "binary" else 3
    x = (3 * torch.rand((2, c, 9, 11), generator=gen) - 1).double()
    assert (x < 0).any()
    if mode == "multiclass":
        t = _labels((2, 9, 11), c, gen)
    else:
        t = torch.rand(x.shape, generator=gen)
    for name in PAIRS:
        _compare(name, {"mode": mode, "from_logits": False, "smooth": 0.5}, x, t)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(PAIRS))
def test_eps_clamps_the_denominator(name, device):
    """Small sums: smp's denominator.clamp_min(eps) is active (and cuts the gradient there)."""
    gen = torch.Generator().manual_seed(6)
    x = (1e-3 * torch.rand((1, 3, 5, 6), generator=gen)).double().to(device)
    t = torch.zeros(x.shape, dtype=torch.float64, device=device)
    t[0, 1, 2, 3] = 0.2  # one soft positive: class 1 present, its denominator ~0.1
    t[0, 2] = 1.0
    losses = [_compare(name, {"mode": "multilabel", "from_logits": False, "eps": eps}, x, t)[0] for eps in (1e-7, 0.5)]
    assert losses[0] != losses[1]
    # A batch with every position ignored: all denominators are 0 (smooth 0), clamped, then zeroed.
    labels = torch.full((2, 5, 6), 255, device=device)
    loss, grad = _compare(name, {"mode": "multiclass", "ignore_index": 255}, x.expand(2, -1, -1, -1), labels)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0
    dense = torch.full((2, 1, 5, 6), 255.0, device=device)
    _compare(name, {"mode": "binary", "ignore_index": 255, "log_loss": True}, x[:, :1].expand(2, -1, -1, -1), dense)


def test_tversky_with_half_weights_is_dice():
    gen = torch.Generator().manual_seed(2)
    x = _inputs((2, 3, 9, 11), torch.float64, "cpu", True, gen)
    labels = _labels((2, 9, 11), 3, gen)
    a = fsmp.TverskyLoss("multiclass", alpha=0.5, beta=0.5, gamma=1.0, smooth=0.5)(x, labels)
    b = fsmp.DiceLoss("multiclass", smooth=0.5)(x, labels)
    assert_close(a, b, torch.float64, "tversky(0.5, 0.5) == dice")
    c = fsmp.TverskyLoss("multiclass", alpha=1.0, beta=1.0, smooth=0.5)(x, labels)
    d = fsmp.JaccardLoss("multiclass", smooth=0.5)(x, labels)
    assert_close(c, d, torch.float64, "tversky(1, 1) == jaccard")


def test_attributes_and_signatures():
    args = ("multiclass", [0, 2], True, False, 0.25, 255, 1e-5)
    for name in ("dice", "jaccard"):
        smp_cls, our_cls = PAIRS[name]
        ref, ours = smp_cls(*args, [1.0, 2.0, 3.0]), our_cls(*args, [1.0, 2.0, 3.0])
        assert isinstance(ours, torch.nn.Module)
        for attr in ("mode", "from_logits", "smooth", "eps", "log_loss", "ignore_index", "reduction"):
            assert getattr(ours, attr) == getattr(ref, attr), attr
        assert ours.classes.dtype == ref.classes.dtype == torch.long and torch.equal(ours.classes, ref.classes)
        assert ours.class_weights.dtype == ref.class_weights.dtype
        assert torch.equal(ours.class_weights, ref.class_weights)
        assert list(ours.state_dict()) == list(ref.state_dict())
        default_ref, default_ours = smp_cls("binary"), our_cls("binary")
        for attr in ("classes", "class_weights", "from_logits", "smooth", "eps", "log_loss", "ignore_index"):
            assert getattr(default_ours, attr) == getattr(default_ref, attr), attr
    ref = smp_losses.TverskyLoss("multilabel", None, False, True, 0.0, None, 1e-7, 0.3, 0.7, 2.0, [1.0, 2.0])
    ours = fsmp.TverskyLoss("multilabel", None, False, True, 0.0, None, 1e-7, 0.3, 0.7, 2.0, [1.0, 2.0])
    assert (ours.alpha, ours.beta, ours.gamma) == (ref.alpha, ref.beta, ref.gamma) == (0.3, 0.7, 2.0)
    assert torch.equal(ours.class_weights, ref.class_weights)
    d_ref, d_ours = smp_losses.TverskyLoss("binary"), fsmp.TverskyLoss("binary")
    assert (d_ours.alpha, d_ours.beta, d_ours.gamma) == (d_ref.alpha, d_ref.beta, d_ref.gamma)
    assert isinstance(ours, fsmp.DiceLoss) and not isinstance(fsmp.JaccardLoss("binary"), fsmp.DiceLoss)
    assert (fsmp.BINARY_MODE, fsmp.MULTICLASS_MODE, fsmp.MULTILABEL_MODE) == ("binary", "multiclass", "multilabel")
    import numpy as np

    ours = fsmp.DiceLoss("multiclass", classes=np.array([2, 0]), class_weights=torch.tensor([1, 2, 3]))
    assert ours.classes.tolist() == [2, 0] and ours.class_weights.dtype == torch.float32


def _x(shape=(2, 3, 9, 11)):
    return torch.randn(shape, dtype=torch.float64)


# (constructor args, y_pred, y_true, exception smp raises too, pattern our message must contain)
SHARED_ERRORS = {
    "bad_mode": (("softmax",), None, None, AssertionError, "mode"),
    "classes_binary": (("binary", [0]), None, None, AssertionError, "classes"),
    "weights_binary": (("binary", None, False, True, 0.0, None, 1e-7, [1.0]), None, None, ValueError, "class_weights"),
    "batch": (("multiclass",), _x(), torch.zeros(3, 9, 11, dtype=torch.long), AssertionError, "batch"),
    "multiclass_size": (("multiclass",), _x(), torch.zeros(2, 9, 10, dtype=torch.long), AssertionError, "match"),
    "multilabel_size": (("multilabel",), _x(), torch.zeros(2, 2, 9, 11), AssertionError, "match"),
    "binary_size": (("binary",), _x((2, 1, 9, 11)), torch.zeros(2, 9, 10), AssertionError, "match"),
    "empty_batch": (("binary",), _x((0, 1, 9, 11)), torch.zeros(0, 1, 9, 11), RuntimeError, "reshape"),
    "label_high": (("multiclass",), _x(), torch.full((2, 9, 11), 3), RuntimeError, "label 3"),
    "label_negative": (("multiclass",), _x(), torch.full((2, 9, 11), -1), RuntimeError, "label -1"),
    "label_high_ignore": (
        ("multiclass", None, False, True, 0.0, 255),
        _x(),
        torch.full((2, 9, 11), 4),
        RuntimeError,
        "label 4",
    ),
    "float_labels": (("multiclass",), _x(), torch.zeros(2, 9, 11), RuntimeError, "LongTensor"),
    "one_dim_input": (("binary",), torch.randn(4), torch.zeros(4), IndexError, None),
    "classes_index": (("multiclass", [5]), _x(), torch.zeros(2, 9, 11, dtype=torch.long), IndexError, None),
    "weights_length": (
        ("multilabel", None, False, True, 0.0, None, 1e-7, [1.0, 2.0]),
        _x(),
        torch.zeros(2, 3, 9, 11),
        RuntimeError,
        None,
    ),
}


@pytest.mark.parametrize("case", SHARED_ERRORS.values(), ids=SHARED_ERRORS.keys())
@pytest.mark.parametrize("name", ["dice", "jaccard"])
def test_errors_match_smp(name, case):
    args, x, t, exc, pattern = case
    for cls in PAIRS[name]:
        with pytest.raises(exc):
            loss = cls(*args)
            loss(x, t)
    with pytest.raises(exc, match=pattern):
        PAIRS[name][1](*args)(x, t)


def test_tversky_errors_match_smp():
    for cls in PAIRS["tversky"]:
        with pytest.raises(AssertionError):
            cls("multi")
        with pytest.raises(AssertionError):
            cls("binary", classes=[0])
        with pytest.raises(ValueError):
            cls("binary", class_weights=[1.0])


def test_label_error_is_value_and_runtime_error():
    with pytest.raises(ValueError, match="label 3"):
        fsmp.DiceLoss("multiclass")(_x(), torch.full((2, 9, 11), 3))
    assert issubclass(fsmp.LabelOutOfRangeError, RuntimeError)


def test_our_own_errors():
    """Where smp silently computes something else (documented differences)."""
    x = _x((2, 1, 9, 11))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # a 0/255 mask without ignore_index
        fsmp.DiceLoss("binary")(x, torch.full((2, 1, 9, 11), 255.0))
    with pytest.raises(TypeError, match="classes"):  # smp's to_tensor(1) is None: all classes
        fsmp.DiceLoss("multiclass", classes=1)
    with pytest.raises(TypeError, match="class_weights"):
        fsmp.JaccardLoss("multiclass", class_weights=2.0)


def test_fused_calls(monkeypatch):
    """One op call per forward; label maps reach it as they are (never one-hot);
    the activation is fused; the fallbacks are where the docstring says."""
    calls = []
    real = fastdice._ops.dice_stats

    def spy(input, target, activation="none", full_stats=False, ignore_index=None, *rest):
        calls.append((input, target, activation, full_stats, ignore_index))
        return real(input, target, activation, full_stats, ignore_index, *rest)

    monkeypatch.setattr(fastdice._ops, "dice_stats", spy)
    x = _x()
    labels = torch.randint(0, 3, (2, 9, 11))
    labels[0, 0] = 255
    fsmp.DiceLoss("multiclass", ignore_index=255)(x, labels)
    (inp, tgt, act, full, ign), = calls
    assert inp is x and tgt.data_ptr() == labels.data_ptr() and tgt.dtype == torch.int64
    assert (act, full, ign) == ("softmax", True, 255)
    calls.clear()
    fsmp.JaccardLoss("multilabel", from_logits=False)(x, (labels.clamp(max=1)[:, None] > 0).expand_as(x))
    (inp, tgt, act, full, ign), = calls
    assert inp is x and act == "identity" and ign is None  # smp takes any values: unchecked
    calls.clear()
    fsmp.TverskyLoss("binary")(x[:, :1], labels[:, None].clamp(max=1))
    assert calls[0][0].data_ptr() == x.data_ptr() and calls[0][2] == "sigmoid"
    calls.clear()
    fsmp.DiceLoss("binary", ignore_index=255)(x[:, :1], labels[:, None].clamp(max=1))  # not fused
    assert calls[0][2] == "identity" and calls[0][4] is None
