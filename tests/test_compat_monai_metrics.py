"""fastdice.compat.monai's DiceMetric / MeanIoU / GeneralizedDiceScore against MONAI 1.6.1's own.

Oracle: the installed monai.metrics classes, same arguments, same fresh random inputs
(label maps as float (B, 1, *) as LoadImage gives and as integers, one-hot tensors,
ignore_index as a class and as a sentinel, a single channel, float64); per-batch results
and ``aggregate`` for every reduction must be the same tensors (values, NaNs, dtype).
MONAI's own metric tests run against these classes in tests/monai_upstream_metrics.
"""

import itertools
import os

import pytest
import torch

monai_metrics = pytest.importorskip("monai.metrics")
from monai.networks import one_hot  # noqa: E402

from fastdice.compat import monai as fastdice_monai  # noqa: E402
from fastdice.compat.monai import metrics as fm  # noqa: E402

C = 4
REDUCTIONS = ["mean", "sum", "mean_batch", "sum_batch", "mean_channel", "sum_channel", "none"]


def _same(actual, expected, what, exact=True):
    """The same tensors (dtype, shape, NaNs, values); ``exact=False``: values to float32
    rounding (sums of soft values, added in another order than MONAI's)."""
    if isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected), what
        for a, e in zip(actual, expected):
            _same(a, e, what, exact)
        return
    if isinstance(expected, dict):
        assert actual == expected, what
        return
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (what, actual, expected)
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), (what, actual, expected)
    if exact:
        assert torch.equal(torch.nan_to_num(actual), torch.nan_to_num(expected)), (what, actual, expected)
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-7, equal_nan=True, msg=what)


def _cases(gen):
    labels = torch.randint(0, C, (3, 1, 6, 7), generator=gen)
    labels[0] = 0  # a sample without foreground: empty classes
    pred_labels = torch.randint(0, C, (3, 1, 6, 7), generator=gen)
    y, p = one_hot(labels, C), one_hot(pred_labels, C)
    with_255 = labels.clone()
    with_255[:, :, :2] = 255
    return {
        "one-hot": (p, y, {}),
        "float label map": (p, labels.float(), {}),
        "integer label map": (p, labels, {}),
        "label-map prediction": (pred_labels.float(), labels.float(), {"num_classes": C}),
        "label maps, 255 ignored": (pred_labels.float(), with_255.float(), {"num_classes": C, "ignore_index": 255}),
        "label maps, 255 no class": (pred_labels.float(), with_255.float(), {"num_classes": C}),
        "ignore class 1, one-hot": (p, y, {"ignore_index": 1}),
        "ignore sentinel, one-hot": (p, y, {"ignore_index": 255}),
        "ignore 255, label map": (p, with_255.float(), {"ignore_index": 255}),
        "ignore class 2, label map": (p, labels.float(), {"ignore_index": 2}),
        "single channel": (p[:, 1:2], y[:, 1:2], {}),
        "label 255, not ignored": (p, with_255.float(), {}),
        "soft one-hot y": (p, y * torch.rand(y.shape, generator=gen), {}),
        "float64": (p.double(), y.double(), {}),
    }


