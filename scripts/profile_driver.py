"""fastdice's CUDA kernels on the benchmark's reference workloads, for ncu:

    ncu --clock-control none --kernel-name regex:dice_stats --section SpeedOfLight \
        python scripts/profile_driver.py

Each workload runs DiceLoss / DiceCELoss forward + backward a few times
(the first, warm-up call is profiled too: use --launch-skip to pass it).
Prints each workload's per-step time from CUDA events (without ncu's
serialization, that time is what the benchmark measures).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastdice  # noqa: E402

WORKLOADS = [  # (name, shape, dtype, loss)
    ("3d_b2_c14_128^3", (2, 14, 128, 128, 128), torch.float32, "dice"),
    ("3d_b2_c14_128^3_bf16", (2, 14, 128, 128, 128), torch.bfloat16, "dice"),
    ("3d_b2_c14_128^3_dice_ce", (2, 14, 128, 128, 128), torch.float32, "dice_ce"),
    ("3d_b2_c4_96^3", (2, 4, 96, 96, 96), torch.float32, "dice"),
]


def main(steps=3):
    assert torch.cuda.is_available(), "needs a CUDA device"
    for name, shape, dtype, loss in WORKLOADS:
        x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
        t = torch.randint(0, shape[1], (shape[0], *shape[2:]), device="cuda")
        opts = dict(activation="softmax", pooling="sample", smooth_nr=1e-5, smooth_dr=1e-5)
        crit = fastdice.DiceCELoss(**opts) if loss == "dice_ce" else fastdice.DiceLoss(**opts)
        crit(x, t).backward()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            x.grad = None
            crit(x, t).backward()
        end.record()
        end.synchronize()
        n = x.numel()
        minimal = 2 * (n * x.element_size() + (n // shape[1]) * 8) + n * x.element_size()
        ms = start.elapsed_time(end) / steps
        print(f"{name}: {ms:.3f} ms per step, {minimal / ms / 1e6:.0f} GB/s on the minimal bytes", flush=True)


if __name__ == "__main__":
    main()
