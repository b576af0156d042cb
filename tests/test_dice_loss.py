"""fastdice.DiceLoss against independent oracles: fastdice.reference and the
classic formula written out here; values and input gradients, grad_output != 1."""

import pytest
import torch

import fastdice
from fastdice import reference

from conftest import DEVICES, assert_close, random_logits, random_target

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]

OPTION_SETS = {
    "default": {},
    "batch": {"pooling": "batch"},
    "sample_nobg": {"pooling": "sample", "include_background": False, "reduction": "none"},
    "squared": {"squared": True, "pooling": "sample"},
    "jaccard": {"jaccard": True, "pooling": "batch", "reduction": "sum"},
    "log": {"log_loss": True, "pooling": "sample", "smooth_nr": 0.5, "smooth_dr": 2.0},
    "soft_label": {"soft_label": True, "pooling": "batch", "reduction": "none"},
    "weight": {"weight": [0.5, 2.0, 1.5], "pooling": "sample"},
    "weight_global": {"weight": [0.5, 2.0, 1.5], "include_background": False},
    "no_smooth": {"smooth_nr": 0.0, "smooth_dr": 0.0, "pooling": "batch"},
}
TARGETS = ["dense", "onehot", "label", "label_ignore", "label1"]


def _run(loss_fn, x, t, grad_scale):
    x = x.detach().clone().requires_grad_(True)
    loss = loss_fn(x, t)
    # grad_output != 1 (and not constant when the loss is not a scalar).
    g = grad_scale.expand_as(loss) if loss.dim() == 0 else torch.linspace(0.5, 2.0, loss.numel()).reshape(loss.shape)
    loss.backward(g.to(loss))
    return loss.detach(), x.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
@pytest.mark.parametrize("target_kind", TARGETS)
@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
def test_matches_reference(activation, target_kind, options, dtype, device):
    shape = (2, 3, 17, 13)
    kw = dict(options, activation=activation)
    ignore = None
    if target_kind == "label_ignore":
        ignore = 255
        kw["ignore_index"] = ignore
    x = random_logits(shape, dtype, device, activation)
    t = random_target(target_kind.replace("_ignore", ""), shape, device, ignore_index=ignore)
    grad_scale = torch.tensor(0.37, device=device)
    loss, grad = _run(lambda a, b: fastdice.DiceLoss(**kw)(a, b), x, t, grad_scale)
    ref_loss, ref_grad = _run(lambda a, b: reference.dice_loss(a, b, **kw), x, t, grad_scale)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert grad.dtype == dtype and grad.shape == x.shape
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad.to(dtype), dtype, "grad")


