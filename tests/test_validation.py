"""Bad input gets a clear exception naming the argument and what was expected."""

import pytest
import torch

import fastdice


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"activation": "relu"}, "activation"),
        ({"pooling": "pixels"}, "pooling"),
        ({"reduction": "avg"}, "reduction"),
        ({"smooth_nr": -1.0}, "smooth_nr"),
        ({"smooth_dr": float("nan")}, "smooth_dr"),
        ({"smooth_dr": float("inf")}, "smooth_dr"),
        ({"weight": [1.0, -2.0, 1.0]}, "weight"),
        ({"weight": [1.0, float("nan"), 1.0]}, "weight"),
        ({"weight": torch.tensor([1.0, -1.0, 1.0])}, "weight"),
        ({"squared": "yes"}, "squared"),
        ({"ignore_index": 1.5}, "ignore_index"),
        ({"log_eps": 0.0}, "log_eps"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastdice.DiceLoss(**options)
    with pytest.raises((ValueError, TypeError), match=match):
        fastdice.dice_loss(_x(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)), **options)


def test_unknown_option_name():
    with pytest.raises(TypeError, match="smoth"):
        fastdice.DiceLoss(smoth=1.0)


@pytest.mark.parametrize(
    "input,target,match",
    [
        (_x(2, 3, 4, 4), torch.rand(2, 3, 4, 5), "target must have the input's shape"),
        (_x(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 5)), "label map"),
        (_x(2, 3, 4, 4), torch.randint(0, 3, (3, 4, 4)), "label map"),
        (torch.randint(0, 3, (2, 3, 4, 4)), torch.rand(2, 3, 4, 4), "input must be float"),
        (torch.ones(2, 3, 4, 4, dtype=torch.bool), torch.rand(2, 3, 4, 4), "input must be float"),
        (torch.randn(2, 3, 4, dtype=torch.complex64), torch.rand(2, 3, 4), "input must be float"),
        (_x(2, 3, 4), torch.randn(2, 3, 4, dtype=torch.complex64), "target must be real"),
        (torch.tensor(1.0), torch.tensor(1.0), "at least one dimension"),
    ],
)
def test_bad_tensors(input, target, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastdice.dice_loss(input, target, activation="softmax", pooling="sample")


def test_label_out_of_range_raises_on_cpu():
    t = torch.randint(0, 3, (2, 5, 5))
    t[1, 2, 3] = 3
    with pytest.raises(ValueError, match=r"label 3 .*outside \[0, 3\)"):
        fastdice.dice_loss(_x(2, 3, 5, 5), t, activation="softmax")
    t[1, 2, 3] = -1
    with pytest.raises(ValueError, match=r"label -1"):
        fastdice.dice_loss(_x(2, 3, 5, 5), t, activation="softmax")
    # ... unless it is the ignore_index
    assert torch.isfinite(fastdice.dice_loss(_x(2, 3, 5, 5), t, activation="softmax", ignore_index=-1))
    # The most negative int64 is a label like any other (it once stood for "no ignore_index").
    t[1, 2, 3] = torch.iinfo(torch.int64).min
    with pytest.raises(ValueError, match=r"label -9223372036854775808"):
        fastdice.dice_loss(_x(2, 3, 5, 5), t, activation="softmax")


def test_ignore_index_needs_label_map():
    with pytest.raises(ValueError, match="ignore_index needs an integer label-map"):
        fastdice.dice_loss(_x(2, 3, 4), torch.rand(2, 3, 4), ignore_index=0)


def test_weight_length():
    with pytest.raises(ValueError, match="weight"):
        fastdice.DiceLoss(weight=[1.0, 2.0], pooling="sample")(torch.rand(2, 3, 4), torch.randint(0, 3, (2, 4)))


def test_one_dimensional_input_needs_class_free_options():
    p, t = torch.rand(10), torch.rand(10)
    fastdice.dice_loss(p, t)  # the classic flat formula
    with pytest.raises(ValueError, match="no class axis"):
        fastdice.dice_loss(p, t, activation="softmax")


def test_softmax_single_channel_warns():
    with pytest.warns(UserWarning, match="single channel"):
        fastdice.dice_loss(_x(2, 1, 8), torch.rand(2, 1, 8), activation="softmax")


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4), (2, 0, 4)])
def test_empty_tensors_no_crash(shape):
    x = torch.randn(shape, requires_grad=True)
    t = torch.rand(shape)
    stats = fastdice.dice_stats(x, t, "sigmoid", True, None)
    assert stats.shape == (shape[0], shape[1], fastdice.NUM_STATS) and (stats == 0).all()
    stats.sum().backward()
    assert x.grad.shape == x.shape


