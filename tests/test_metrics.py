"""fastdice.metrics: the fused confusion counts against a plain-torch oracle
(exact integers), the scores against torchmetrics 1.9 and MONAI's DiceMetric,
accumulation, DDP (gloo, 2 processes), errors, and CUDA vs CPU."""

import math
import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import fastdice
from fastdice import metrics as M

from conftest import DEVICES

LABEL_KINDS = ("label", "label1", "label_u8", "label_ignore")
DENSE_KINDS = ("onehot_float", "onehot_bool", "onehot_int", "multihot_half")


# ----------------------------------------------------------------------------
# The oracle: argmax / threshold and one-hot in plain torch, then sums
# ----------------------------------------------------------------------------


def oracle_counts(x, target, mode, threshold=0.0, ignore_index=None, label=True):
    """[B, C, 3] int64 TP, FP, FN. threshold is in the input's units (input > threshold).

    label: whether target is a label map ((B, *spatial) or (B, 1, *spatial)) or dense 0/1.
    """
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    if mode == "multiclass":
        pred = F.one_hot(torch.argmax(xf, dim=1), c).movedim(-1, 1).bool()
    else:
        pred = xf.double() > threshold
    if label:
        lab = target.reshape(b, -1).long()
        valid = torch.ones_like(lab, dtype=torch.bool) if ignore_index is None else lab != ignore_index
        if mode == "binary" or (mode == "multilabel" and c == 1):
            tgt = (lab == 1).unsqueeze(1)
        else:
            tgt = F.one_hot(torch.where(valid, lab, 0), c).movedim(-1, 1).bool()
        valid = valid.unsqueeze(1)
    else:
        tgt = target.reshape(b, c, -1) == 1
        valid = torch.ones_like(tgt[:, :1])
    tp = (pred & tgt & valid).sum(-1)
    fp = (pred & ~tgt & valid).sum(-1)
    fn = (~pred & tgt & valid).sum(-1)
    return torch.stack([tp, fp, fn], dim=-1)


def make_target(kind, shape, device="cpu", ignore_index=255, binary=False, generator=None):
    """(target, is_label, ignore_index) of the given kind for input shape (B, C, *spatial)."""
    b, c, *spatial = shape
    high = 2 if binary else c
    if kind.startswith("label"):
        lab = torch.randint(0, high, (b, *spatial), device=device, generator=generator)
        ignore = None
        if kind == "label_ignore":
            drop = torch.rand(lab.shape, device=device, generator=generator) < 0.2
            lab = torch.where(drop, torch.full_like(lab, ignore_index), lab)
            ignore = ignore_index
        if kind == "label1":
            lab = lab.unsqueeze(1)
        if kind == "label_u8":
            lab = lab.to(torch.uint8)
        return lab, True, ignore
    if kind == "multihot_half":
        return (torch.rand(shape, device=device, generator=generator) < 0.3).half(), False, None
    lab = torch.randint(0, c, (b, *spatial), device=device, generator=generator)
    onehot = F.one_hot(lab, c).movedim(-1, 1)
    dtype = {"onehot_float": torch.float32, "onehot_bool": torch.bool, "onehot_int": torch.int64}[kind]
    return onehot.to(dtype), False, None


def random_input(shape, dtype=torch.float32, device="cpu", generator=None):
    return (2 * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype=dtype, device=device)


SHAPES = [(2, 3, 17, 13), (2, 5, 9, 8, 7), (3, 2, 70, 61), (1, 2, 9001), (2, 5, 3)]


# ----------------------------------------------------------------------------
# Counts: exact integer agreement with the oracle
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", LABEL_KINDS + DENSE_KINDS)
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_counts_match_oracle(mode, kind, shape):
    x = random_input(shape)
    t, is_label, ignore = make_target(kind, shape)
    got = M.confusion_counts(x, t, mode=mode, activation="sigmoid", threshold=0.5, ignore_index=ignore)
    assert got.dtype == torch.int64 and got.shape == (shape[0], shape[1], 3)
    expected = oracle_counts(x, t, mode, 0.0, ignore, label=is_label)
    assert torch.equal(got, expected)
    # the counts add up: every valid position is predicted once (multiclass) and is one class (labels)
    if mode == "multiclass" and is_label:
        valid = t.numel() if ignore is None else int((t != ignore).sum())
        assert int(got[..., 0].sum() + got[..., 1].sum()) == valid
        assert int(got[..., 0].sum() + got[..., 2].sum()) == valid


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_counts_input_dtypes(mode, dtype):
    shape = (2, 4, 33, 31)
    x = random_input(shape, dtype)
    t, _, ignore = make_target("label_ignore", shape)
    got = M.confusion_counts(x, t, mode=mode, threshold=0.3, ignore_index=ignore)
    assert torch.equal(got, oracle_counts(x, t, mode, 0.3, ignore))


