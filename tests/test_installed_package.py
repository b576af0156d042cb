"""Smoke test of an installed fastdice (from the sdist or the wheel), run from outside
the checkout: the import, build_config(), one loss forward and backward against
fastdice.reference, and opcheck of the ops.

It runs only where FASTDICE_INSTALLED=1 (CI's package stages set it); in a checkout the
rest of the suite covers the same ground more thoroughly.
"""

import os
import pathlib
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(os.environ.get("FASTDICE_INSTALLED") != "1",
                                reason="FASTDICE_INSTALLED=1 is not set (CI's package stages set it)")

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent


def test_imports_the_installed_copy():
    import importlib.metadata

    import fastdice

    where = pathlib.Path(fastdice.__file__).resolve().parent
    assert where != CHECKOUT / "fastdice", f"imported the checkout's copy {where}, not the installed one"
    assert where.parent.name == "site-packages" and pathlib.Path(sys.prefix).resolve() in where.parents, where
    assert fastdice.__version__ == importlib.metadata.version("fastdice")


def test_build_config_describes_this_build():
    import fastdice

    config = fastdice.build_config()
    assert config["version"] == fastdice.__version__
    assert config["torch_version"] == torch.__version__
    assert config["sanitize"] is False
    assert config["cuda"] is False if os.environ.get("FASTDICE_CUDA") == "0" else isinstance(config["cuda"], bool)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_loss_forward_and_backward_match_the_reference(activation):
    import fastdice
    from fastdice import reference

    g = torch.Generator().manual_seed(7)
    x = (3 * torch.randn(2, 3, 9, 7, generator=g)).requires_grad_(True)
    target = torch.randint(0, 3, (2, 9, 7), generator=g)
    if activation == "sigmoid":
        target = torch.rand(2, 3, 9, 7, generator=g)
    x64 = x.detach().double().requires_grad_(True)
    options = dict(activation=activation, pooling="sample", include_background=False, ignore_index=None)
    loss = fastdice.DiceLoss(**options)(x, target)
    expected = reference.dice_loss(x64, target.double() if target.is_floating_point() else target, **options)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    (0.7 * loss).backward()
    (0.7 * expected).backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-6 * x64.grad.abs().max().item())


def test_opcheck_of_the_ops():
    import fastdice

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, generator=g, requires_grad=True)
    labels = torch.randint(0, 3, (2, 6, 5), generator=g)
    torch.library.opcheck(torch.ops.fastdice.dice_stats.default, (x, labels, "softmax", True, None, "none", 0.0))
    grad_stats = torch.randn(2, 3, fastdice.NUM_STATS, generator=g)
    torch.library.opcheck(torch.ops.fastdice.dice_stats_backward.default,
                          (grad_stats, x.detach(), labels, "softmax", True, None, "none", 0.0))
    torch.library.opcheck(torch.ops.fastdice.confusion_counts.default, (x.detach(), labels, "multiclass", 0.0, None))
    stats = torch.ops.fastdice.dice_stats(x.detach(), labels, "softmax", True, None).requires_grad_(True)
    # (stats, weight, ce_weight, pooling, include_background, form, jaccard, smooth_nr, smooth_dr, log_loss,
    #  log_eps, reduction, lambda_dice, lambda_ce, ce_family, ce_label_map, ce_positions, label_smoothing)
    epilogue = (stats, None, None, "sample", False, "plain", False, 1.0, 1.0, False, 1e-7, "mean", 1.0, 0.0, "none",
                True, 0, 0.0)
    torch.library.opcheck(torch.ops.fastdice.dice_loss_from_stats.default, epilogue)
