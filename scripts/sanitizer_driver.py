"""Small CUDA workload for compute-sanitizer: forward and backward of every
option, dtype and target kind (with and without the fused cross-entropy /
focal term), on odd and aligned sizes, channels_last too;
and the confusion counts of fastdice.metrics.

    compute-sanitizer --tool memcheck python scripts/sanitizer_driver.py
"""

import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastdice  # noqa: E402


def make_target(shape, kind, dev):
    """(target, ignore_index): soft dense, or a label map (int64 / uint8) whose first column is ignored."""
    b, c, *spatial = shape
    if kind == "dense":
        return torch.rand(shape, device=dev), None
    t = torch.randint(0, c, (b, *spatial), device=dev)
    t[..., 0] = 200  # ignored positions
    return (t.to(torch.uint8) if kind == "label_u8" else t), 200


def main():
    assert torch.cuda.is_available(), "needs a CUDA device"
    dev = "cuda"
    torch.manual_seed(0)
    shapes = [(2, 3, 17, 13), (1, 5, 64, 64), (3, 2, 1), (2, 37, 33)]
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
    runs = 0
    for shape, dtype, activation, full, target_kind in itertools.product(
        shapes, dtypes, ["none", "sigmoid", "softmax"], [False, True], ["dense", "label", "label_u8"]
    ):
        x = torch.randn(shape, device=dev, dtype=dtype, requires_grad=True)
        t, ignore = make_target(shape, target_kind, dev)
        stats = fastdice.dice_stats(x, t, activation, full, ignore)
        grad_stats = torch.randn_like(stats)
        (stats * grad_stats).sum().backward()
        runs += 1
    # the fused pixel losses (cross-entropy / BCE, plain and focal) for every dtype and target kind
    for shape, dtype, (activation, pixel_loss), gamma, full, target_kind in itertools.product(
        shapes[:2] + shapes[3:], dtypes,
        [("softmax", "cross_entropy"), ("softmax", "binary_cross_entropy"), ("sigmoid", "binary_cross_entropy")],
        [0.0, 2.0], [False, True], ["dense", "label"],
    ):
        x = torch.randn(shape, device=dev, dtype=dtype, requires_grad=True)
        t, ignore = make_target(shape, target_kind, dev)
        stats = fastdice.dice_stats(x, t, activation, full, ignore, pixel_loss, gamma)
        (stats * torch.randn_like(stats)).sum().backward()
        runs += 1
    # channels_last, and a sliced (non-vectorizable) input
    x = torch.randn(2, 4, 16, 16, device=dev).to(memory_format=torch.channels_last).requires_grad_(True)
    t = torch.randint(0, 4, (2, 16, 16), device=dev)
    fastdice.dice_loss(x, t, activation="softmax", pooling="sample").backward()
    x = torch.randn(2, 4, 16, 33, device=dev)[..., 1:].requires_grad_(True)
    t = torch.randint(0, 4, (2, 16, 32), device=dev)
    fastdice.dice_loss(x, t, activation="softmax", squared=True).backward()
    # the epilogue op (one block of threads): every pooling, reduction and CE family, with more
    # rows than threads, a single row, and float64
    from fastdice import _ops

    for (b, c), pooling, reduction, ib, ce, sdtype in itertools.product(
        [(2, 3), (37, 21), (1, 1)], ["global", "batch", "sample"], ["mean", "sum", "none"], [True, False],
        ["none", "cross_entropy", "binary_cross_entropy"], [torch.float32, torch.float64],
    ):
        if ce != "none" and reduction == "none":
            continue
        stats = torch.rand(b, c, 11, device=dev, dtype=sdtype, requires_grad=True)
        w = torch.rand(c, device=dev, dtype=sdtype)
        loss = _ops.dice_loss_from_stats(
            stats, w, w, pooling=pooling, include_background=ib, reduction=reduction,
            lambda_ce=0.5 if ce != "none" else 0.0, ce_family=ce,
            label_smoothing=0.1 if ce == "cross_entropy" else 0.0,
        )
        loss.backward(torch.rand_like(loss))
        runs += 1
    # out-of-range labels: NaN poisoning path
    t[0, 0, 0] = 9
    fastdice.dice_stats(x, t, "softmax", True, None)
    # fastdice.metrics: the confusion-counts kernel for every mode, dtype and target kind
    from fastdice import metrics

    for shape, dtype, mode, target_kind in itertools.product(
        [(2, 3, 17, 13), (1, 5, 64, 64), (3, 2, 1), (2, 37, 33)], dtypes, ["multiclass", "multilabel"],
        ["dense", "label", "label_u8"],
    ):
        x = torch.randn(shape, device=dev, dtype=dtype)
        b, c, *spatial = shape
        ignore = None
        if target_kind == "dense":
            t = (torch.rand(shape, device=dev) < 0.3).float()
        else:
            t = torch.randint(0, c, (b, *spatial), device=dev)
            t[..., 0] = 200
            ignore = 200
            if target_kind == "label_u8":
                t = t.to(torch.uint8)
        metrics.confusion_counts(x, t, mode=mode, threshold=0.1, ignore_index=ignore)
        runs += 1
    xb = torch.randn(2, 1, 16, 16, device=dev)
    metrics.confusion_counts(xb, torch.randint(0, 2, (2, 16, 16), device=dev), mode="binary")
    t = torch.randint(0, 3, (2, 16, 16), device=dev)
    t[1, 0, 0] = 9  # invalid label: the poisoning path
    metrics.confusion_counts(torch.randn(2, 3, 16, 16, device=dev), t)
    torch.cuda.synchronize()
    print(f"sanitizer driver: {runs + 5} forward/backward and counts runs done")


if __name__ == "__main__":
    main()