@pytest.mark.parametrize("kind", ["label", "label1", "label_ignore", "onehot_float", "onehot_bool"])
@pytest.mark.parametrize("mode", ["binary", "multilabel"])  # multilabel with one channel is binary
def test_binary_counts(mode, kind):
    shape = (3, 1, 29, 23)
    x = random_input(shape)
    t, is_label, ignore = make_target(kind, shape, binary=True)
    if not is_label:
        t = (torch.rand(shape) < 0.4).to(t.dtype)
    got = M.confusion_counts(x, t, mode=mode, activation="sigmoid", ignore_index=ignore)
    assert torch.equal(got, oracle_counts(x, t, "binary", 0.0, ignore, label=is_label))


def test_multiclass_argmax_ties_nan_and_inf_follow_torch_argmax():
    # Few distinct values: many ties, which torch.argmax resolves to the first maximum;
    # NaN counts as the maximum (the first NaN wins); infinities.
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 3, (3, 6, 40, 37), generator=g).float()
    special = torch.rand(x.shape, generator=g)
    x[special < 0.03] = float("nan")
    x[(special > 0.5) & (special < 0.53)] = float("inf")
    x[(special > 0.6) & (special < 0.63)] = -float("inf")
    x[0, :, 0, 0] = -float("inf")  # all -inf: class 0
    x[0, :, 0, 1] = float("nan")  # all NaN: class 0
    t = torch.randint(0, 6, (3, 40, 37), generator=g)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        xd = x.to(dtype)
        assert torch.equal(M.confusion_counts(xd, t), oracle_counts(xd, t, "multiclass")), dtype


def test_threshold_is_exact_at_the_boundary():
    # Values right at and around a threshold that float32 cannot represent (0.1) and one it can (0.25).
    for thr in (0.1, 0.25, 0.7):
        f = torch.tensor(thr, dtype=torch.float32)
        near = torch.stack([torch.nextafter(f, torch.tensor(-1.0)), f, torch.nextafter(f, torch.tensor(2.0))])
        x = near.repeat(2, 3, 11)[:, :, :31].contiguous()  # (2, 3, 31)
        x = x[torch.randperm(2)][:, torch.randperm(3)]
        t = (torch.rand(x.shape) < 0.5).float()
        for dtype in (torch.float32, torch.float64):
            xd = x.to(dtype)
            got = M.confusion_counts(xd, t, mode="multilabel", threshold=thr)
            assert torch.equal(got, oracle_counts(xd, t, "multilabel", thr, label=False)), (thr, dtype)
    # NaN is never above a threshold (as NaN > t is False)
    x = torch.full((1, 2, 5), float("nan"))
    got = M.confusion_counts(x, torch.ones(1, 2, 5), mode="multilabel")
    assert got[..., 0].sum() == 0 and got[..., 2].sum() == 10


@pytest.mark.parametrize("threshold", [0.5, 0.2, 0.9])
def test_sigmoid_threshold_on_logits(threshold):
    x = random_input((2, 3, 25, 24), torch.float64)
    t, _, _ = make_target("onehot_float", x.shape)
    got = M.confusion_counts(x, t, mode="multilabel", activation="sigmoid", threshold=threshold)
    pred = torch.sigmoid(x) > threshold
    tgt = t.bool()
    expected = torch.stack([(pred & tgt).sum((2, 3)), (pred & ~tgt).sum((2, 3)), (~pred & tgt).sum((2, 3))], -1)
    assert torch.equal(got, expected)


def test_strided_inputs_and_targets():
    x = random_input((2, 4, 20, 22)).to(memory_format=torch.channels_last)
    t = torch.randint(0, 4, (2, 22, 20)).transpose(1, 2)  # non-contiguous label map
    assert torch.equal(M.confusion_counts(x, t), oracle_counts(x, t, "multiclass"))
    xs = random_input((2, 4, 20, 45))[..., ::2]  # spatial stride 2
    ts = torch.randint(0, 4, (2, 20, 23))
    assert torch.equal(M.confusion_counts(xs, ts), oracle_counts(xs, ts, "multiclass"))
    xt = random_input((2, 4, 9, 10)).transpose(2, 3)  # spatial dims that do not collapse
    oh = F.one_hot(torch.randint(0, 4, (2, 10, 9)), 4).movedim(-1, 1).float()
    assert torch.equal(M.confusion_counts(xt, oh, mode="multilabel"), oracle_counts(xt, oh, "multilabel", 0.5, label=False))


def test_empty_tensors():
    assert torch.equal(M.confusion_counts(torch.randn(0, 3, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long)),
                       torch.zeros(0, 3, 3, dtype=torch.long))
    assert torch.equal(M.confusion_counts(torch.randn(2, 3, 0), torch.zeros(2, 0, dtype=torch.long)),
                       torch.zeros(2, 3, 3, dtype=torch.long))


def test_counts_need_no_grad_and_are_not_differentiable():
    x = random_input((2, 3, 8, 8)).requires_grad_(True)
    t, _, _ = make_target("label", x.shape)
    counts = M.confusion_counts(x, t)
    assert not counts.requires_grad
    assert torch.equal(counts, oracle_counts(x.detach(), t, "multiclass"))


def test_opcheck():
    samples = [
        (random_input((2, 3, 6, 5)), torch.randint(0, 3, (2, 6, 5)), "multiclass", 0.0, None),
        (random_input((2, 3, 6, 5)), make_target("label_ignore", (2, 3, 6, 5))[0], "multilabel", 0.2, 255),
        (random_input((2, 1, 7)), torch.randint(0, 2, (2, 1, 7)), "binary", 0.0, None),
        (random_input((2, 3, 6, 5)), make_target("onehot_float", (2, 3, 6, 5))[0], "multiclass", 0.0, None),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.fastdice.confusion_counts.default, args)


