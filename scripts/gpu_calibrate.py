"""On a GPU: every workload the cost model predicts (the newest
benchmarks/results/gpu_model_*.json), measured, side by side with the model.

    python scripts/gpu_calibrate.py [--model FILE] [--out DIR] [--ncu]

Times each workload's fastdice forward and backward with CUDA events as
benchmarks/bench.py does (bursts of queued iterations, inputs rotated past L2,
medians), with the forward strategy the model row names (FASTDICE_CUDA_FORWARD).
With --ncu (when Nsight Compute is on PATH) it also runs itself under ncu once
per reference workload and reads DRAM bytes, global load requests and sectors,
shared-memory bank conflicts and each kernel's duration, next to the model's
counts for the same launch. Writes gpu_calibration.md / .json under --out and
prints the Markdown last: predicted against measured, and their ratio, which is
what corrects the model's constants (fastdice_dev/gpu_model.py).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NCU_METRICS = [
    "gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum", "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum", "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
]
# The reference workloads ncu reads (one fwd+bwd each; ncu replays every kernel per metric pass).
NCU_WORKLOADS = ["3d_b2_c4_128^3", "3d_b2_c14_128^3", "3d_b2_c14_128^3_bf16", "3d_b2_c4_128^3_dice_ce",
                 "3d_b2_c4_128^3_sigmoid_dense"]


def newest_model() -> pathlib.Path:
    found = sorted((ROOT / "benchmarks" / "results").glob("gpu_model_*.json"))
    if not found:
        raise SystemExit("no benchmarks/results/gpu_model_*.json: run `make gpu-model` first")
    return found[-1]


def gpu_key(model_meta) -> str:
    import torch

    name = torch.cuda.get_device_name()
    return "H200" if "H200" in name else "H100 SXM"


def measure(rows, only=None):
    """(workload, strategy) -> measured fwd / bwd medians in us."""
    import torch

    from benchmarks import utils
    from benchmarks.bench import workloads
    from benchmarks.providers import PROVIDERS

    by_name = {w.name: w for w in workloads("cuda", quick=False)}
    out = {}
    for r in rows:
        if only and r["workload"] not in only:
            continue
        w = by_name[r["workload"]]
        provider = "fastdice_nnunet" if w.ds_levels else "fastdice"
        fn = PROVIDERS[provider](w)
        os.environ["FASTDICE_CUDA_FORWARD"] = r["strategy"]
        n_buffers = max(2, min(8, int(200e6 // max(w.minimal_bytes(), 1)) + 1))
        inputs = [w.make_inputs(seed=i) for i in range(n_buffers)]
        fn(*inputs[0]).backward()
        torch.cuda.synchronize()
        times = utils.interleaved_times({"fastdice": fn}, inputs, "cuda", 2, 6)["fastdice"]
        out[(r["workload"], r["strategy"])] = dict(forward_us=times["fwd"]["median_ms"] * 1e3,
                                                   backward_us=times["bwd"]["median_ms"] * 1e3)
        del inputs
        torch.cuda.empty_cache()
        print(f"measured {r['workload']} [{r['strategy']}]: {out[(r['workload'], r['strategy'])]}", flush=True)
    os.environ.pop("FASTDICE_CUDA_FORWARD", None)
    return out


def ncu_counts(model_path, out_dir):
    """Per kernel launch of the NCU_WORKLOADS (warp strategy, one fwd+bwd): ncu's metrics, in launch order."""
    ncu = shutil.which("ncu")
    if not ncu:
        return None
    report = pathlib.Path(out_dir) / "gpu_calibration_ncu.csv"
    cmd = [ncu, "--clock-control", "none", "--csv", "--print-units", "base", "--kernel-name", "regex:dice|reduce_partials",
           "--metrics", ",".join(NCU_METRICS), sys.executable,
           str(pathlib.Path(__file__).resolve()), "--model", str(model_path), "--ncu-child"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    report.write_text(proc.stdout)
    text = proc.stdout[proc.stdout.find('"ID"'):] if '"ID"' in proc.stdout else ""
    launches = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = (int(row["ID"]), row["Kernel Name"])
        value = row["Metric Value"].replace(",", "")
        try:
            launches.setdefault(key, {})[row["Metric Name"]] = float(value)
        except ValueError:
            pass
    return [dict(id=k[0], kernel=k[1], **v) for k, v in sorted(launches.items())]


def ncu_child():
    """Under ncu: each of NCU_WORKLOADS' fastdice fwd+bwd once, in that order (ncu profiles every launch;
    the inputs' own random-number kernels show in its rows too)."""
    import torch

    from benchmarks.bench import workloads
    from benchmarks.providers import PROVIDERS

    by_name = {w.name: w for w in workloads("cuda", quick=False)}
    for name in NCU_WORKLOADS:
        w = by_name[name]
        fn = PROVIDERS["fastdice"](w)
        x, t = w.make_inputs()
        print(f"ncu-workload {name}", flush=True)
        fn(x, t).backward()
        torch.cuda.synchronize()


def markdown(model, measured, ncu_rows, gpu) -> str:
    lines = ["# Calibration: the GPU cost model against the GPU", "",
             f"Model: {model['meta'].get('commit', '?')} ({model['meta'].get('date', '?')}), the {gpu} column; "
             "measured: CUDA events, medians, as benchmarks/bench.py times.", "",
             "| workload | forward | predicted fwd / bwd us | measured fwd / bwd us | measured / predicted |",
             "|---|---|---:|---:|---:|"]
    for r in model["workloads"]:
        m = measured.get((r["workload"], r["strategy"]))
        p = r["summary"][gpu]
        if not m:
            continue
        ratio = (m["forward_us"] + m["backward_us"]) / p["total_us"]
        lines.append(f"| {r['workload']} | {r['strategy']} | {p['forward_us']:.0f} / {p['backward_us']:.0f} | "
                     f"{m['forward_us']:.0f} / {m['backward_us']:.0f} | {ratio:.2f} |")
    if ncu_rows:
        lines += ["", "## Nsight Compute, per launch (reference workloads, warp strategy)", "",
                  "| kernel | us | DRAM read MB | DRAM write MB | sectors / request | bank conflicts | warps active |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in ncu_rows:
            req = r.get("l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum", 0)
            spr = r.get("l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum", 0) / req if req else 0
            lines.append(
                f"| {r['kernel'][:60]} | {r.get('gpu__time_duration.sum', 0) / 1e3:.1f} | "
                f"{r.get('dram__bytes_read.sum', 0) / 1e6:.1f} | {r.get('dram__bytes_write.sum', 0) / 1e6:.1f} | "
                f"{spr:.1f} | {r.get('l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum', 0):.0f} | "
                f"{r.get('sm__warps_active.avg.pct_of_peak_sustained_active', 0):.0f}% |")
        lines += ["", "The model's counts for the same launches: benchmarks/results/gpu_model_*.md (Launches)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=pathlib.Path)
    p.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "benchmarks" / "results")))
    p.add_argument("--ncu", action="store_true", help="also read Nsight Compute's counters (if ncu is on PATH)")
    p.add_argument("--only", nargs="*", help="workload names")
    p.add_argument("--ncu-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ncu_child:
        ncu_child()
        return 0
    model_path = args.model or newest_model()
    model = json.loads(model_path.read_text())
    gpu = gpu_key(model["meta"])
    measured = measure(model["workloads"], args.only)
    ncu_rows = ncu_counts(model_path, args.out) if args.ncu else None
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_calibration.json").write_text(json.dumps(dict(
        model=str(model_path.name), gpu=gpu,
        measured=[dict(workload=k[0], strategy=k[1], **v) for k, v in measured.items()], ncu=ncu_rows), indent=1))
    md = markdown(model, measured, ncu_rows, gpu)
    (out / "gpu_calibration.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
