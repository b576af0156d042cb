"""Region targets from an integer label map (nnU-Net's region-based
training): ``regions=[[1, 2, 3], [2, 3], [3]]`` makes channel c's target 1
where the label belongs to region c, computed in the kernel (no region tensor
is written). Oracles: the statistics written out in torch over a region
target built with torch.isin, fastdice.reference, and the dense-target path
on that same region tensor."""

import random

import pytest
import torch
import torch.nn.functional as F

import fastdice
from fastdice import _ops, reference
from fastdice.options import region_bits

from conftest import DEVICES, assert_close, written_stats

BRATS = ((1, 2, 3), (2, 3), (3,))


def region_target(labels, regions, dtype=torch.float64):
    """(B, R, *spatial) 0/1 target: channel c is labels in regions[c] (written with torch.isin)."""
    labels = labels.reshape(labels.shape[0], *labels.shape[-(labels.dim() - 1):]).long()
    return torch.stack([torch.isin(labels, torch.tensor(r, device=labels.device)) for r in regions], 1).to(dtype)


def oracle_stats(x, labels, regions, activation, ignore_index, mask, pixel_loss="none", gamma=0.0):
    """[B, C, 11] written out over the kept (mask != 0), non-ignored positions."""
    x = x.double()
    lab = labels.reshape(x.shape[0], *x.shape[2:]).long()
    act = {"sigmoid": torch.sigmoid, "softmax": lambda v: v.softmax(1), "none": lambda v: v}[activation]
    p = act(x)
    t = region_target(lab, regions)
    keep = torch.ones_like(lab, dtype=torch.float64)
    if ignore_index is not None:
        keep = keep * (lab != ignore_index)
    if mask is not None:
        keep = keep * mask.reshape(lab.shape).double()
    keep = keep.unsqueeze(1)
    return written_stats(x, p, t * keep, keep, pixel_loss, gamma)  # an ignored label (255, say) names no region


def random_regions(rng, num_regions, num_labels):
    return tuple(tuple(sorted(rng.sample(range(num_labels), rng.randint(1, num_labels - 1)))) for _ in range(num_regions))


CASES = []
_rng = random.Random(20261201)
for _ in range(30):
    act = _rng.choice(["sigmoid", "sigmoid", "softmax", "none"])
    pixel = "none"
    if act == "sigmoid":
        pixel = _rng.choice(["none", "binary_cross_entropy"])
    elif act == "softmax":
        pixel = _rng.choice(["none", "cross_entropy", "binary_cross_entropy"])
    num_labels = _rng.choice([2, 4, 6, 64])
    CASES.append(dict(
        activation=act, pixel_loss=pixel, gamma=_rng.choice([0.0, 2.0]) if pixel != "none" else 0.0,
        # (softmax over one channel is p = 1: its gradient is rounding noise)
        regions=(random_regions(_rng, _rng.choice([2, 3, 5] if act == "softmax" else [1, 2, 3, 5]), num_labels)
                 if num_labels != 4 else BRATS),
        num_labels=num_labels, ignore=_rng.choice([None, None, 255, -1]), mask=_rng.random() < 0.3,
        full=_rng.random() < 0.5, layout=_rng.choice(["plain", "channel", "strided"]),
        label_dtype=_rng.choice([torch.uint8, torch.int32, torch.int64]),
        shape=_rng.choice([(2, 7, 9), (3, 600), (2, 5, 6, 7), (1, 4100)]),
        dtype=_rng.choice([torch.float32, torch.float64]),
    ))
    if CASES[-1]["ignore"] == -1 and CASES[-1]["label_dtype"] == torch.uint8:
        CASES[-1]["ignore"] = 255


def case_id(i):
    c = CASES[i]
    return (f"{c['activation']}-{c['pixel_loss']}-g{c['gamma']}-R{len(c['regions'])}-L{c['num_labels']}"
            f"-ignore{c['ignore']}-mask{c['mask']}-full{c['full']}-{c['layout']}-{str(c['label_dtype'])[6:]}"
            f"-{'x'.join(map(str, c['shape']))}-{str(c['dtype'])[6:]}")