def test_counts_kernels_registered_for_build():
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    assert has("fastdice::confusion_counts", "CPU")
    if fastdice.build_config()["cuda"]:
        assert has("fastdice::confusion_counts", "CUDA"), "extension built with CUDA but no CUDA counts kernel"
    else:
        assert not has("fastdice::confusion_counts", "CUDA")


def test_compiled_dice_score_fullgraph():
    torch._dynamo.reset()
    fn = torch.compile(
        lambda x, t: M.dice_score(x, t, include_background=False, average="none", ignore_index=255),
        fullgraph=True, backend="aot_eager",
    )
    x = random_input((2, 4, 12, 11))
    t, _, _ = make_target("label_ignore", x.shape)
    expected = M.dice_score(x, t, include_background=False, average="none", ignore_index=255)
    torch.testing.assert_close(fn(x, t), expected, equal_nan=True)


# ----------------------------------------------------------------------------
# Scores: an independent loop oracle for every empty convention
# ----------------------------------------------------------------------------


def loop_scores(counts, metric, average, empty, include_background):
    """Per-sample score from counts [N, C, 3], written with Python loops."""
    counts = counts.tolist()
    first = 0 if include_background or len(counts[0]) <= 1 else 1
    out = []
    for sample in counts:
        rows = sample[first:]
        per = []
        for tp, fp, fn in rows:
            num = 2 * tp if metric == "dice" else tp
            den = num + fp + fn
            if empty == "nan_if_target_empty" and tp + fn == 0:
                per.append(math.nan)
            elif den == 0:
                per.append({"nan": math.nan, "one": 1.0, "zero": 0.0}[empty])
            else:
                per.append(num / den)
        if average == "none":
            out.append(per)
        elif average == "macro":
            vals = [v for v in per if not math.isnan(v)]
            out.append(sum(vals) / len(vals) if vals else math.nan)
        elif average == "micro":
            keep = [r for r in rows if not (empty == "nan_if_target_empty" and r[0] + r[2] == 0)]
            num = sum((2 * tp if metric == "dice" else tp) for tp, fp, fn in keep)
            den = num + sum(fp + fn for tp, fp, fn in keep)
            if den:
                out.append(num / den)
            else:
                out.append(math.nan if empty in ("nan", "nan_if_target_empty") else {"one": 1.0, "zero": 0.0}[empty])
        else:  # weighted by support
            pairs = [(r[0] + r[2], v) for r, v in zip(rows, per) if not math.isnan(v)]
            wsum = sum(w for w, _ in pairs)
            if wsum:
                out.append(sum(w * v for w, v in pairs) / wsum)
            elif empty == "nan_if_target_empty":
                out.append(math.nan)
            elif any(fp for _, fp, _ in rows):
                out.append(0.0)
            else:
                out.append({"nan": math.nan, "one": 1.0, "zero": 0.0}[empty])
    return torch.tensor(out, dtype=torch.float64)


def sparse_batch(shape, generator=None):
    """Logits and labels where classes are often absent from the target, the prediction, or both."""
    b, c, *spatial = shape
    x = random_input(shape, generator=generator)
    t = torch.randint(0, c, (b, *spatial), generator=generator)
    if c > 2:
        t[0][t[0] == 2] = 1  # class 2 absent from sample 0's target
        x[0, 2] -= 100  # ... and from its prediction
        if b > 1:
            t[1][t[1] == 1] = 0  # class 1 absent from sample 1's target but predicted
            x[1, 1] += 1.5
    if b > 2:
        t[2] = 0
        x[2, 0] += 100  # sample 2: background only, in both
    return x, t


