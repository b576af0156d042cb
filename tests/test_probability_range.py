"""activation='none' means probabilities: a value outside [0, 1] (logits passed
by mistake) must not give a plausible-looking loss. CPU: ValueError found
while the kernel reads the input, naming the value and its index; CUDA: the
sample's statistics become NaN (no host sync). Ignored positions are exempt,
as they are from every statistic. The compat layers keep their peers' rule
(any values without an activation)."""

import pytest
import torch

import fastdice
from fastdice import reference

from conftest import DEVICES, assert_close

NATIVE = [
    lambda: fastdice.DiceLoss(),
    lambda: fastdice.DiceLoss(pooling="sample", squared=True),
    lambda: fastdice.DiceLoss(soft_label=True, jaccard=True),
    lambda: fastdice.TverskyLoss(alpha=0.3, beta=0.7),
    lambda: fastdice.GeneralizedDiceLoss(),
]


@pytest.mark.parametrize("make", NATIVE, ids=["dice", "squared", "soft_label", "tversky", "generalized"])
@pytest.mark.parametrize("bad", [1.5, -0.25, float("nan"), float("inf")], ids=["above", "below", "nan", "inf"])
def test_logits_with_activation_none_raise_on_cpu(make, bad):
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    x[1, 2, 3, 4] = bad
    t = torch.randint(0, 3, (2, 5, 7))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]; got .* at input\[1, 2, 3, 4\]") as err:
        make()(x, t)
    assert "activation='sigmoid'" in str(err.value) and "'softmax'" in str(err.value)


def test_real_logits_are_refused_with_a_dense_target():
    x = torch.randn(4, 2, 16, 16)  # what a model returns
    t = (torch.rand(4, 2, 16, 16) > 0.5).float()
    with pytest.raises(ValueError, match="activation='none' the input must hold probabilities"):
        fastdice.dice_loss(x, t)
    fastdice.dice_loss(x, t, activation="sigmoid")  # the fix the message names


@pytest.mark.parametrize("device", DEVICES)
def test_bounds_and_ignored_positions_pass(device):
    """0 and 1 are probabilities; an ignored position is never read as one."""
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64, device=device)
    x[0, 0, 0, 0], x[0, 1, 0, 1] = 0.0, 1.0
    labels = torch.randint(0, 3, (2, 6, 5), device=device)
    labels[1, 2, 3] = 9
    x_bad = x.clone()
    x_bad[1, :, 2, 3] = torch.tensor([7.0, float("nan"), -3.0], dtype=torch.float64)
    x_bad.requires_grad_(True)
    loss = fastdice.DiceLoss(ignore_index=9, pooling="sample")(x_bad, labels)
    loss.backward()
    expected = reference.dice_loss(x, labels, ignore_index=9, pooling="sample")
    assert_close(loss, expected, torch.float64, "ignored logits")
    assert (x_bad.grad[1, :, 2, 3] == 0).all()


def test_op_identity_reads_any_value():
    x = 3 * torch.randn(2, 3, 17, dtype=torch.float64)
    t = torch.rand(2, 3, 17, dtype=torch.float64)
    stats = torch.ops.fastdice.dice_stats(x, t, "identity", True, None)
    assert_close(stats[..., 0], (x * t).sum(-1), torch.float64, "sum p*t of raw values")
    with pytest.raises(ValueError, match="probabilities"):
        torch.ops.fastdice.dice_stats(x, t, "none", True, None)


def test_compat_layers_take_any_values_as_their_peers():
    monai_losses = pytest.importorskip("monai.losses")
    smp_losses = pytest.importorskip("segmentation_models_pytorch.losses")
    from fastdice.compat import monai as fmonai
    from fastdice.compat import smp as fsmp

    x = 2 * torch.randn(2, 3, 6, 5, dtype=torch.float64)
    t = (torch.rand(2, 3, 6, 5) > 0.5).double()
    for name in ("DiceLoss", "GeneralizedDiceLoss", "TverskyLoss"):
        ours = getattr(fmonai, name)()(x, t)
        theirs = getattr(monai_losses, name)()(x, t)
        assert_close(ours, theirs, torch.float64, f"monai {name} without activation")
    ours = fmonai.DiceLoss(other_act=torch.tanh)(x, t)
    assert_close(ours, monai_losses.DiceLoss(other_act=torch.tanh)(x, t), torch.float64, "monai other_act")
    ours = fsmp.DiceLoss("multilabel", from_logits=False)(x, t)
    assert_close(ours, smp_losses.DiceLoss("multilabel", from_logits=False)(x, t), torch.float64, "smp")