def test_raw_op_validates():
    with pytest.raises(ValueError, match="activation"):
        torch.ops.fastdice.dice_stats(_x(2, 3, 4), torch.rand(2, 3, 4), "tanh", False, None)
    with pytest.raises(ValueError, match="grad_stats must have shape"):
        torch.ops.fastdice.dice_stats_backward(torch.rand(2, 3, 4), _x(2, 3, 4), torch.rand(2, 3, 4), "none", False, None)
    with pytest.raises(ValueError, match=r"input must have shape \(B, C, \*spatial\)"):
        torch.ops.fastdice.dice_stats(_x(4), torch.rand(4), "none", False, None)


def test_dense_target_outside_unit_interval_raises_on_cpu():
    t = (torch.rand(2, 3, 6, 6) > 0.5).float() * 255  # the classic 0/255 mask
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*255"):
        fastdice.dice_loss(_x(2, 3, 6, 6), t, activation="sigmoid")
    t = torch.rand(2, 3, 6, 6)
    t[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]; got nan at target\[1, 2, 3, 4\] \(sample 1, class 2"):
        fastdice.dice_loss(_x(2, 3, 6, 6), t, activation="sigmoid")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dense_target_outside_unit_interval_poisons_on_cuda():
    t = torch.rand(2, 3, 6, 6, device="cuda")
    t[1, 0, 0, 0] = 255.0
    stats = fastdice.dice_stats(_x(2, 3, 6, 6).cuda(), t, "sigmoid", False, None)
    assert torch.isfinite(stats[0]).all() and torch.isnan(stats[1]).all()


# Edge cases with defined results (see the README's "Edge cases").


def test_empty_ground_truth_and_prediction():
    p = torch.zeros(2, 3, 8, 8, requires_grad=True)
    t = torch.zeros(2, 3, 8, 8)
    loss = fastdice.dice_loss(p, t, pooling="sample", smooth_nr=1e-5, smooth_dr=1e-5)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(p.grad).all()
    # Both smoothing terms 0: 0/0, the formula's own NaN (asked for explicitly).
    assert torch.isnan(fastdice.dice_loss(p, t, pooling="sample", smooth_nr=0.0, smooth_dr=0.0))


def test_empty_ground_truth_nonempty_prediction_is_almost_one():
    p = torch.full((1, 2, 8, 8), 0.5)
    loss = fastdice.dice_loss(p, torch.zeros(1, 2, 8, 8), pooling="sample", smooth_nr=1e-5, smooth_dr=1e-5)
    assert 0.999 < loss.item() <= 1.0


def test_all_ignored_batch_is_a_differentiable_zero():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    t = torch.full((2, 5, 5), 255)
    loss = fastdice.dice_loss(x, t, activation="softmax", pooling="batch", ignore_index=255)
    assert loss.item() == 0.0
    loss.backward()
    assert (x.grad == 0).all()


def test_nan_input_propagates():
    x = torch.randn(2, 3, 5, 5)
    x[0, 1, 2, 2] = float("nan")
    t = torch.randint(0, 3, (2, 5, 5))
    assert torch.isnan(fastdice.dice_loss(x, t, activation="softmax"))
    per_class = fastdice.dice_loss(x, t, activation="sigmoid", pooling="sample", reduction="none")
    # sigmoid is elementwise: only the NaN's own (sample, class) is NaN
    assert torch.isnan(per_class[0, 1]) and torch.isfinite(per_class[0, 0]) and torch.isfinite(per_class[1]).all()


def test_input_and_target_on_different_devices():
    with pytest.raises(ValueError, match="input is on cpu but target is on meta"):
        fastdice.dice_loss(_x(2, 3, 4), torch.empty(2, 3, 4, device="meta"))