@pytest.mark.parametrize("metric", ["dice", "jaccard"])
@pytest.mark.parametrize("empty", M.EMPTY_CONVENTIONS)
@pytest.mark.parametrize("average", M.AVERAGES)
@pytest.mark.parametrize("include_background", [True, False])
def test_scores_match_loop_oracle(include_background, average, empty, metric):
    x, t = sparse_batch((4, 5, 10, 9))
    fn = M.dice_score if metric == "dice" else M.jaccard_index
    got = fn(x, t, include_background=include_background, average=average, empty=empty)
    expected = loop_scores(oracle_counts(x, t, "multiclass"), metric, average, empty, include_background)
    torch.testing.assert_close(got, expected, equal_nan=True, rtol=1e-12, atol=1e-12)
    glob = fn(x, t, include_background=include_background, average=average, empty=empty, aggregation_level="global")
    expected = loop_scores(oracle_counts(x, t, "multiclass").sum(0, keepdim=True), metric, average, empty,
                           include_background)
    torch.testing.assert_close(glob, expected, equal_nan=True, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------
# torchmetrics 1.9 (the oracle of the averaging)
# ----------------------------------------------------------------------------

tm_seg = pytest.importorskip("torchmetrics.segmentation")
tm_fseg = pytest.importorskip("torchmetrics.functional.segmentation")


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics' note about the default of `average`
        return fn(*a, **k)


TM_SHAPES = [(3, 1, 12, 11), (4, 2, 13, 12), (4, 5, 10, 9), (3, 5, 6, 7, 5)]


@pytest.mark.parametrize("shape", TM_SHAPES, ids=str)
@pytest.mark.parametrize("target_kind", ["label", "onehot"])
@pytest.mark.parametrize("aggregation_level", M.AGGREGATION_LEVELS)
@pytest.mark.parametrize("average", M.AVERAGES)
@pytest.mark.parametrize("include_background", [True, False])
def test_functional_matches_torchmetrics(include_background, average, aggregation_level, target_kind, shape):
    x, lab = sparse_batch(shape)
    c = shape[1]
    onehot = F.one_hot(lab, c).movedim(-1, 1)
    target = lab if target_kind == "label" else onehot
    expected = _quiet(tm_fseg.dice_score, x, onehot, num_classes=c, include_background=include_background,
                      average=average, aggregation_level=aggregation_level, input_format="one-hot")
    got = M.dice_score(x, target, include_background=include_background, average=average,
                       aggregation_level=aggregation_level)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected.double(), equal_nan=True, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(2, 3, 15, 14), (2, 4, 8, 7, 6)], ids=str)