def make_inputs(c, device, g):
    b, *spatial = c["shape"]
    num_regions = len(c["regions"])
    x = (2 * torch.randn((b, num_regions, *spatial), generator=g, dtype=torch.float64)).to(c["dtype"])
    if c["activation"] == "none":
        x = torch.rand(x.shape, generator=g, dtype=torch.float64).to(c["dtype"])
    labels = torch.randint(0, c["num_labels"], (b, *spatial), generator=g)
    if c["ignore"] is not None:
        labels = torch.where(torch.rand(labels.shape, generator=g) < 0.2, torch.tensor(c["ignore"]), labels)
    labels = labels.to(c["label_dtype"])
    if c["layout"] == "channel":
        labels = labels.unsqueeze(1)
    elif c["layout"] == "strided" and len(spatial) >= 2:
        labels = labels.transpose(-1, -2).contiguous().transpose(-1, -2)
    mask = (torch.rand((b, *spatial), generator=g) < 0.7) if c["mask"] else None
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(x), to(labels), c["ignore"], to(mask)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=case_id)
def test_region_stats_and_gradients_match_the_written_sums(case, device):
    c = CASES[case]
    g = torch.Generator().manual_seed(case)
    x, labels, ignore, mask = make_inputs(c, device, g)
    args = (c["activation"], c["full"], ignore, c["pixel_loss"], c["gamma"])
    xg = x.clone().requires_grad_(True)
    stats = _ops.dice_stats(xg, labels, *args, mask=mask, regions=region_bits(c["regions"]))
    expected = oracle_stats(x, labels, c["regions"], c["activation"], ignore, mask, c["pixel_loss"], c["gamma"])
    columns = list(range(3)) + (list(range(3, 9)) if c["full"] else []) + ([9, 10] if c["pixel_loss"] != "none" else [])
    assert_close(stats[..., columns], expected[..., columns], c["dtype"], f"stats {case_id(case)}")
    grad_stats = torch.randn(stats.shape, generator=g, dtype=torch.float64).to(device=device, dtype=stats.dtype)
    stats.backward(grad_stats)
    xr = x.detach().double().requires_grad_(True)
    oracle = oracle_stats(xr, labels, c["regions"], c["activation"], ignore, mask, c["pixel_loss"], c["gamma"])
    (oracle[..., columns] * grad_stats.double()[..., columns]).sum().backward()
    assert_close(xg.grad, xr.grad, c["dtype"], f"grad {case_id(case)}")


