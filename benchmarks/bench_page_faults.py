"""What glibc's allocator costs a CPU training step of fastdice.DiceLoss: first-touch
page faults of the fresh gradient, and the heap given back to the OS.

    python -m benchmarks.bench_page_faults [--out DIR] [--reps N]

Each allocator setting runs in its own process (glibc reads them at start):
fastdice.DiceLoss's forward and backward at the benchmark shapes, with a fresh
gradient every step as in training (``x.grad = None``), timed, with the minor
page faults of the backward and the kernel (sys) time of the step from getrusage.
Once alone, once with the textbook module's forward and backward on other tensors
between the steps ("churn": N-sized temporaries freed between steps, as a
network's layers do). With glibc's defaults a freed block above the mmap threshold
(128 KiB to 32 MiB, adjusted at run time) is unmapped, so the next one of its size
faults every 4 KiB page on first write; and a free() that merges into a large free
top of the heap gives it back (brk), which costs kernel time in whichever call
frees next. The settings compared keep freed memory: ``MALLOC_MMAP_THRESHOLD_``
(blocks up to it come from the heap), ``MALLOC_MMAP_MAX_=0`` (no mmap at all) and
``MALLOC_TRIM_THRESHOLD_`` (the heap is not trimmed back).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SHAPES = {
    "seed_3d_b2_c4_96^3": ((2, 4, 96, 96, 96), "none"),
    "seed_3d_b2_c4_64^3": ((2, 4, 64, 64, 64), "none"),
    "seed_2d_b16_c1_512^2": ((16, 1, 512, 512), "none"),
    "3d_b2_c4_96^3_sigmoid_dense": ((2, 4, 96, 96, 96), "sigmoid"),
    # A gradient above glibc's largest mmap threshold (32 MiB): mapped afresh every step by default.
    "3d_b2_c4_128^3_sigmoid_dense": ((2, 4, 128, 128, 128), "sigmoid"),
}

SETTINGS = {
    "default": {},
    # Heap blocks up to 32 MiB (glibc's largest mmap threshold), never trimmed.
    "heap_reuse": {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)},
    # No mmap at all (every block from the heap, whatever its size), never trimmed.
    "no_mmap": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)},
}


# Steps before the timed ones: glibc's heap settles in the first few (a posix_memalign
# of the gradient's size does not fit the block the last one freed until freed
# neighbours merge: the heap grows, and faults, for about 8 steps).
WARMUP = 10


def _steps(loss_fn, x, t, reps, between=None):
    """Training steps of loss_fn on (x, t) with a fresh gradient each; ``between()``
    runs before each step, untimed. Returns per-step forward and backward ms, and
    the backward's minor faults and kernel time, and the step's kernel time."""
    rows = []
    for i in range(reps + WARMUP):
        if between is not None:
            between()
        x.grad = None
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        loss = loss_fn(x, t)
        t1 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        loss.backward()
        t2 = time.perf_counter()
        r2 = resource.getrusage(resource.RUSAGE_SELF)
        if i >= WARMUP:
            rows.append(dict(fwd=(t1 - t0) * 1e3, bwd=(t2 - t1) * 1e3, faults=r2.ru_minflt - r1.ru_minflt,
                             sys=(r2.ru_stime - r0.ru_stime) * 1e3))
    return rows


def _summary(rows):
    p90 = lambda v: sorted(v)[int(0.9 * len(v))]  # noqa: E731
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    return dict(fwd_ms_median=statistics.median(col("fwd")), fwd_ms_p90=p90(col("fwd")),
                bwd_ms_median=statistics.median(col("bwd")), bwd_ms_p90=p90(col("bwd")),
                faults_median=statistics.median(col("faults")), faults_p90=p90(col("faults")),
                sys_ms_mean=statistics.mean(col("sys")))


def measure(reps: int) -> dict:
    """In this process: per shape, fastdice's steps alone ("alone") and with the
    textbook module's forward and backward on other tensors of the same size
    between them ("churn": N-sized temporaries freed between fastdice's steps,
    as a network's layers do)."""
    import torch

    import fastdice

    torch.set_num_threads(2)
    out = {}
    for name, (shape, activation) in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        x = torch.rand(shape, generator=g) if activation == "none" else torch.randn(shape, generator=g)
        x.requires_grad_(True)
        t = (torch.rand(shape, generator=g) < 0.1).float()
        loss_fn = fastdice.DiceLoss(activation=activation)
        other = x.detach().clone().requires_grad_(True)

        def textbook():
            other.grad = None
            p = torch.sigmoid(other) if activation == "sigmoid" else other
            (1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)).backward()

        grad_mb = x.numel() * 4 / 2**20
        out[name] = dict(grad_mb=grad_mb, grad_pages=grad_mb * 256,
                         alone=_summary(_steps(loss_fn, x, t, reps)),
                         churn=_summary(_steps(loss_fn, x, t, reps, between=textbook)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.reps)))
        return
    results = {}
    for setting, env in SETTINGS.items():
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_page_faults", "--child", "--reps", str(args.reps)],
                              env=dict(os.environ, **env), capture_output=True, text=True, check=True)
        results[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
    import torch

    header = (f"fastdice backward page faults: {platform.processor() or platform.machine()} (2 threads), "
              f"torch {torch.__version__}, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
    lines = [header, "",
             "| workload | gradient MB (4 KiB pages) | setting | steps | fwd ms median / p90 | bwd ms median / p90 | "
             "bwd minor faults median / p90 | kernel (sys) ms per step, mean |",
             "|---|---|---|---|---|---|---|---|"]
    for name in SHAPES:
        for setting in SETTINGS:
            for steps in ("alone", "churn"):
                r = results[setting][name]
                m = r[steps]
                lines.append(f"| {name} | {r['grad_mb']:.0f} ({r['grad_pages']:.0f}) | {setting} | {steps} | "
                             f"{m['fwd_ms_median']:.2f} / {m['fwd_ms_p90']:.2f} | {m['bwd_ms_median']:.2f} / "
                             f"{m['bwd_ms_p90']:.2f} | {m['faults_median']:.0f} / {m['faults_p90']:.0f} | "
                             f"{m['sys_ms_mean']:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, f"bench_page_faults_cpu_{time.strftime('%Y-%m-%d')}")
        with open(stem + ".json", "w") as f:
            json.dump(dict(header=header, settings=SETTINGS, results=results), f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