SHAPES = [
    (1, 1, 31),  # C = 1, B = 1
    (2, 37, 5, 3),  # many classes
    (3, 4, 5, 6, 7),  # 3D
    (2, 3, 70, 71),  # several CPU chunks, odd tail
    (2, 5, 1),  # one position
    (4, 2),  # no spatial dim
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
@pytest.mark.parametrize("target_kind", ["dense", "label_ignore"])
def test_shapes(target_kind, activation, shape, dtype, device):
    if target_kind != "dense" and shape[1] == 1:
        pytest.skip("a single-channel integer target is a binary mask, covered as dense")
    if activation == "softmax" and shape[1] == 1:
        pytest.skip("softmax over one channel is constant")
    kw = {"activation": activation, "pooling": "sample", "reduction": "none", "squared": shape[1] % 2 == 1}
    ignore = None
    if target_kind == "label_ignore":
        ignore = -1
        kw["ignore_index"] = ignore
    x = random_logits(shape, dtype, device, activation)
    t = random_target(target_kind.replace("_ignore", ""), shape, device, ignore_index=ignore)
    scale = torch.tensor(1.7, device=device)
    loss, grad = _run(lambda a, b: fastdice.dice_loss(a, b, **kw), x, t, scale)
    ref_loss, ref_grad = _run(lambda a, b: reference.dice_loss(a, b, **kw), x, t, scale)
    assert loss.shape == (shape[0], shape[1])
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")


def classic_dice_loss(p, t):
    """The textbook Dice loss that fastdice.DiceLoss() replaces."""
    p, t = p.reshape(-1), t.reshape(-1)
    return 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape,target_shape",
    [((7,), (7,)), ((4, 9), (4, 9)), ((2, 1, 16, 16), (2, 16, 16)), ((3, 5, 8), (3, 5, 8)), ((2, 3, 4, 5, 6), (2, 3, 4, 5, 6))],
    ids=str,
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_default_is_classic_formula(shape, target_shape, dtype, device):
    p = torch.rand(shape, dtype=dtype, device=device)
    t = (torch.rand(target_shape, device=device) > 0.7).to(dtype)
    loss, grad = _run(fastdice.DiceLoss(), p, t, torch.tensor(2.5, device=device))
    ref_loss, ref_grad = _run(classic_dice_loss, p, t, torch.tensor(2.5, device=device))
    assert loss.shape == ()
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_channels_last(device):
    x = torch.randn(2, 4, 12, 10, device=device)
    t = torch.randint(0, 4, (2, 12, 10), device=device)
    kw = {"activation": "softmax", "pooling": "sample", "reduction": "none"}
    variants = {
        "channels_last": x.to(memory_format=torch.channels_last),
        "transposed": x.transpose(2, 3).contiguous().transpose(2, 3),
        "sliced": torch.randn(2, 4, 12, 20, device=device)[..., ::2],
    }
    for name, xv in variants.items():
        loss, grad = _run(lambda a, b: fastdice.dice_loss(a, b, **kw), xv, t, torch.tensor(1.0, device=device))
        ref_loss, ref_grad = _run(lambda a, b: reference.dice_loss(a, b, **kw), xv, t, torch.tensor(1.0, device=device))
        assert_close(loss, ref_loss, torch.float32, name)
        assert_close(grad, ref_grad, torch.float32, name)
    # channels_last input gives a channels_last gradient (no layout copy).
    xc = variants["channels_last"].clone().requires_grad_(True)
    fastdice.dice_loss(xc, t, **kw).sum().backward()
    assert xc.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int32, torch.int64, torch.int16], ids=str)
def test_label_dtypes(label_dtype, device):
    x = torch.randn(2, 5, 9, 11, device=device, dtype=torch.float64)
    t = torch.randint(0, 5, (2, 9, 11), device=device)
    kw = {"activation": "softmax", "pooling": "batch"}
    expected = reference.dice_loss(x, t, **kw)
    assert_close(fastdice.dice_loss(x, t.to(label_dtype), **kw), expected, torch.float64, str(label_dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 3, 8, 7), (2, 2, 4096 + 515)], ids=str)  # a tail of 7; several tiles and chunks
@pytest.mark.parametrize("activation", ["sigmoid", "none"])
@pytest.mark.parametrize("target_dtype", [torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                          torch.uint8], ids=str)
def test_dense_target_dtypes(target_dtype, activation, shape, device):
    """Values and input gradients for every dense target dtype (float input: the
    streaming forward and the elementwise backward serve float32 / bool / uint8)."""
    x = torch.randn(shape, device=device)
    if activation == "none":
        x = torch.rand(shape, device=device)
    t = (torch.rand(shape, device=device) > 0.5).to(target_dtype)
    kw = {"activation": activation, "pooling": "sample", "reduction": "sum"}
    xg = x.clone().requires_grad_(True)
    loss = fastdice.dice_loss(xg, t, **kw)
    xr = x.double().requires_grad_(True)
    expected = reference.dice_loss(xr, t.double(), **kw)
    assert_close(loss, expected, torch.float32, str(target_dtype))
    loss.backward(torch.tensor(0.75, device=device))
    expected.backward(torch.tensor(0.75, dtype=torch.float64, device=device))
    assert_close(xg.grad, xr.grad, torch.float32, f"grad {target_dtype}")


