"""Validation-metric benchmark: hard Dice of one batch (update + compute) from
logits and a label map, fastdice.metrics vs torchmetrics vs MONAI, on the same
inputs, interleaved; time and peak extra memory, with a Markdown table last.

    python -m benchmarks.bench_metrics [--device cpu|cuda] [--quick] [--out DIR]

Every provider computes the same number (per-sample macro Dice over all
classes, averaged over the samples, classes absent from both left out) and the
run checks that they agree:
  fastdice     DiceScore(): one fused pass over logits and labels -> counts [B, C, 3]
  torchmetrics segmentation.DiceScore(input_format="mixed"): argmax, one-hot of
               predictions and labels (int64), products and sums
  monai        DiceMetric(num_classes=C): the user argmaxes (MONAI takes discrete
               predictions), then a Python loop over (sample, class) of masked sums
  fastdice.compat.torchmetrics  torchmetrics' DiceScore class with the fused update
  fastdice.compat.monai         MONAI's DiceMetric interface, the same argmaxed input:
               one histogram of (sample, predicted, true) labels
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import warnings

import torch

from . import utils


@dataclasses.dataclass(frozen=True)
class MetricWorkload:
    name: str
    shape: tuple
    dtype: str = "float32"
    device: str = "cpu"

    def make_inputs(self, seed=0):
        g = torch.Generator(device="cpu").manual_seed(seed)
        b, c, *spatial = self.shape
        x = torch.randn(self.shape, generator=g).to(dtype=getattr(torch, self.dtype), device=self.device)
        t = torch.randint(0, c, (b, *spatial), generator=g).to(self.device)
        return x, t


def workloads(device, quick):
    W = lambda *a, **k: MetricWorkload(*a, device=device, **k)  # noqa: E731
    ws = [
        W("3d_b2_c4_96^3", (2, 4, 96, 96, 96)),
        W("2d_b16_c2_256^2", (16, 2, 256, 256)),
    ]
    if quick:
        return ws
    ws += [
        W("3d_b2_c4_128^3", (2, 4, 128, 128, 128)),
        W("3d_b2_c14_64^3", (2, 14, 64, 64, 64)),
        W("2d_b16_c21_256^2", (16, 21, 256, 256)),
    ]
    if device == "cuda":
        ws += [W("3d_b2_c14_128^3_bf16", (2, 14, 128, 128, 128), dtype="bfloat16")]
    return ws


class Skip(Exception):
    pass


def _one_batch(metric):
    """One validation batch of a torchmetrics-style metric: update, compute, reset."""

    def run(x, t):
        metric.update(x, t)
        out = metric.compute()
        metric.reset()
        return out

    return run


def _fastdice(w):
    from fastdice.metrics import DiceScore

    return _one_batch(DiceScore())


def _torchmetrics(w):
    try:
        from torchmetrics.segmentation import DiceScore
    except ImportError as e:
        raise Skip(f"torchmetrics not installed ({e})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = DiceScore(num_classes=w.shape[1], average="macro", input_format="mixed").to(w.device)
    return _one_batch(metric)


def _compat_torchmetrics(w):
    try:
        from fastdice.compat.torchmetrics import DiceScore
    except ImportError as e:
        raise Skip(f"torchmetrics not installed ({e})")
    return _one_batch(DiceScore(num_classes=w.shape[1], average="macro", input_format="mixed").to(w.device))


def _monai(w, dice_metric=None):
    try:
        from monai.metrics import DiceMetric
    except ImportError as e:
        raise Skip(f"monai not installed ({e})")
    DiceMetric = dice_metric or DiceMetric
    metric = DiceMetric(include_background=True, reduction="mean", ignore_empty=False, num_classes=w.shape[1])

    def run(x, t):
        metric(torch.argmax(x, dim=1, keepdim=True), t.unsqueeze(1))
        out = metric.aggregate()
        metric.reset()
        return out

    return run


def _compat_monai(w):
    from fastdice.compat.monai.metrics import DiceMetric

    return _monai(w, DiceMetric)


PROVIDERS = {"fastdice": _fastdice, "torchmetrics": _torchmetrics, "monai": _monai,
             "fastdice.compat.torchmetrics": _compat_torchmetrics, "fastdice.compat.monai": _compat_monai}


def memory_child(provider, workload_json):
    """Entry of the fresh subprocess that measures one provider's CPU peak memory."""
    w = MetricWorkload(**json.loads(workload_json))
    fn = PROVIDERS[provider](w)
    x, t = w.make_inputs()
    fn(x, t)  # warm-up (lazy initialization)
    print(json.dumps({"peak_extra_bytes": utils.cpu_peak_extra_bytes_of(lambda: fn(x, t))}))