@pytest.mark.parametrize("average", M.AVERAGES)
def test_multilabel_matches_torchmetrics_on_thresholded_predictions(average, shape):
    x = random_input(shape)
    t = (torch.rand(shape) < 0.3).long()
    t[0, 1] = 0  # an empty class
    pred = (torch.sigmoid(x) > 0.4).long()
    expected = _quiet(tm_fseg.dice_score, pred, t, num_classes=shape[1], average=average)
    got = M.dice_score(x, t, mode="multilabel", activation="sigmoid", threshold=0.4, average=average)
    torch.testing.assert_close(got, expected.double(), equal_nan=True, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("aggregation_level", M.AGGREGATION_LEVELS)
@pytest.mark.parametrize("average", M.AVERAGES)
@pytest.mark.parametrize("include_background", [True, False])
def test_accumulating_metric_matches_torchmetrics(include_background, average, aggregation_level):
    c = 4
    ours = M.DiceScore(include_background=include_background, average=average, aggregation_level=aggregation_level)
    theirs = _quiet(tm_seg.DiceScore, num_classes=c, include_background=include_background, average=average,
                    aggregation_level=aggregation_level, input_format="mixed")
    for b in (2, 3, 1):  # batches of different sizes
        x, t = sparse_batch((b, c, 11, 10))
        ours.update(x, t)
        theirs.update(x, t)
    assert ours.compute().dtype == theirs.compute().dtype == torch.float32  # both the default dtype
    ours.set_dtype(torch.float64)
    torch.testing.assert_close(ours.compute(), theirs.compute().double(), equal_nan=True, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("per_sample", [True, False])
def test_jaccard_matches_torchmetrics_mean_iou(per_sample):
    x, t = sparse_batch((4, 5, 12, 11))
    onehot = F.one_hot(t, 5).movedim(-1, 1)
    if per_sample:
        expected = tm_fseg.mean_iou(x, onehot, num_classes=5, per_class=False)  # macro over present classes
        got = M.jaccard_index(x, t, average="macro")
        torch.testing.assert_close(got, expected.double(), equal_nan=True, rtol=1e-6, atol=1e-7)
        expected = tm_fseg.mean_iou(x, onehot, num_classes=5, per_class=True)  # -1: absent from both
        got = M.jaccard_index(x, t, average="none").nan_to_num(-1.0)
        torch.testing.assert_close(got, expected.double(), rtol=1e-6, atol=1e-7)
    else:
        theirs = tm_seg.MeanIoU(num_classes=5, per_class=True, input_format="mixed")
        ours = M.JaccardIndex(average="none").set_dtype(torch.float64)
        for _ in range(3):
            x, t = sparse_batch((3, 5, 9, 8))
            theirs.update(x, t)
            ours.update(x, t)
        # MeanIoU(per_class=True): per class, the mean over the samples where it is present.
        torch.testing.assert_close(ours.compute().nan_to_num(-1.0), theirs.compute().double(), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------
# MONAI DiceMetric
# ----------------------------------------------------------------------------

monai_metrics = pytest.importorskip("monai.metrics")


@pytest.mark.parametrize("shape", [(4, 2, 12, 11), (4, 5, 10, 9), (3, 4, 6, 7, 5)], ids=str)
@pytest.mark.parametrize("ignore_index", [None, 255, 0])
@pytest.mark.parametrize("ignore_empty", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_matches_monai_per_sample(include_background, ignore_empty, ignore_index, shape):
    x, t = sparse_batch(shape)
    if ignore_index == 255:
        t[:, :3] = 255
    c = shape[1]
    expected = monai_metrics.compute_dice(
        torch.argmax(x, 1, keepdim=True), t.unsqueeze(1), include_background=include_background,
        ignore_empty=ignore_empty, num_classes=c, ignore_index=ignore_index,
    )
    empty = "nan_if_target_empty" if ignore_empty else "one"
    got = M.dice_score(x, t, include_background=include_background, average="none", empty=empty,
                       ignore_index=ignore_index)
    torch.testing.assert_close(got, expected.double(), equal_nan=True, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "mean_batch"])
@pytest.mark.parametrize("ignore_empty", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_accumulating_metric_matches_monai(include_background, ignore_empty, reduction):
    c = 4
    theirs = monai_metrics.DiceMetric(include_background=include_background, reduction=reduction,
                                      ignore_empty=ignore_empty, num_classes=c, ignore_index=255)
    ours = M.DiceScore(include_background=include_background, average="macro" if reduction == "mean" else "none",
                       empty="nan_if_target_empty" if ignore_empty else "one", ignore_index=255).set_dtype(torch.float64)
    for b in (2, 3):
        x, t = sparse_batch((b, c, 9, 10))
        t[:, 0] = 255
        theirs(torch.argmax(x, 1, keepdim=True), t.unsqueeze(1))
        ours.update(x, t)
    expected = theirs.aggregate().double()
    got = ours.compute()
    # MONAI reports 0 where every value is NaN (a class never in any target); we report NaN.
    torch.testing.assert_close(got.nan_to_num(0.0).reshape(expected.shape), expected, rtol=1e-6, atol=1e-7)


def test_multilabel_matches_monai_threshold():
    x = random_input((3, 3, 11, 12))
    t = (torch.rand(x.shape) < 0.3).float()
    t[1, 2] = 0
    helper = monai_metrics.DiceHelper(threshold=True, activate=True, include_background=True, get_not_nans=False,
                                      reduction="none", ignore_empty=False)
    expected = helper(x, t)
    got = M.dice_score(x, t, mode="multilabel", activation="sigmoid", average="none", empty="one")
    torch.testing.assert_close(got, expected.double(), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------
# Accumulation: update / compute / reset, __call__, counts, sync without a group
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [M.DiceScore, M.JaccardIndex])
@pytest.mark.parametrize("aggregation_level", M.AGGREGATION_LEVELS)
def test_update_compute_reset(aggregation_level, cls):
    metric = cls(include_background=False, average="none", aggregation_level=aggregation_level, empty="one",
                 ignore_index=255).set_dtype(torch.float64)
    fn = M.dice_score if cls is M.DiceScore else M.jaccard_index
    xs, ts = [], []
    for b in (2, 1, 3):
        x, t = sparse_batch((b, 4, 9, 8))
        t[0, 0] = 255
        batch_value = metric(x, t)  # update + this batch's score
        expected_batch = fn(x, t, include_background=False, average="none", empty="one", ignore_index=255,
                            aggregation_level=aggregation_level)
        expected_batch = expected_batch.nanmean(0) if aggregation_level == "samplewise" else expected_batch[0]
        torch.testing.assert_close(batch_value, expected_batch, equal_nan=True)
        xs.append(x)
        ts.append(t)
    x, t = torch.cat(xs), torch.cat(ts)
    all_counts = oracle_counts(x, t, "multiclass", ignore_index=255)
    if aggregation_level == "samplewise":
        assert torch.equal(metric.counts, all_counts)
    else:
        assert torch.equal(metric.counts, all_counts.sum(0))
    expected = fn(x, t, include_background=False, average="none", empty="one", ignore_index=255,
                  aggregation_level=aggregation_level)
    expected = expected.nanmean(0) if aggregation_level == "samplewise" else expected[0]
    torch.testing.assert_close(metric.compute(), expected, equal_nan=True)
    # another average from the same counts
    macro = fn(x, t, include_background=False, average="macro", empty="one", ignore_index=255,
               aggregation_level=aggregation_level)
    torch.testing.assert_close(metric.compute("macro"), macro.nanmean() if aggregation_level == "samplewise" else macro[0])
    assert metric.sync() is metric.counts  # no process group: nothing to do
    metric.reset()
    assert metric.counts is None
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    metric.update(xs[0], ts[0])
    first = fn(xs[0], ts[0], include_background=False, average="none", empty="one", ignore_index=255,
               aggregation_level=aggregation_level)
    torch.testing.assert_close(metric.compute(), first.nanmean(0) if aggregation_level == "samplewise" else first[0],
                               equal_nan=True)


def test_global_demo_convention_matches_plain_counting():
    # The demo's validation Dice: per foreground class over the whole set, 1 if absent from both.
    metric = M.DiceScore(include_background=False, average="none", aggregation_level="global", empty="one").set_dtype(torch.float64)
    preds, labels = [], []
    for _ in range(3):
        x, t = sparse_batch((3, 3, 16, 16))
        metric.update(x, t)
        preds.append(x.argmax(1))
        labels.append(t)
    pred, lab = torch.cat(preds), torch.cat(labels)
    expected = []
    for c in (1, 2):
        p, tt = pred == c, lab == c
        tp, fp, fn = int((p & tt).sum()), int((p & ~tt).sum()), int((~p & tt).sum())
        expected.append(1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    assert metric.compute().tolist() == expected


def test_poisoned_counts_give_nan():
    # What CUDA writes for a sample with an invalid target: every count -1.
    counts = oracle_counts(*sparse_batch((3, 3, 8, 8)), "multiclass")
    counts[1] = -1
    per_sample = M.score_from_counts(counts, average="macro")
    assert torch.isnan(per_sample[1]) and not torch.isnan(per_sample[[0, 2]]).any()
    assert torch.isnan(M.score_from_counts(counts, aggregation_level="global")).all()
    for aggregation_level in M.AGGREGATION_LEVELS:
        metric = M.DiceScore(aggregation_level=aggregation_level).set_dtype(torch.float64)
        metric._add(counts)  # as update() does with the op's output
        assert torch.isnan(metric.compute()), aggregation_level


def test_repr_and_pickle():
    import pickle

    metric = M.DiceScore(4, include_background=False, empty="one")
    assert repr(metric) == "DiceScore(num_classes=4, include_background=False, empty='one')"
    x, t = sparse_batch((2, 4, 6, 6))
    metric.update(x, t)
    clone = pickle.loads(pickle.dumps(metric))
    torch.testing.assert_close(clone.compute(), metric.compute(), equal_nan=True)


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


def _x():
    return random_input((2, 3, 5, 5))


def _lab():
    return torch.randint(0, 3, (2, 5, 5))


def _set(t, index, value):
    t = t.clone()
    t[index] = value
    return t


def _updated_metric():
    metric = M.DiceScore()
    metric.update(_x(), _lab())
    return metric


# (id, exception, message pattern, the failing call); the inputs are made first, outside pytest.raises.
ERRORS = [
    ("label-out-of-range", ValueError, r"target label 3 .* outside \[0, 3\)",
     lambda: (M.confusion_counts, _x(), _set(_lab(), (1, 2, 3), 3))),
    ("negative-label-not-ignore_index", ValueError, "not ignore_index",
     lambda: (lambda x, t: M.confusion_counts(x, t, ignore_index=255), _x(), _set(_lab(), (0, 0, 0), -1))),
    # int64 min was once the "no ignore_index" sentinel
    ("int64-min-label", ValueError, r"target label -9223372036854775808",
     lambda: (M.confusion_counts, _x(), _set(_lab(), (0, 1, 0), torch.iinfo(torch.int64).min))),
    ("binary-label-2", ValueError, "not 0 or 1 in binary mode",
     lambda: (lambda x, t: M.confusion_counts(x, t, mode="binary"), _x()[:, :1], torch.full((2, 5, 5), 2))),
    ("dense-target-0.5", ValueError, "must hold 0 or 1; got 0.5",
     lambda: (M.confusion_counts, _x(), torch.full((2, 3, 5, 5), 0.5))),
    ("binary-dense-255", ValueError, "must hold 0 or 1; got 255",
     lambda: (lambda x, t: M.confusion_counts(x, t, mode="binary"), _x()[:, :1], torch.full((2, 1, 5, 5), 255.0))),
    ("ignore_index-with-dense-target", ValueError, "ignore_index needs an integer label-map",
     lambda: (lambda x, t: M.confusion_counts(x, t, ignore_index=255), _x(), torch.zeros(2, 3, 5, 5))),
    ("target-shape", ValueError, "target must have the input's shape",
     lambda: (M.confusion_counts, _x(), torch.zeros(2, 4, 5))),
    ("integer-input", TypeError, "input must be float16, bfloat16, float32 or float64",
     lambda: (M.confusion_counts, _lab().unsqueeze(1).expand(2, 3, 5, 5), _lab())),
    ("binary-mode-multichannel", ValueError, "mode 'binary' needs input of shape",
     lambda: (lambda x, t: M.confusion_counts(x, t, mode="binary"), _x(), _lab())),
    ("mode-choice", ValueError, "mode must be one of",
     lambda: (lambda x, t: M.confusion_counts(x, t, mode="multi-class"), _x(), _lab())),
    ("softmax-with-threshold", ValueError, "activation='softmax' with a threshold",
     lambda: (lambda x, t: M.confusion_counts(x, t, mode="multilabel", activation="softmax"), _x(), _lab())),
    ("sigmoid-threshold-1", ValueError, r"threshold must lie in \(0, 1\)",
     lambda: (lambda: M.DiceScore(mode="multilabel", activation="sigmoid", threshold=1.0),)),
    ("threshold-nan", ValueError, "threshold must be a number",
     lambda: (lambda x, t: M.dice_score(x, t, mode="multilabel", threshold=float("nan")), _x(), _lab())),
    ("ignore_index-float", TypeError, "ignore_index must be an int",
     lambda: (lambda: M.DiceScore(ignore_index=1.5),)),
    ("average-choice", ValueError, "average must be one of", lambda: (lambda: M.DiceScore(average="samples"),)),
    ("empty-choice", ValueError, "empty must be one of", lambda: (lambda: M.DiceScore(empty="ignore"),)),
    ("aggregation_level-choice", ValueError, "aggregation_level must be one of",
     lambda: (lambda x, t: M.dice_score(x, t, aggregation_level="batch"), _x(), _lab())),
    ("num_classes-0", ValueError, "num_classes must be a positive int", lambda: (lambda: M.DiceScore(num_classes=0),)),
    ("num_classes-mismatch", ValueError, "num_classes=4 but the input has 3 channels",
     lambda: (M.DiceScore(num_classes=4).update, _x(), _lab())),
    ("channels-change-between-updates", ValueError, "the input has 4 channels .* but earlier updates had 3",
     lambda: (_updated_metric().update, random_input((2, 4, 5, 5)), _lab())),
    ("target-not-a-tensor", TypeError, "target must be a tensor", lambda: (_updated_metric().update, _x(), _lab().tolist())),
    ("counts-shape", ValueError, r"counts must have shape \[N, C, 3\]",
     lambda: (M.score_from_counts, torch.zeros(3, 3, dtype=torch.long))),
]


@pytest.mark.parametrize("exc,match,make", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors(exc, match, make):
    fn, *args = make()
    with pytest.raises(exc, match=match):
        fn(*args)


# ----------------------------------------------------------------------------
# Distributed: 2 gloo processes
# ----------------------------------------------------------------------------

DDP_OPTIONS = dict(include_background=False, ignore_index=255, empty="one")


def _ddp_data():
    g = torch.Generator().manual_seed(11)
    batches = []
    for b in (2, 3, 1, 2, 1):
        x = random_input((b, 4, 9, 7), generator=g)
        t = torch.randint(0, 4, (b, 9, 7), generator=g)
        t[:, 0] = 255
        batches.append((x, t))
    return batches


def _ddp_worker(rank, world, store_dir):
    dist.init_process_group("gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=world)
    try:
        batches = _ddp_data()
        mine = batches[rank::world]  # uneven: rank 0 gets 3 batches, rank 1 gets 2
        out = {}
        for agg in M.AGGREGATION_LEVELS:
            for average in ("macro", "none", "micro"):
                metric = M.DiceScore(aggregation_level=agg, average=average, **DDP_OPTIONS).set_dtype(torch.float64)
                for x, t in mine:
                    metric.update(x, t)
                local_counts = metric.counts.clone()
                out[f"{agg}/{average}/compute"] = metric.compute()
                assert torch.equal(metric.counts, local_counts)  # compute() leaves the local state alone
                metric.sync()
                out[f"{agg}/{average}/synced"] = metric.compute()
                out[f"{agg}/{average}/synced_counts"] = metric.counts
                try:
                    metric.update(*mine[0])
                    out[f"{agg}/{average}/update_after_sync"] = "no error"
                except RuntimeError as e:
                    out[f"{agg}/{average}/update_after_sync"] = str(e)
        # A rank without any update still takes part (num_classes given).
        late = M.DiceScore(4, aggregation_level="global", **DDP_OPTIONS).set_dtype(torch.float64)
        if rank == 0:
            for x, t in mine:
                late.update(x, t)
        out["late"] = late.compute()
        torch.save(out, os.path.join(store_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_two_processes(tmp_path):
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path)), nprocs=world, join=True)
    batches = _ddp_data()
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for agg in M.AGGREGATION_LEVELS:
        for average in ("macro", "none", "micro"):
            single = M.DiceScore(aggregation_level=agg, average=average, **DDP_OPTIONS).set_dtype(torch.float64)
            for x, t in batches:
                single.update(x, t)
            expected = single.compute()
            for r, res in enumerate(results):
                key = f"{agg}/{average}"
                torch.testing.assert_close(res[key + "/compute"], expected, equal_nan=True, msg=f"rank {r} {key}")
                torch.testing.assert_close(res[key + "/synced"], expected, equal_nan=True, msg=f"rank {r} {key}")
                assert "call reset() first" in res[key + "/update_after_sync"]
                if agg == "global":
                    assert torch.equal(res[key + "/synced_counts"], single.counts)
                else:  # the same samples, in rank order
                    assert torch.equal(res[key + "/synced_counts"].sum(0), single.counts.sum(0))
                    assert res[key + "/synced_counts"].shape == single.counts.shape
    rank0_only = M.DiceScore(4, aggregation_level="global", **DDP_OPTIONS).set_dtype(torch.float64)
    for x, t in batches[0::2]:
        rank0_only.update(x, t)
    for res in results:
        torch.testing.assert_close(res["late"], rank0_only.compute(), equal_nan=True)


# ----------------------------------------------------------------------------
# CUDA (skipped without a GPU; run by scripts/gpu_check.sh)
# ----------------------------------------------------------------------------

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("kind", LABEL_KINDS + DENSE_KINDS)
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_cuda_counts_equal_cpu(mode, kind, dtype):
    for shape in [(2, 3, 17, 13), (3, 5, 33, 31, 9), (1, 2, 70001), (2, 4, 3)]:
        x = random_input(shape, dtype)
        t, _, ignore = make_target(kind, shape)
        cpu = M.confusion_counts(x, t, mode=mode, threshold=0.2, ignore_index=ignore)
        gpu = M.confusion_counts(x.cuda(), t.cuda(), mode=mode, threshold=0.2, ignore_index=ignore)
        assert gpu.device.type == "cuda"
        assert torch.equal(gpu.cpu(), cpu), shape


@cuda_only
def test_cuda_binary_strided_ties_and_many_classes():
    x = random_input((3, 1, 40, 41))
    t = torch.randint(0, 2, (3, 40, 41))
    t[:, 0] = 7
    for xx in (x, x.to(memory_format=torch.channels_last)):
        assert torch.equal(M.confusion_counts(xx.cuda(), t.cuda(), mode="binary", ignore_index=7).cpu(),
                           M.confusion_counts(xx, t, mode="binary", ignore_index=7))
    xt = torch.randint(0, 3, (2, 6, 30, 29)).float()
    xt[torch.rand(xt.shape) < 0.05] = float("nan")
    xt = xt.to(memory_format=torch.channels_last)
    tt = torch.randint(0, 6, (2, 30, 29))
    assert torch.equal(M.confusion_counts(xt.cuda(), tt.cuda()).cpu(), oracle_counts(xt, tt, "multiclass"))
    xs = random_input((2, 4, 20, 45))[..., 1::2]  # unaligned, strided
    ts = torch.randint(0, 4, (2, 20, 22))
    assert torch.equal(M.confusion_counts(xs.cuda(), ts.cuda()).cpu(), oracle_counts(xs, ts, "multiclass"))
    xm = random_input((2, 300, 50))  # many classes: shared-memory counters for 300 classes
    tm = torch.randint(0, 300, (2, 50))
    assert torch.equal(M.confusion_counts(xm.cuda(), tm.cuda()).cpu(), oracle_counts(xm, tm, "multiclass"))


@cuda_only
def test_cuda_invalid_target_poisons_sample_without_sync():
    x = random_input((3, 3, 16, 16)).cuda()
    t = torch.randint(0, 3, (3, 16, 16)).cuda()
    t[1, 4, 5] = 9
    counts = M.confusion_counts(x, t)
    assert (counts[1] == -1).all() and (counts[[0, 2]] >= 0).all()
    dense = F.one_hot(t.clamp(0, 2), 3).movedim(-1, 1).float()
    dense[2, 0, 0, 0] = 0.5
    counts = M.confusion_counts(x, dense)
    assert (counts[2] == -1).all() and (counts[:2] >= 0).all()
    metric = M.DiceScore(aggregation_level="global").set_dtype(torch.float64)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metric.update(x, t)  # no host synchronization in update()
        metric.update(x, torch.randint(0, 3, (3, 16, 16), device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isnan(metric.compute())


@cuda_only
def test_cuda_metric_matches_cpu_metric():
    cpu_metric, gpu_metric = M.DiceScore(average="none").set_dtype(torch.float64), M.DiceScore(average="none").set_dtype(torch.float64)
    for b in (2, 3):
        x, t = sparse_batch((b, 5, 24, 23))
        cpu_metric.update(x, t)
        gpu_metric.update(x.cuda(), t.cuda())
    torch.testing.assert_close(gpu_metric.compute().cpu(), cpu_metric.compute(), equal_nan=True, rtol=0, atol=0)


# ----------------------------------------------------------------------------
# nn.Module behaviour, as a torchmetrics metric
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation_level", M.AGGREGATION_LEVELS)
@pytest.mark.parametrize("cls", [M.DiceScore, M.JaccardIndex], ids=["DiceScore", "JaccardIndex"])
def test_metric_is_a_module_like_torchmetrics(cls, aggregation_level):
    tm_seg = pytest.importorskip("torchmetrics.segmentation")
    metric = cls(include_background=False, aggregation_level=aggregation_level)
    assert isinstance(metric, torch.nn.Module)
    model = torch.nn.Module()
    model.metric = metric  # a submodule: follows the model's .to() and state_dict
    assert model.state_dict() == {} and metric.state_dict() == {}  # torchmetrics' default: no persistent state
    x, t = sparse_batch((3, 4, 9, 8))
    per_batch = metric(x, t)  # forward: update + the batch's score
    assert per_batch.dtype == torch.get_default_dtype()
    metric.update(*sparse_batch((2, 4, 9, 8)))
    result = metric.compute()
    if cls is M.DiceScore:
        theirs = _quiet(tm_seg.DiceScore, num_classes=4, include_background=False, average="macro",
                        aggregation_level=aggregation_level, input_format="mixed")
        assert result.dtype == theirs(x, t).dtype == torch.float32
    assert result.dtype == torch.float32
    exact = metric.set_dtype(torch.float64).compute()
    assert exact.dtype == torch.float64 and float(exact) == pytest.approx(float(result), rel=1e-6)
    # .double() / .half() leave the integer counts and the result dtype alone
    counts = metric.counts.clone()
    metric.double()
    metric.half()
    assert metric.counts.dtype == torch.int64 and torch.equal(metric.counts, counts)
    model.to(torch.device("cpu"))
    assert metric.counts.device.type == "cpu" and torch.equal(metric.compute(), exact)
    metric.reset()
    assert metric.counts is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metric_to_moves_the_state():
    metric = M.DiceScore(aggregation_level="global")
    x, t = sparse_batch((3, 4, 9, 8))
    metric.update(x, t)
    expected = metric.compute()
    metric.cuda()
    assert metric.counts.is_cuda
    metric.update(x.cuda(), t.cuda())
    assert metric.compute().is_cuda
    metric.cpu()
    assert metric.counts.device.type == "cpu"