@pytest.mark.parametrize("device", DEVICES)
def test_ignored_elements_get_exactly_zero_gradient(device):
    x = (10 * torch.randn(2, 4, 33, 17, device=device)).requires_grad_(True)
    t = torch.randint(0, 4, (2, 33, 17), device=device)
    ignored = torch.rand(t.shape, device=device) < 0.3
    t[ignored] = 99
    with torch.no_grad():
        x[:, :, :3][ignored[:, None, :3].expand(-1, 4, -1, -1)] = float("nan")  # ignored NaNs stay out
    loss = fastdice.dice_loss(x, t, activation="softmax", ignore_index=99, pooling="sample")
    loss.backward()
    assert torch.isfinite(loss)
    mask = ignored[:, None].expand_as(x)
    assert (x.grad[mask] == 0).all()
    assert (x.grad[~mask] != 0).any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_statistics_against_direct_sums(activation, device):
    """The raw op: each statistic equals its sum written out with torch ops."""
    x = torch.randn(3, 4, 50, 41, dtype=torch.float64, device=device)
    t = torch.rand(3, 4, 50, 41, dtype=torch.float64, device=device)
    stats = fastdice.dice_stats(x, t, activation, True, None)
    p = torch.sigmoid(x) if activation == "sigmoid" else torch.softmax(x, 1)
    dims = (2, 3)
    expected = torch.stack(
        [
            (p * t).sum(dims),
            p.sum(dims),
            t.sum(dims),
            (p * p).sum(dims),
            (t * t).sum(dims),
            (p - t).abs().sum(dims),
            p.abs().sum(dims),
            t.abs().sum(dims),
            torch.full((3, 4), 50.0 * 41, dtype=torch.float64, device=device),
        ],
        dim=-1,
    )
    assert_close(stats[..., : expected.shape[-1]], expected, torch.float64, "stats")
    assert (stats[..., expected.shape[-1] :] == 0).all(), "pixel-loss sums without a pixel loss"
    basic = fastdice.dice_stats(x, t, activation, False, None)
    assert_close(basic[..., :3], expected[..., :3], torch.float64, "basic stats")
    assert (basic[..., 3:] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_large_volume_float32_accuracy(device):
    """float32 sums over ~2M elements stay close to the float64 answer."""
    x = torch.randn(1, 2, 128, 128, 128, device=device)
    t = torch.randint(0, 2, (1, 128, 128, 128), device=device)
    stats = fastdice.dice_stats(x, t, "softmax", False, None)
    p = torch.softmax(x.double(), 1)
    onehot = torch.nn.functional.one_hot(t, 2).movedim(-1, 1).double()
    dims = (2, 3, 4)
    expected = torch.stack([(p * onehot).sum(dims), p.sum(dims), onehot.sum(dims)], -1)
    torch.testing.assert_close(stats[..., :3].double(), expected, rtol=2e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", ["none", "sigmoid"])
@pytest.mark.parametrize("squared", [False, True])
def test_elementwise_backward_paths_agree(squared, activation, dtype, device):
    """A dense target of the input's dtype takes the CPU's one-pass elementwise
    backward; a target of another dtype, or a strided one, the tiled path.
    All must give the reference gradient."""
    x = random_logits((2, 3, 37, 41), dtype, device, activation)
    # Values exact in the input's dtype and in float32 / float64 alike.
    base = torch.rand(2, 3, 37, 41, device=device).to(dtype).double()
    opts = dict(activation=activation, pooling="sample", squared=squared, smooth_nr=0.1, smooth_dr=0.1)
    xr = x.detach().double().requires_grad_()
    (reference.dice_loss(xr, base, **opts) * 1.7).backward()
    strided = torch.zeros(2, 3, 37, 82, dtype=dtype, device=device)[..., ::2]
    strided.copy_(base)
    other = torch.float32 if dtype == torch.float64 else torch.float64
    for target in (base.to(dtype), base.to(other), strided):
        xi = x.detach().clone().requires_grad_()
        (fastdice.dice_loss(xi, target, **opts) * 1.7).backward()
        assert_close(xi.grad, xr.grad, dtype, f"grad, target {target.dtype} stride {target.stride()}")
