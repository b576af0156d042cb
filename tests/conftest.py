import os

import pytest
import torch

import fastdice

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def written_stats(x, p, t, keep, pixel_loss="none", gamma=0.0):
    """The op's 11 statistics [B, C, 11] written out in torch: sums over the
    positions where keep (broadcast to p's shape) is 1, of probabilities p,
    dense target t and, for pixel losses, the per-element loss of logits x."""
    import torch.nn.functional as F

    keep = keep.expand_as(p)
    dims = tuple(range(2, x.dim()))

    def total(v):
        return (v * keep).sum(dims)

    cols = [total(p * t), total(p), total(t), total(p * p), total(t * t), total((p - t).abs()), total(p.abs()),
            total(t.abs()), keep.sum(dims)]
    if pixel_loss == "cross_entropy":
        lp = x.log_softmax(1)
        elem = -lp * (1 - lp.exp()).pow(gamma)
    elif pixel_loss == "binary_cross_entropy":
        bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        elem = torch.exp(gamma * F.logsigmoid(-x * (2 * t - 1))) * bce
    else:
        elem = torch.zeros_like(x)
    cols += [total(elem), total(t * elem)]
    return torch.stack(cols, -1)

# One tolerance table per dtype: (rtol, atol relative to the expected values' scale).
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (2e-2, 1e-2),
    torch.float16: (1e-2, 1e-3),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    """actual ~ expected within the dtype's tolerance; NaN never passes.

    The absolute part scales with the largest expected magnitude, so a
    gradient of size 1e-6 per element is held to the same relative standard
    as a loss of size 1.
    """
    assert torch.isfinite(expected).all(), f"{what}: the oracle itself is not finite"
    assert torch.isfinite(actual).all(), f"{what}: result is not finite: {actual}"
    rtol, atol = TOLERANCES[dtype]
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(
        actual.detach().to(torch.float64),
        expected.detach().to(torch.float64),
        rtol=rtol,
        atol=atol * max(scale, 1e-30),
        msg=lambda m: f"{what}: {m}",
    )


def random_logits(shape, dtype, device, activation, generator=None):
    """Inputs suited to the activation: logits, or probabilities for 'none'."""
    if activation == "none":
        x = torch.rand(shape, dtype=torch.float64, device=device, generator=generator)
    else:
        x = 3 * torch.randn(shape, dtype=torch.float64, device=device, generator=generator)
    return x.to(dtype)


def random_target(kind, shape, device, generator=None, ignore_index=None):
    """'dense' soft float targets, 'onehot' float, 'label' int64 maps (B, *spatial), 'label1' (B, 1, *spatial)."""
    b, c, *spatial = shape
    if kind == "dense":
        return torch.rand(shape, dtype=torch.float32, device=device, generator=generator)
    labels = torch.randint(0, c, (b, *spatial), device=device, generator=generator)
    if ignore_index is not None:
        drop = torch.rand(labels.shape, device=device, generator=generator) < 0.2
        labels = torch.where(drop, torch.full_like(labels, ignore_index), labels)
    if kind == "onehot":
        return torch.nn.functional.one_hot(labels.clamp(0, c - 1), c).movedim(-1, 1).float()
    if kind == "label1":
        return labels.unsqueeze(1)
    return labels


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="run the whole CUDA emulation matrix (tests/test_emulation.py), not the default sample")
    parser.addoption("--nnunet-e2e", action="store_true", default=False,
                     help="run the nnU-Net end-to-end tests (tests/test_nnunet_e2e.py; also FASTDICE_NNUNET_E2E=1)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "nnunet_e2e: nnU-Net planning, preprocessing and training (slow); skipped unless --nnunet-e2e "
        "or FASTDICE_NNUNET_E2E=1 (make test-nnunet-e2e)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--nnunet-e2e") or os.environ.get("FASTDICE_NNUNET_E2E", "") not in ("", "0"):
        return
    skip = pytest.mark.skip(reason="nnU-Net end-to-end: make test-nnunet-e2e (or --nnunet-e2e)")
    for item in items:
        if "nnunet_e2e" in item.keywords:
            item.add_marker(skip)
