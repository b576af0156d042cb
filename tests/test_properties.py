"""Property-based tests (hypothesis): random shapes, dtypes, options and
targets; fastdice equals the reference in value and gradient, the loss stays
in its allowed range, and permuting the batch permutes per-sample results."""

import pytest
import torch

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastdice  # noqa: E402
from fastdice import reference  # noqa: E402

from conftest import assert_close  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:fastdice.*single channel")

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    b = draw(st.integers(1, 3))
    c = draw(st.integers(1, 6))
    spatial = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=3)))
    # float64: random option mixes include ill-conditioned ones (soft-label
    # cancellation under -log of a tiny score) where two float32 summation
    # orders legitimately differ by more than the float32 tolerance; float32
    # and half precision are covered by the parametrized tests.
    dtype = torch.float64
    activation = draw(st.sampled_from(["none", "sigmoid", "softmax"] if c > 1 else ["none", "sigmoid"]))
    label = c > 1 and draw(st.booleans())
    options = {
        "activation": activation,
        "pooling": draw(st.sampled_from(["global", "batch", "sample"])),
        "include_background": draw(st.booleans()),
        "smooth_nr": draw(st.sampled_from([1e-5, 0.5, 1.0])),
        "smooth_dr": draw(st.sampled_from([1e-5, 1.0, 2.0])),
        "squared": draw(st.booleans()),
        "jaccard": draw(st.booleans()),
        "log_loss": draw(st.booleans()),
        "soft_label": draw(st.booleans()),
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
    }
    if draw(st.booleans()):
        options["weight"] = draw(st.lists(st.floats(0.0, 3.0), min_size=c, max_size=c))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    shape = (b, c, *spatial)
    if activation == "none":
        x = torch.rand(shape, generator=g, dtype=torch.float64)
    else:
        x = 4 * torch.randn(shape, generator=g, dtype=torch.float64)
    if label:
        t = torch.randint(0, c, (b, *spatial), generator=g)
        if draw(st.booleans()):
            options["ignore_index"] = -100
            t[torch.rand(t.shape, generator=g) < 0.3] = -100
    else:
        t = torch.rand(shape, generator=g, dtype=torch.float64)
    return x.to(dtype), t, options


def _loss_and_grad(fn, x, t, options):
    x = x.clone().requires_grad_(True)
    loss = fn(x, t, **options)
    grad_out = torch.linspace(0.3, 1.7, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    loss.backward(grad_out)
    return loss.detach(), x.grad


@SETTINGS
@given(problems())
def test_matches_reference(problem):
    x, t, options = problem
    loss, grad = _loss_and_grad(fastdice.dice_loss, x, t, options)
    ref_loss, ref_grad = _loss_and_grad(reference.dice_loss, x, t, options)
    assert_close(loss, ref_loss, x.dtype, f"loss {options}")
    assert_close(grad, ref_grad, x.dtype, f"grad {options}")


@SETTINGS
@given(problems())
def test_loss_in_allowed_range(problem):
    x, t, options = problem
    options = dict(options, reduction="none", log_loss=False)
    options.pop("weight", None)
    loss = fastdice.dice_loss(x, t, **options)
    # 1 - score with score in [0, 1] for probabilities in [0, 1] and smooth_nr <= smooth_dr * 2.
    if options["smooth_nr"] <= options["smooth_dr"]:
        assert (loss >= -1e-6).all() and (loss <= 1 + 1e-6).all(), loss


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_batch_permutation_permutes_per_sample_results(problem, rnd):
    x, t, options = problem
    options = dict(options, pooling="sample", reduction="none")
    perm = list(range(x.shape[0]))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    loss = fastdice.dice_loss(x, t, **options)
    permuted = fastdice.dice_loss(x[perm], t[perm], **options)
    assert torch.equal(permuted, loss[perm])
