"""fastdice.compat.torchmetrics: torchmetrics' segmentation metrics with the fused update.

Oracle: torchmetrics 1.9's own DiceScore / GeneralizedDiceScore / MeanIoU with the
same arguments on the same fresh random inputs; the results must be the same
tensors (values and dtype), per batch (``forward``) and over the set (``compute``).
"""

import subprocess
import sys
import warnings

import pytest
import torch

tm_segmentation = pytest.importorskip("torchmetrics.segmentation")
import torchmetrics  # noqa: E402
from torch._dynamo.testing import CompileCounter  # noqa: E402

import fastdice  # noqa: E402
from fastdice.compat import torchmetrics as fdt  # noqa: E402

C = 4


def _inputs(input_format, kind, gen, batch=3, spatial=(7, 9)):
    """(preds, target) in torchmetrics' input format; sample 0 holds background only,
    so empty classes (NaN scores, infinite generalized-Dice weights) occur."""
    logits = torch.randn(batch, C, *spatial, generator=gen)
    labels = torch.randint(0, C, (batch, *spatial), generator=gen)
    labels[0] = 0
    pred_index = logits.argmax(1)

    def one_hot(index):
        return torch.nn.functional.one_hot(index, C).movedim(-1, 1)

    return {
        ("one-hot", "logits"): (logits, one_hot(labels)),
        ("one-hot", "int"): (one_hot(pred_index), one_hot(labels)),
        ("one-hot", "float-target"): (logits.softmax(1), one_hot(labels).float()),
        ("mixed", "logits"): (logits, labels),
        ("mixed", "index-preds"): (pred_index, one_hot(labels)),
        ("index", "index"): (pred_index, labels),
    }[(input_format, kind)]


INPUTS = [("one-hot", "logits"), ("one-hot", "int"), ("one-hot", "float-target"), ("mixed", "logits"),
          ("mixed", "index-preds"), ("index", "index")]
CONFIGS = (
    [("DiceScore", dict(num_classes=C, average=a, aggregation_level=lvl))
     for a in ("micro", "macro", "weighted", "none", None) for lvl in ("samplewise", "global")]
    + [("GeneralizedDiceScore", dict(num_classes=C, per_class=pc, weight_type=w))
       for pc in (False, True) for w in ("square", "simple", "linear")]
    + [("MeanIoU", dict(num_classes=nc, per_class=pc)) for pc in (False, True) for nc in (C, None)]
)


def _same(actual, expected, what):
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} vs {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    # The same numbers, NaN where torchmetrics has NaN.
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), f"{what}: {actual} vs {expected}"
    assert torch.equal(torch.nan_to_num(actual), torch.nan_to_num(expected)), f"{what}: {actual} vs {expected}"


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("input_format,kind", INPUTS)
def test_same_numbers_as_torchmetrics(input_format, kind, include_background):
    gen = torch.Generator().manual_seed(hash((input_format, kind, include_background)) % 2**31)
    batches = [_inputs(input_format, kind, gen) for _ in range(3)]
    for name, kwargs in CONFIGS:
        if input_format == "index" and kwargs["num_classes"] is None:
            continue
        args = dict(kwargs, include_background=include_background, input_format=input_format)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics' average="micro" notice
            theirs, ours = getattr(tm_segmentation, name)(**args), getattr(fdt, name)(**args)
        for i, (preds, target) in enumerate(batches):
            _same(ours(preds, target), theirs(preds, target), f"{name} {args} forward of batch {i}")
        _same(ours.compute(), theirs.compute(), f"{name} {args} compute")
        ours.reset()
        theirs.reset()
        ours.update(*batches[0])
        theirs.update(*batches[0])
        _same(ours.compute(), theirs.compute(), f"{name} {args} compute after reset")


@pytest.mark.parametrize("name", ["DiceScore", "GeneralizedDiceScore", "MeanIoU"])
def test_is_a_torchmetrics_metric_with_its_states(name):
    ours, theirs = getattr(fdt, name)(num_classes=C), getattr(tm_segmentation, name)(num_classes=C)
    assert isinstance(ours, torchmetrics.Metric) and isinstance(ours, type(theirs))
    # The states Lightning syncs and resets: torchmetrics' own names and reductions.
    assert ours._reductions.keys() == theirs._reductions.keys()
    for key in ours._reductions:
        assert ours._reductions[key] is theirs._reductions[key], key