NATIVE = [
    ("DiceLoss", dict(activation="sigmoid")),
    ("DiceLoss", dict(activation="sigmoid", pooling="batch", squared=True)),
    ("DiceLoss", dict(activation="sigmoid", pooling="sample", include_background=False, weight=[0.5, 1.0, 2.0])),
    ("DiceLoss", dict(activation="softmax", pooling="batch", jaccard=True)),
    ("TverskyLoss", dict(activation="sigmoid", alpha=0.3, beta=0.7, pooling="batch")),
    ("GeneralizedDiceLoss", dict(activation="sigmoid", pooling="batch")),
    ("DiceCELoss", dict(activation="sigmoid", pooling="batch")),
    ("DiceCELoss", dict(activation="sigmoid", pooling="sample", ce_weight=[1.0, 2.0, 3.0])),
    ("DiceFocalLoss", dict(activation="sigmoid", gamma=2.0)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ignore", [None, 255], ids=lambda v: f"ignore={v}")
@pytest.mark.parametrize("with_mask", [False, True], ids=lambda v: f"mask={v}")
@pytest.mark.parametrize("name,kw", NATIVE, ids=lambda v: str(v))
def test_native_losses_with_regions_equal_the_dense_region_target(name, kw, with_mask, ignore, device):
    """Same numbers as the dense path: the class on the region tensor built
    with torch.isin (ignored positions there become masked-out positions)."""
    g = torch.Generator().manual_seed(7)
    x = (2 * torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64)).to(device)
    labels = torch.randint(0, 4, (2, 9, 8), generator=g)
    if ignore is not None:
        labels = torch.where(torch.rand(labels.shape, generator=g) < 0.2, torch.tensor(ignore), labels)
    labels = labels.to(device)
    mask = (torch.rand(2, 9, 8, generator=g) < 0.7).to(device) if with_mask else None
    keep = torch.ones_like(labels, dtype=torch.bool) if ignore is None else labels != ignore
    if mask is not None:
        keep = keep & mask
    dense = region_target(labels, BRATS) * keep.unsqueeze(1)

    xg = x.clone().requires_grad_(True)
    loss = getattr(fastdice, name)(regions=[list(r) for r in BRATS], ignore_index=ignore, **kw)(xg, labels, mask=mask)
    grad_out = torch.rand_like(loss) + 0.5
    loss.backward(grad_out)
    xd = x.clone().requires_grad_(True)
    dense_mask = keep if (ignore is not None or mask is not None) else None
    expected = getattr(fastdice, name)(**kw)(xd, dense, mask=dense_mask)
    expected.backward(grad_out)
    assert_close(loss, expected, torch.float64, f"{name} loss")
    assert_close(xg.grad, xd.grad, torch.float64, f"{name} grad")
    if ignore is not None or mask is not None:
        assert (xg.grad.transpose(0, 1)[:, ~keep] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pooling", ["global", "batch", "sample"])
def test_dice_loss_with_regions_equals_the_reference(pooling, device):
    x = 2 * torch.randn(3, 3, 5, 4, 6, dtype=torch.float64, device=device)
    labels = torch.randint(0, 5, (3, 5, 4, 6), device=device, dtype=torch.int16)
    regions = [[1, 2, 4], [2, 4], [4]]
    xg = x.clone().requires_grad_(True)
    loss = fastdice.dice_loss(xg, labels, activation="sigmoid", pooling=pooling, regions=regions, reduction="sum")
    xr = x.clone().requires_grad_(True)
    expected = reference.dice_loss(xr, labels, activation="sigmoid", pooling=pooling, regions=regions,
                                   reduction="sum")
    loss.backward(torch.tensor(1.7, dtype=torch.float64, device=device))
    expected.backward(torch.tensor(1.7, dtype=torch.float64, device=device))
    assert_close(loss, expected, torch.float64, "loss")
    assert_close(xg.grad, xr.grad, torch.float64, "grad")


def test_label_63_uses_the_top_bit():
    x = torch.randn(2, 2, 40, dtype=torch.float64)
    labels = torch.randint(60, 64, (2, 40))
    regions = [[63], [60, 63]]
    assert region_bits(regions)[0] < 0  # bit 63: a negative int64
    loss = fastdice.dice_loss(x, labels, activation="sigmoid", pooling="batch", regions=regions)
    expected = reference.dice_loss(x, labels, activation="sigmoid", pooling="batch", regions=regions)
    assert_close(loss, expected, torch.float64, "label 63")


def test_gradcheck_with_regions():
    x = (2 * torch.randn(2, 3, 6, 5, dtype=torch.float64)).requires_grad_(True)
    labels = torch.randint(0, 4, (2, 6, 5))
    bits = region_bits(BRATS)
    assert torch.autograd.gradcheck(
        lambda a: _ops.dice_stats(a, labels, "sigmoid", True, None, "binary_cross_entropy", 2.0, None, bits), (x,),
        eps=1e-6, atol=1e-8,
    )


def test_opcheck_with_regions():
    x = torch.randn(2, 3, 7, 5)
    labels = torch.randint(0, 4, (2, 1, 7, 5))
    bits = region_bits(BRATS)
    torch.library.opcheck(torch.ops.fastdice.dice_stats.default,
                          (x, labels, "sigmoid", True, None, "binary_cross_entropy", 0.0, None, bits))
    gs = torch.randn(2, 3, _ops.NUM_STATS)
    torch.library.opcheck(torch.ops.fastdice.dice_stats_backward.default,
                          (gs, x, labels, "sigmoid", True, None, "binary_cross_entropy", 0.0, False, None, bits))


def test_compile_fullgraph_with_regions():
    loss_fn = fastdice.DiceCELoss(activation="sigmoid", pooling="batch", regions=BRATS)
    compiled = torch.compile(loss_fn, fullgraph=True, dynamic=True, backend="aot_eager")
    for size in (5, 8, 11):
        x = torch.randn(2, 3, size, 6, requires_grad=True)
        labels = torch.randint(0, 4, (2, size, 6))
        out = compiled(x, labels)
        out.backward()
        g = x.grad.clone()
        x.grad = None
        ref = loss_fn(x, labels)
        ref.backward()
        assert_close(out, ref, torch.float32, "compiled loss")
        assert_close(g, x.grad, torch.float32, "compiled grad")


def test_dice_ce_mean_is_over_valid_positions_and_regions():
    """BCE over regions: the mean over every kept (position, region) pair, as
    torch's BCEWithLogitsLoss on the kept elements of the region tensor."""
    x = (2 * torch.randn(2, 3, 6, 7, dtype=torch.float64)).requires_grad_(True)
    labels = torch.randint(0, 4, (2, 6, 7))
    labels[0, :2] = 255
    loss = fastdice.DiceCELoss(activation="sigmoid", regions=BRATS, ignore_index=255, lambda_dice=0.0)(x, labels)
    keep = (labels != 255).unsqueeze(1).expand_as(x)
    dense = region_target(labels, BRATS)
    expected = F.binary_cross_entropy_with_logits(x[keep], dense[keep])
    assert_close(loss, expected, torch.float64, "bce mean")


def test_repr_shows_regions():
    loss = fastdice.DiceLoss(activation="sigmoid", regions=[[1, 2, 3], [2, 3], [3]])
    assert repr(loss) == "DiceLoss(activation='sigmoid', regions=((1, 2, 3), (2, 3), (3,)))"


@pytest.mark.parametrize("kw,labels,error,match", [
    (dict(regions=[[1, 2], [2]]), torch.tensor([[0, 1, 64]]), ValueError, r"label 64 .*outside \[0, 64\)"),
    (dict(regions=[[1, 2], [2]]), torch.tensor([[0, -1, 2]]), ValueError, r"label -1 .*outside \[0, 64\)"),
    (dict(regions=[[1, 2], [2], [1]]), torch.tensor([[0, 1, 2]]), ValueError, r"3 regions .* 2 channels"),
    (dict(regions=[[1, 64], [2]]), torch.tensor([[0, 1, 2]]), ValueError, r"regions\[0\] holds 64"),
    (dict(regions=[[1], []]), torch.tensor([[0, 1, 2]]), ValueError, r"regions\[1\] must be a non-empty"),
    (dict(regions=[[1], [True]]), torch.tensor([[0, 1, 2]]), ValueError, r"regions\[1\] holds True"),
    (dict(regions="123"), torch.tensor([[0, 1, 2]]), TypeError, r"regions must be a sequence"),
    (dict(regions=[[1]] * 33), torch.tensor([[0, 1, 2]]), ValueError, r"between 1 and 32 regions"),
    (dict(regions=[[1], [2]]), torch.tensor([[[0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0]]]).reshape(1, 2, 3), TypeError,
     r"regions= needs an integer label map"),
], ids=["label-64", "negative-label", "region-count", "region-label-64", "empty-region", "bool-label",
        "string", "too-many", "float-target"])
def test_bad_regions_raise(kw, labels, error, match):
    x = torch.randn(1, 2, 3)
    with pytest.raises(error, match=match):
        fastdice.DiceLoss(activation="sigmoid", **kw)(x, labels)


def test_ignored_label_outside_the_label_range_is_fine():
    x = torch.randn(1, 2, 4)
    labels = torch.tensor([[0, 1, 255, 2]])
    loss = fastdice.DiceLoss(activation="sigmoid", regions=[[1, 2], [2]], ignore_index=255)(x, labels)
    assert torch.isfinite(loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", range(0, len(CASES), 3), ids=lambda i: case_id(i))
def test_cuda_regions_match_cpu(case):
    c = CASES[case]
    g = torch.Generator().manual_seed(case)
    x, labels, ignore, mask = make_inputs(c, "cpu", g)
    bits = region_bits(c["regions"])
    args = (c["activation"], c["full"], ignore, c["pixel_loss"], float(c["gamma"]))
    cuda = lambda t: None if t is None else t.cuda()  # noqa: E731
    cpu = torch.ops.fastdice.dice_stats(x, labels, *args, mask, bits)
    gpu = torch.ops.fastdice.dice_stats(x.cuda(), labels.cuda(), *args, cuda(mask), bits)
    assert_close(gpu.cpu(), cpu, c["dtype"], "stats")
    gs = torch.randn(cpu.shape, generator=g, dtype=cpu.dtype)
    gc = torch.ops.fastdice.dice_stats_backward(gs, x, labels, *args, False, mask, bits)[0]
    gg = torch.ops.fastdice.dice_stats_backward(gs.cuda(), x.cuda(), labels.cuda(), *args, False, cuda(mask), bits)[0]
    assert_close(gg.cpu(), gc, c["dtype"], "grad")
