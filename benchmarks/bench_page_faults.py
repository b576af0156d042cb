"""How much of a CPU backward is first-touch page faults of the fresh gradient,
and what an allocator setting does about it (#18 item 4).

    python -m benchmarks.bench_page_faults [--out DIR] [--reps N]

Each configuration runs in its own process (the allocator reads its settings
at start): fastdice.DiceLoss's backward at the benchmark shapes, with a fresh
gradient every step as in training (``x.grad = None``), timed and counted
(minor page faults from getrusage around the backward alone). glibc returns a
large freed block (above its mmap threshold, 128 KiB to 32 MiB, adjusted at
run time) to the OS, so the next step's gradient is mapped afresh and every
4 KiB page faults on its first write. The setting compared keeps freed blocks
in the heap: ``MALLOC_MMAP_THRESHOLD_`` (blocks up to it come from the heap)
and ``MALLOC_TRIM_THRESHOLD_`` (the heap is not trimmed back).
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


def measure(reps: int) -> dict:
    """In this process: per shape, the medians of backward time and minor faults."""
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
        times, faults = [], []
        for i in range(reps + 3):
            x.grad = None
            loss = loss_fn(x, t)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            loss.backward()
            t1 = time.perf_counter()
            f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            if i >= 3:
                times.append((t1 - t0) * 1e3)
                faults.append(f1 - f0)
        grad_mb = x.numel() * 4 / 2**20
        out[name] = dict(bwd_ms_median=statistics.median(times), bwd_ms_p90=sorted(times)[int(0.9 * len(times))],
                         faults_median=statistics.median(faults), grad_mb=grad_mb, grad_pages=grad_mb * 256)
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
    lines = [header, "", "| workload | gradient MB (4 KiB pages) | setting | bwd ms median | bwd ms p90 | minor faults per bwd |",
             "|---|---|---|---|---|---|"]
    for name in SHAPES:
        for setting in SETTINGS:
            r = results[setting][name]
            lines.append(f"| {name} | {r['grad_mb']:.0f} ({r['grad_pages']:.0f}) | {setting} | {r['bwd_ms_median']:.2f} | "
                         f"{r['bwd_ms_p90']:.2f} | {r['faults_median']:.0f} |")
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
