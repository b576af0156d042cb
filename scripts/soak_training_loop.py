"""Soak run of a user's epoch loop on the CPU: memory must stay flat.

10,000 steps of a small segmentation network trained with ``fastdice.DiceCELoss``
(forward + backward + SGD step), a validation metric updated every step and computed
and reset every epoch (``fastdice.metrics.DiceScore`` and, when torchmetrics is
installed, ``fastdice.compat.torchmetrics.DiceScore``). Every 500 steps it records the
process's resident memory (VmRSS) and the number of live tensors (``gc``), and at the
end it writes JSON and Markdown (figures, and the growth after warm-up) to
``benchmarks/results/``.

    nice -n 10 python scripts/soak_training_loop.py [--steps 10000] [--out benchmarks/results]

Not part of ``make test``: a few minutes on one core.
"""

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import torch

import fastdice

WARM_UP_STEPS = 1000  # allocator pools, autograd caches and first-epoch lists settle before this


def rss_mib() -> float:
    """Resident memory of this process (VmRSS), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated aliases (reduce_op) warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--record-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warm-up", type=int, default=WARM_UP_STEPS, help="steps before memory must be flat")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    classes, batch, size = 3, 4, 32
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, classes, 3, padding=1)
    )
    criterion = fastdice.DiceCELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    metrics = {"fastdice.metrics.DiceScore": fastdice.metrics.DiceScore(num_classes=classes)}
    try:
        from fastdice.compat.torchmetrics import DiceScore as TMDiceScore

        metrics["fastdice.compat.torchmetrics.DiceScore"] = TMDiceScore(num_classes=classes, input_format="mixed")
    except ImportError:
        pass

    samples, epoch_scores = [], []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        images = torch.randn(batch, 1, size, size)
        labels = (images[:, 0] > 0.5).long() + (images[:, 0] > 1.5).long()  # a learnable target
        logits = model(images)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for metric in metrics.values():
                metric.update(logits.detach(), labels)
        if step % args.steps_per_epoch == 0:
            epoch_scores.append({name: float(m.compute()) for name, m in metrics.items()})
            for metric in metrics.values():
                metric.reset()
        if step % args.record_every == 0 or step == 1:
            samples.append({"step": step, "rss_mib": round(rss_mib(), 2), "live_tensors": live_tensors(),
                            "loss": round(float(loss.detach()), 5), "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(samples[-1]), flush=True)

    warm_up = min(args.warm_up, args.steps // 2)
    after = [s for s in samples if s["step"] >= warm_up]
    summary = {
        "warm_up_steps": warm_up,
        "rss_mib_after_warm_up": {"first": after[0]["rss_mib"], "last": after[-1]["rss_mib"],
                                  "min": min(s["rss_mib"] for s in after), "max": max(s["rss_mib"] for s in after)},
        "live_tensors_after_warm_up": {"min": min(s["live_tensors"] for s in after),
                                       "max": max(s["live_tensors"] for s in after)},
        "first_epoch_dice": epoch_scores[0], "last_epoch_dice": epoch_scores[-1],
    }
    growth = summary["rss_mib_after_warm_up"]["last"] - summary["rss_mib_after_warm_up"]["first"]
    summary["rss_growth_after_warm_up_mib"] = round(growth, 2)
    summary["flat"] = (summary["live_tensors_after_warm_up"]["min"] == summary["live_tensors_after_warm_up"]["max"]
                       and summary["rss_mib_after_warm_up"]["max"] - summary["rss_mib_after_warm_up"]["min"] < 8.0)
    env = {"torch": torch.__version__, "fastdice": fastdice.__version__, "commit": commit(),
           "python": sys.version.split()[0],
           "machine": platform.machine(), "threads": args.threads,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    result = {"benchmark": "soak_training_loop", "steps": args.steps, "steps_per_epoch": args.steps_per_epoch,
              "batch": [batch, classes, size, size], "metrics": list(metrics), "samples": samples,
              "summary": summary, "environment": env}

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"soak_training_loop_cpu_{env['date'][:10]}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    rows = "\n".join(f"| {s['step']} | {s['rss_mib']:.1f} | {s['live_tensors']} | {s['loss']:.4f} | {s['seconds']} |"
                     for s in samples)
    rss = summary["rss_mib_after_warm_up"]
    with open(stem + ".md", "w") as f:
        f.write(
            f"Soak run: {args.steps} steps of DiceCELoss forward + backward (batch {batch}x{classes}x{size}x{size}, "
            f"CPU, {args.threads} thread), metrics updated every step and reset every {args.steps_per_epoch} steps "
            f"({', '.join(metrics)}); torch {env['torch']}, commit {env['commit']}, {env['date']}.\n\n"
            f"After {warm_up} warm-up steps: RSS {rss['first']:.1f} -> {rss['last']:.1f} MiB "
            f"(min {rss['min']:.1f}, max {rss['max']:.1f}; growth {summary['rss_growth_after_warm_up_mib']:+.2f} MiB), "
            f"live tensors {summary['live_tensors_after_warm_up']['min']}-"
            f"{summary['live_tensors_after_warm_up']['max']}; flat: {'yes' if summary['flat'] else 'NO'}. "
            f"Validation Dice first epoch {epoch_scores[0]}, last epoch {epoch_scores[-1]}.\n\n"
            "| step | RSS MiB | live tensors | loss | seconds |\n|---|---|---|---|---|\n" + rows + "\n"
        )
    print(f"results: {stem}.json, {stem}.md; flat after warm-up: {summary['flat']}")
    return 0 if summary["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