def test_compat_nnunet_takes_any_values_without_nonlin():
    nn_dice = pytest.importorskip("nnunetv2.training.loss.dice")
    from fastdice.compat import nnunet as fnn

    x = 2 * torch.randn(2, 3, 6, 5)
    y = torch.randint(0, 3, (2, 1, 6, 5))
    for name in ("SoftDiceLoss", "MemoryEfficientSoftDiceLoss"):
        ours = getattr(fnn, name)(apply_nonlin=None, ddp=False)(x, y)
        theirs = getattr(nn_dice, name)(apply_nonlin=None, ddp=False)(x, y)
        assert_close(ours, theirs, torch.float32, f"nnunet {name} without nonlin")


def test_metrics_threshold_scores_of_any_range():
    """The confusion counts compare scores with a threshold: no [0, 1] rule."""
    x = 4 * torch.randn(2, 3, 8, 8)
    t = torch.randint(0, 3, (2, 8, 8))
    fastdice.metrics.dice_score(x, t, num_classes=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", ["warp", "thread"])
def test_cuda_poisons_the_sample(strategy, monkeypatch):
    monkeypatch.setenv("FASTDICE_CUDA_FORWARD", strategy)
    x = torch.rand(3, 4, 40, 50, device="cuda")
    x[1, 2, 7, 9] = 1.25
    t = torch.randint(0, 4, (3, 40, 50), device="cuda")
    stats = torch.ops.fastdice.dice_stats(x, t, "none", True, None)
    assert torch.isnan(stats[1]).all()
    clean = torch.ops.fastdice.dice_stats(x[[0, 2]].cpu(), t[[0, 2]].cpu(), "none", True, None)
    assert_close(stats[[0, 2]].cpu(), clean, torch.float32, "other samples")
    assert torch.isnan(fastdice.DiceLoss()(x, t))


@pytest.mark.parametrize("where", ["tail", "second_chunk"])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool, torch.uint8], ids=str)
@pytest.mark.parametrize("bad", [1.5, -0.25, float("nan"), float("inf"), float("-inf")],
                         ids=["above", "below", "nan", "inf", "-inf"])
def test_float32_probabilities_with_a_dense_target_are_checked(bad, target_dtype, where):
    """The seed's own case (float32 probabilities, dense target: the CPU's streaming
    forward, which checks by range and by its sums) finds every kind of bad value."""
    x = torch.rand(2, 3, 4096 + 21)
    t = (torch.rand(x.shape) > 0.5).to(target_dtype)
    pos = 4096 + 17 if where == "tail" else 4096 + 3
    x[1, 2, pos] = bad
    with pytest.raises(ValueError, match=rf"probabilities in \[0, 1\]; got .* at input\[1, 2, {pos}\]"):
        fastdice.DiceLoss()(x, t)
    fastdice.DiceLoss(pooling="sample")(x.clamp(0, 1).nan_to_num(0.5), t)  # clean: passes


@pytest.mark.parametrize("bad", [2.0, float("nan"), -1.0, float("inf")], ids=["two", "nan", "negative", "inf"])
def test_float32_dense_target_outside_unit_interval_is_found_by_the_streaming_forward(bad):
    x = torch.rand(2, 3, 4096 + 21)
    t = (torch.rand(x.shape) > 0.5).float()
    t[0, 1, 4100] = bad
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]; got .* at target\[0, 1, 4100\]"):
        fastdice.DiceLoss()(x, t)
    t8 = (torch.rand(x.shape) > 0.5).to(torch.uint8)
    t8[1, 0, 7] = 2
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]; got 2.* at target\[1, 0, 7\]"):
        fastdice.DiceLoss(activation="sigmoid")(torch.randn(x.shape), t8)