def test_metric_collection_accepts_them():
    gen = torch.Generator().manual_seed(3)
    collection = torchmetrics.MetricCollection({
        "dice": fdt.DiceScore(num_classes=C, input_format="mixed"),
        "iou": fdt.MeanIoU(num_classes=C, input_format="mixed"),
        "gds": fdt.GeneralizedDiceScore(num_classes=C, input_format="mixed"),
    })
    preds, target = _inputs("mixed", "logits", gen)
    collection.update(preds, target)
    result = collection.compute()
    expected = {
        "dice": tm_segmentation.DiceScore(num_classes=C, input_format="mixed"),
        "iou": tm_segmentation.MeanIoU(num_classes=C, input_format="mixed"),
        "gds": tm_segmentation.GeneralizedDiceScore(num_classes=C, input_format="mixed"),
    }
    for key, metric in expected.items():
        metric.update(preds, target)
        _same(result[key], metric.compute(), key)
    collection.reset()
    assert collection["dice"].numerator == []  # reset through the collection


def _compiled_update_frames(metric, calls=5):
    torch._dynamo.reset()
    counter = CompileCounter()
    update = torch.compile(metric.update, backend=counter)
    gen = torch.Generator().manual_seed(0)
    for _ in range(calls):
        update(torch.randn(2, 3, 8, 8, generator=gen), torch.randint(0, 3, (2, 8, 8), generator=gen))
    return counter.frame_count


@pytest.mark.parametrize("make", [
    lambda: fdt.DiceScore(num_classes=3, input_format="mixed"),
    lambda: fdt.DiceScore(num_classes=3, input_format="mixed", aggregation_level="global"),
    lambda: fdt.GeneralizedDiceScore(num_classes=3, input_format="mixed"),
    lambda: fdt.MeanIoU(input_format="mixed"),
    lambda: fastdice.metrics.DiceScore(),
    lambda: fastdice.metrics.DiceScore(num_classes=3, aggregation_level="global"),
    lambda: fastdice.metrics.JaccardIndex(),
], ids=["tm-dice", "tm-dice-global", "tm-gds", "tm-iou-lazy", "dice", "dice-global", "jaccard"])
def test_compiled_update_compiles_once(make):
    """The first call compiles; the state changing between calls (the list growing, the
    class count set by the first update) recompiles nothing."""
    metric = make()
    assert _compiled_update_frames(metric) == 1
    eager = make()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        eager.update(torch.randn(2, 3, 8, 8, generator=gen), torch.randint(0, 3, (2, 8, 8), generator=gen))
    assert torch.equal(metric.compute(), eager.compute())


def test_float_label_map_gets_the_long_hint():
    metric = fastdice.metrics.DiceScore()
    labels = torch.randint(0, 3, (2, 1, 5, 5)).float()
    with pytest.raises(ValueError, match=r"target\.long\(\)"):
        metric.update(torch.randn(2, 3, 5, 5), labels)
    with pytest.raises(ValueError, match=r"target\.long\(\)"):
        fastdice.metrics.dice_score(torch.randn(2, 3, 5, 5), labels[:, 0])
    metric.update(torch.randn(2, 3, 5, 5), labels.long())  # the fix works


def test_fastdice_imports_without_torchmetrics():
    code = (
        "import sys; sys.modules['torchmetrics'] = None\n"
        "import torch, fastdice\n"
        "m = fastdice.metrics.DiceScore(); m.update(torch.randn(1, 2, 4, 4), torch.randint(0, 2, (1, 4, 4)))\n"
        "m.compute()\n"
        "try:\n    import fastdice.compat.torchmetrics\nexcept ImportError as e:\n    print('ImportError:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ImportError: fastdice.compat.torchmetrics needs torchmetrics" in done.stdout


def test_bad_input_names_what_was_expected():
    metric = fdt.DiceScore(num_classes=C, input_format="mixed")
    with pytest.raises(ValueError, match="num_classes=4 but preds"):
        metric.update(torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5)))
    with pytest.raises(ValueError, match="index-map target must hold integers"):
        metric.update(torch.randn(2, C, 5, 5), torch.randint(0, 3, (2, 5, 5)).float())
    with pytest.raises(TypeError, match="must be tensors"):
        metric.update([1.0], torch.zeros(1))