def cpu_peak_memory(provider, w):
    cmd = [sys.executable, "-m", "benchmarks.bench_metrics", "--memory-child", provider,
           json.dumps(dataclasses.asdict(w))]
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


def run_workload(w, args):
    providers, skipped, values = {}, {}, {}
    x0, t0 = w.make_inputs()
    for name, make in PROVIDERS.items():
        if args.providers and name not in args.providers:
            continue
        try:
            fn = make(w)
            values[name] = float(torch.as_tensor(fn(x0, t0)).double().reshape(-1)[0])
            providers[name] = fn
        except Skip as e:
            skipped[name] = str(e)
        except Exception as e:  # a provider that fails is reported, not dropped
            skipped[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    ref = values.get("fastdice")
    agree = {name: abs(v - ref) for name, v in values.items()} if ref is not None else {}
    n_buffers = 2 if w.device == "cuda" else 1
    inputs = [w.make_inputs(seed=i) for i in range(n_buffers)]
    warmup, reps = (2, 7) if args.quick else (3, 15)
    if w.device == "cuda":
        warmup, reps = 5, 30
    times = utils.interleaved_call_times(providers, inputs, w.device, warmup, reps)
    rows = {}
    for name, fn in providers.items():
        row = dict(times[name], value=values[name], abs_diff_to_fastdice=agree.get(name))
        if w.device == "cuda":
            row["peak_extra_bytes"] = utils.cuda_peak_extra_bytes(fn, *inputs[0], backward=False)
        elif not args.no_memory:
            row["peak_extra_bytes"] = cpu_peak_memory(name, w)
        rows[name] = row
    x_bytes = x0.numel() * x0.element_size()
    return {"workload": dataclasses.asdict(w), "input_bytes": x_bytes, "label_bytes": t0.numel() * t0.element_size(),
            "providers": rows, "skipped": skipped}


def markdown(results):
    lines = [
        "| workload | provider | update+compute ms (q1-q3) | fastdice speed-up | peak extra MB | value |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["workloads"]:
        rows = r["providers"]
        ours = rows.get("fastdice", {}).get("median_ms")
        for name, row in rows.items():
            speed = f"{row['median_ms'] / ours:.1f}x" if ours and name != "fastdice" else ""
            mem = row.get("peak_extra_bytes")
            mem = f"{mem / 2**20:.1f}" if mem is not None else "n/a"
            lines.append(
                f"| {r['workload']['name']} | {name} | {row['median_ms']:.2f} ({row['q1_ms']:.2f}-{row['q3_ms']:.2f}) "
                f"| {speed} | {mem} | {row['value']:.6f} |"
            )
        for name, why in r["skipped"].items():
            lines.append(f"| {r['workload']['name']} | {name} | skipped: {why} | | | |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="two workloads (about a minute on 2 CPU cores)")
    p.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    p.add_argument("--providers", nargs="*", help="subset of providers")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU memory subprocesses")
    p.add_argument("--memory-child", nargs=2, metavar=("PROVIDER", "WORKLOAD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        return memory_child(*args.memory_child)

    env = utils.environment(args.device)
    print(f"# fastdice metric benchmark on {env['device_name']}, torch {env['torch']}, commit {env['commit']}",
          flush=True)
    results = {"benchmark": "metrics", "workloads": [], "quick": args.quick}
    for w in workloads(args.device, args.quick):
        print(f"- {w.name} ...", flush=True)
        results["workloads"].append(run_workload(w, args))
        if args.device == "cuda":
            torch.cuda.empty_cache()
    results["environment"] = env
    path = utils.save_results(results, args.out, env, prefix="bench_metrics")
    table = markdown(results)
    with open(path.replace(".json", ".md"), "w") as f:
        f.write(f"fastdice metric benchmark: {env['device_name']}, torch {env['torch']}, commit {env['commit']}, "
                f"{env['date']}{' (quick)' if args.quick else ''}\n\n")
        f.write(table + "\n")
    print(f"\nresults: {path}")
    print(table)


if __name__ == "__main__":
    main()