@pytest.mark.parametrize("include_background,ignore_empty", list(itertools.product([True, False], [True, False])))
def test_same_numbers_as_monai(include_background, ignore_empty):
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    for case, (y_pred, y, extra) in _cases(gen).items():
        for reduction in REDUCTIONS:
            common = dict(include_background=include_background, reduction=reduction, get_not_nans=True)
            pairs = [(fm.DiceMetric, monai_metrics.DiceMetric, dict(common, ignore_empty=ignore_empty, **extra))]
            if y.shape == y_pred.shape and "num_classes" not in extra:
                pairs.append((fm.MeanIoU, monai_metrics.MeanIoU, dict(common, ignore_empty=ignore_empty, **extra)))
                for weight_type in ("square", "simple", "uniform"):
                    args = dict(include_background=include_background, reduction=reduction, weight_type=weight_type,
                                **extra)
                    pairs.append((fm.GeneralizedDiceScore, monai_metrics.GeneralizedDiceScore, args))
            for ours_cls, theirs_cls, args in pairs:
                ours, theirs = ours_cls(**args), theirs_cls(**args)
                what = f"{ours_cls.__name__} {case} {args}"
                exact = not case.startswith("soft")
                _same(ours(y_pred=y_pred, y=y), theirs(y_pred=y_pred, y=y), what + " call 1", exact)
                # A second batch, as a list of channel-first tensors.
                _same(ours(list(y_pred.flip(0)), list(y.flip(0))), theirs(list(y_pred.flip(0)), list(y.flip(0))),
                      what + " call 2 (lists)", exact)
                _same(ours.get_buffer(), theirs.get_buffer(), what + " buffer", exact)
                _same(ours.aggregate(), theirs.aggregate(), what + " aggregate", exact)
                ours.reset()
                theirs.reset()
                assert ours.get_buffer() is None and theirs.get_buffer() is None


def test_return_with_label_and_aggregate_override():
    gen = torch.Generator().manual_seed(5)
    y_pred, y, _ = _cases(gen)["float label map"]
    for return_with_label in (True, ["bg", "a", "b", "c"]):
        args = dict(reduction="mean_batch", return_with_label=return_with_label)
        ours, theirs = fm.DiceMetric(**args), monai_metrics.DiceMetric(**args)
        ours(y_pred, y)
        theirs(y_pred, y)
        _same(ours.aggregate(), theirs.aggregate(), str(return_with_label))
    ours, theirs = fm.DiceMetric(reduction="mean_batch"), monai_metrics.DiceMetric(reduction="mean_batch")
    ours(y_pred, y)
    theirs(y_pred, y)
    _same(ours.aggregate("sum_channel"), theirs.aggregate("sum_channel"), "aggregate's reduction first")


def test_reexported_by_compat_monai():
    assert fastdice_monai.DiceMetric is fm.DiceMetric
    assert fastdice_monai.MeanIoU is fm.MeanIoU
    assert fastdice_monai.GeneralizedDiceScore is fm.GeneralizedDiceScore


def test_bad_input_is_named():
    metric = fm.DiceMetric()
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        metric(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch and spatial sizes"):
        metric(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="reduction must be one of"):
        fm.DiceMetric(reduction="median")
    with pytest.raises(ValueError, match="same shapes"):  # MeanIoU takes one-hot targets only, as MONAI's
        fm.MeanIoU()(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="must be PyTorch Tensor"):
        metric.aggregate()  # nothing buffered


def _ddp_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        gen = torch.Generator().manual_seed(100 + rank)
        batch = 2 + rank  # uneven: 2 and 3 samples
        labels = torch.randint(0, C, (batch, 1, 5, 6), generator=gen)
        y_pred = one_hot(torch.randint(0, C, (batch, 1, 5, 6), generator=gen), C)
        metric = fm.DiceMetric(include_background=False, reduction="mean_batch")
        metric(y_pred, labels.float())
        torch.save({"y_pred": y_pred, "labels": labels, "buffer": metric.get_buffer(),
                    "aggregate": metric.aggregate()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gathers_every_ranks_scores(tmp_path):
    """Two processes (gloo) with 2 and 3 samples: each rank's buffer and aggregate are those of
    MONAI's DiceMetric run in one process on all 5 samples."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    oracle = monai_metrics.DiceMetric(include_background=False, reduction="mean_batch")
    oracle(torch.cat([p["y_pred"] for p in parts]), torch.cat([p["labels"] for p in parts]).float())
    for rank, part in enumerate(parts):
        _same(part["buffer"], oracle.get_buffer(), f"rank {rank} buffer")
        _same(part["aggregate"], oracle.aggregate(), f"rank {rank} aggregate")
