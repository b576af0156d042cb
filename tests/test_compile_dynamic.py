"""Every public loss class, native and compat, compiles ONE graph under
torch.compile(fullgraph=True, dynamic=True) for many batch and spatial sizes,
and the compiled values and gradients equal eager ones."""

import pytest
import torch

import fastdice
from fastdice.compat import monai as fmonai
from fastdice.compat import smp as fsmp

from conftest import assert_close

C = 3
# Dynamo specializes sizes 0 and 1 itself (a torch rule), so they are left out;
# no spatial size equals another in the first call (duck sizing would tie them).
BATCH_SIZES = list(range(2, 12))  # 10 batch sizes
SPATIAL_SIZES = [(5, 7), (9, 4), (6, 13)]  # 3 spatial sizes


def labels(b, h, w, g):
    return torch.randint(0, C, (b, h, w), generator=g)


def labels1(b, h, w, g):
    return torch.randint(0, C, (b, 1, h, w), generator=g)


def onehot(b, h, w, g):
    return torch.nn.functional.one_hot(labels(b, h, w, g), C).movedim(-1, 1).double()


def soft(b, h, w, g):
    return torch.rand(b, C, h, w, generator=g, dtype=torch.float64)


def binary(b, h, w, g):
    return torch.randint(0, 2, (b, 1, h, w), generator=g).double()


CASES = [
    pytest.param(lambda: fastdice.DiceLoss(activation="softmax", pooling="sample"), labels, C, id="native-DiceLoss-softmax-sample-labels"),
    pytest.param(lambda: fastdice.DiceLoss(activation="sigmoid", pooling="batch"), soft, C, id="native-DiceLoss-sigmoid-batch-soft"),
    pytest.param(lambda: fastdice.DiceCELoss(), labels, C, id="native-DiceCELoss-labels"),
    pytest.param(lambda: fastdice.DiceCELoss(pooling="sample"), soft, C, id="native-DiceCELoss-sample-dense"),
    pytest.param(lambda: fastdice.DiceCELoss(activation="sigmoid"), soft, C, id="native-DiceCELoss-sigmoid-dense"),
    pytest.param(lambda: fastdice.DiceCELoss(return_terms=True), soft, C, id="native-DiceCELoss-terms-dense"),
    pytest.param(lambda: fastdice.DiceFocalLoss(), labels, C, id="native-DiceFocalLoss-labels"),
    pytest.param(lambda: fastdice.DiceFocalLoss(activation="sigmoid"), soft, C, id="native-DiceFocalLoss-sigmoid-dense"),
    pytest.param(lambda: fastdice.TverskyLoss(activation="softmax", alpha=0.3, beta=0.7), labels, C, id="native-TverskyLoss"),
    pytest.param(lambda: fastdice.GeneralizedDiceLoss(activation="softmax"), labels, C, id="native-GeneralizedDiceLoss"),
    pytest.param(lambda: fmonai.DiceLoss(softmax=True, to_onehot_y=True), labels1, C, id="monai-DiceLoss"),
    pytest.param(lambda: fmonai.GeneralizedDiceLoss(softmax=True, to_onehot_y=True), labels1, C, id="monai-GeneralizedDiceLoss"),
    pytest.param(lambda: fmonai.TverskyLoss(softmax=True, to_onehot_y=True), labels1, C, id="monai-TverskyLoss"),
    pytest.param(lambda: fmonai.DiceCELoss(softmax=True, to_onehot_y=True), labels1, C, id="monai-DiceCELoss-labels"),
    pytest.param(lambda: fmonai.DiceCELoss(softmax=True), onehot, C, id="monai-DiceCELoss-onehot"),
    pytest.param(lambda: fmonai.DiceFocalLoss(softmax=True, to_onehot_y=True), labels1, C, id="monai-DiceFocalLoss"),
    pytest.param(lambda: fmonai.GeneralizedDiceFocalLoss(softmax=True, to_onehot_y=True), labels1, C, id="monai-GeneralizedDiceFocalLoss"),
    pytest.param(lambda: fsmp.DiceLoss("multiclass"), labels, C, id="smp-DiceLoss-multiclass"),
    pytest.param(lambda: fsmp.JaccardLoss("multiclass"), labels, C, id="smp-JaccardLoss-multiclass"),
    pytest.param(lambda: fsmp.TverskyLoss("multiclass", alpha=0.3, beta=0.7), labels, C, id="smp-TverskyLoss-multiclass"),
    pytest.param(lambda: fsmp.DiceLoss("binary"), binary, 1, id="smp-DiceLoss-binary"),
]


class CountingBackend:
    """A torch.compile backend that counts the graphs dynamo hands it and runs them as they are."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def _loss_value(out):
    return out.loss if isinstance(out, tuple) else out


@pytest.mark.parametrize("make_loss, make_target, channels", CASES)
def test_one_graph_for_every_batch_and_spatial_size(make_loss, make_target, channels):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    loss_fn = make_loss()
    backend = CountingBackend()
    compiled = torch.compile(loss_fn, backend=backend, fullgraph=True, dynamic=True)
    g = torch.Generator().manual_seed(14)
    calls = 0
    for h, w in SPATIAL_SIZES:
        for b in BATCH_SIZES:
            x = (3 * torch.randn(b, channels, h, w, generator=g, dtype=torch.float64)).requires_grad_(True)
            t = make_target(b, h, w, g)
            grad_out = torch.tensor(0.7, dtype=torch.float64)
            got = compiled(x, t)
            (_loss_value(got) * grad_out).backward()
            got_grad, x.grad = x.grad, None
            expected = loss_fn(x, t)
            (_loss_value(expected) * grad_out).backward()
            what = f"B={b} H={h} W={w}"
            if isinstance(expected, tuple):
                for name, e, a in zip(expected._fields, expected, got):
                    assert_close(a, e, torch.float64, f"{what} {name}")
            else:
                assert_close(got, expected, torch.float64, what)
            assert_close(got_grad, x.grad, torch.float64, f"{what} grad")
            calls += 1
    assert calls == 30
    assert backend.graphs == 1, f"{backend.graphs} graphs for 30 calls"
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
