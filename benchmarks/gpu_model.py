"""The GPU cost model (fastdice_dev/gpu_model.py) on every CUDA workload of
benchmarks/bench.py: a MODEL of an H100 SXM and an H200, not a measurement.

    python -m benchmarks.gpu_model [--max-blocks N] [--only NAME ...] [--out DIR]

Each workload's fastdice loss runs once, forward and backward, on a tiny input
on the CPU, with the fastdice ops it calls recorded (the loss path's own
arguments); the calls are then replayed at the workload's full size on the
profiling build of the emulated GPU (fastdice_dev/emulation.py), which runs
the unchanged CUDA host code and kernels and counts every memory access.
Launches of more than --max-blocks blocks run an even sample of that many
blocks, their counts scaled to the grid (the sampling error, measured once
against a full run, is in the table's notes). Writes
gpu_model_<date>.md / .json under --out and prints the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastdice_dev import emulation as ce
from fastdice_dev import gpu_model as gm
from fastdice_dev import profile_counts

from .bench import STRATEGY_WORKLOADS, workloads
from .providers import PROVIDERS

TINY = 16  # spatial size of the recording run


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "fastdice":
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def record_calls(w):
    """The fastdice ops the workload's loss calls (forward, then backward with grad_output 0.7), on a tiny
    input; returns (calls, tiny inputs, tiny targets) with inputs and targets as lists of levels."""
    b, c, *spatial = w.shape
    tiny = dataclasses.replace(w, shape=(b, c, *[TINY] * len(spatial)), device="cpu")
    provider = PROVIDERS["fastdice_nnunet" if w.ds_levels else "fastdice"](tiny)
    x, t = tiny.make_inputs()
    with _Recorder() as rec:
        loss = provider(x, t)
        loss.backward(torch.tensor(0.7, dtype=loss.dtype))
    xs, ts = (x, t) if isinstance(x, list) else ([x], [t])
    return rec.calls, xs, ts


def _full_tensor(arg, xs, ts, full_xs, full_ts, classes, gen):
    """The full-size tensor standing for a tiny-run argument: the workload's own input or target where the
    argument is one, a fresh random tensor of the full spatial size where it has the tiny spatial size,
    the argument itself (statistics, weights) otherwise."""
    for level, (x, t) in enumerate(zip(xs, ts)):
        spatial = x.shape[2:]
        d = len(spatial)
        if arg.dim() < d or tuple(arg.shape[arg.dim() - d:]) != tuple(spatial):
            continue
        full_spatial = full_xs[level].shape[2:]
        shape = (*arg.shape[:arg.dim() - d], *full_spatial)
        for tiny_src, full_src in ((x, full_xs[level]), (t, full_ts[level])):
            if arg.untyped_storage().data_ptr() == tiny_src.untyped_storage().data_ptr() \
                    and arg.numel() == tiny_src.numel():
                return full_src.detach().reshape(shape).to(arg.dtype)
        if arg.dtype.is_floating_point:
            return torch.rand(shape, generator=gen).to(arg.dtype)
        if arg.dtype == torch.bool:
            return torch.rand(shape, generator=gen) < 0.1
        return torch.randint(0, classes, shape, generator=gen).to(arg.dtype)
    return arg.detach()


def op_minimal_bytes(name, args) -> int:
    """The fewest bytes an op must move: its large tensor arguments read once, its large outputs written once
    (the statistics and other O(B*C) tensors are negligible and left out)."""
    return 0  # filled by replay from the tensors themselves


def replay(emu, calls, xs, ts, w, strategy, max_blocks, gen):
    """Runs the recorded calls on the emulated GPU at full size; returns [(op, phase, minimal bytes,
    [LaunchCounts])] in call order."""
    full_xs, full_ts = w.make_inputs() if w.ds_levels else (lambda p: ([p[0]], [p[1]]))(w.make_inputs())
    full_xs = [x.detach() for x in full_xs]
    classes = w.shape[1]
    out = []
    env_before = os.environ.get("FASTDICE_CUDA_FORWARD")
    os.environ["FASTDICE_CUDA_FORWARD"] = strategy
    try:
        for func, args, kwargs in calls:
            name = func._schema.name.split("::", 1)[1]
            op = getattr(emu, name, None)
            if op is None:
                continue
            large = []

            def convert(a):
                if isinstance(a, torch.Tensor):
                    f = _full_tensor(a, xs, ts, full_xs, full_ts, classes, gen)
                    if f.numel() >= 4096:
                        large.append(f)
                    return emu.guarded_copy(f)
                if isinstance(a, (list, tuple)) and a and all(isinstance(v, torch.Tensor) for v in a):
                    return type(a)(convert(v) for v in a)
                return a

            # The emulated ops' schemas are positional only: the call's arguments in the schema's order,
            # defaults filled in.
            positional = []
            for i, a in enumerate(func._schema.arguments):
                if i < len(args):
                    positional.append(args[i])
                elif a.name in kwargs:
                    positional.append(kwargs[a.name])
                else:
                    positional.append(a.default_value)
            full_args = [convert(a) for a in positional]
            result, launches = profile_counts.profiled(emu, lambda: op(*full_args), max_blocks)
            results = result if isinstance(result, (list, tuple)) else [result]
            minimal = sum(a.numel() * a.element_size() for a in large)
            minimal += sum(r.numel() * r.element_size() for r in results if isinstance(r, torch.Tensor)
                           and r.numel() >= 4096)
            phase = "backward" if "backward" in name else "forward"
            out.append((name, phase, minimal, launches))
    finally:
        if env_before is None:
            os.environ.pop("FASTDICE_CUDA_FORWARD", None)
        else:
            os.environ["FASTDICE_CUDA_FORWARD"] = env_before
    return out


def summarize(w, strategy, ops, resources):
    """One workload's model: per launch and the fwd+bwd totals on each GPU."""
    rows = []
    totals = {g.name: {"forward": 0.0, "backward": 0.0} for g in gm.GPUS}
    for name, phase, minimal, launches in ops:
        for L in launches:
            models = {g.name: gm.model_launch(L, g, resources) for g in gm.GPUS}
            for g in gm.GPUS:
                totals[g.name][phase] += models[g.name].time_s
            mains = L.main_loads()
            worst = min(mains, key=lambda s: s.efficiency) if mains else None
            m = models[gm.H100.name]
            rows.append(dict(
                op=name, phase=phase, launcher=L.launcher, kernel=L.kernel,
                grid=list(L.grid), block=list(L.block), blocks=L.blocks, blocks_run=L.blocks_run,
                shared_bytes=L.dynamic_shared + L.static_shared,
                dram_bytes=L.dram_bytes, sector_traffic_bytes=L.sector_traffic_bytes,
                op_minimal_bytes=minimal,
                bytes_over_minimal=L.dram_bytes / minimal if minimal and L.blocks > 1 else None,
                unique_read_bytes=L.unique_read_bytes, unique_write_bytes=L.unique_write_bytes,
                load_efficiency=L.load_efficiency, store_efficiency=L.store_efficiency,
                worst_main_load=dict(site=worst.site, function=worst.function, efficiency=worst.efficiency,
                                     sectors_per_request=worst.sectors_per_request,
                                     ideal_sectors_per_request=worst.ideal_sectors_per_request) if worst else None,
                main_loads=[dict(site=s.site, function=s.function, bytes=s.bytes, efficiency=s.efficiency,
                                 sectors_per_request=s.sectors_per_request,
                                 ideal_sectors_per_request=s.ideal_sectors_per_request) for s in mains],
                bank_conflicts=L.bank_conflicts,
                shared_wavefronts=L.total("shared_load", "wavefronts") + L.total("shared_store", "wavefronts"),
                registers=m.registers, spill_bytes=m.spill_bytes, blocks_per_sm=m.blocks_per_sm,
                occupancy_limit=m.limit, occupancy=m.occupancy, waves=m.waves,
                load_burst_bytes=L.load_burst_bytes, in_flight_per_sm=m.in_flight_per_sm,
                time_us={g.name: models[g.name].time_s * 1e6 for g in gm.GPUS},
                mlp_bound_us={g.name: models[g.name].mlp_bound_s * 1e6 for g in gm.GPUS},
                bandwidth_bound_us={g.name: models[g.name].bandwidth_bound_s * 1e6 for g in gm.GPUS},
            ))
    minimal = w.minimal_bytes()
    summary = {}
    for g in gm.GPUS:
        t = totals[g.name]["forward"] + totals[g.name]["backward"]
        summary[g.name] = dict(forward_us=totals[g.name]["forward"] * 1e6, backward_us=totals[g.name]["backward"] * 1e6,
                               total_us=t * 1e6, fraction_of_copy_bandwidth=minimal / t / g.copy_bandwidth)
    return dict(workload=w.name, shape=list(w.shape), dtype=w.dtype, loss=w.loss, activation=w.activation,
                dense_target=w.dense_target, ds_levels=w.ds_levels, strategy=strategy, minimal_bytes=minimal,
                launches=rows, summary=summary)


def _fmt_bytes(b):
    return f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"


def markdown(results, meta) -> str:
    h1, h2 = gm.H100.name, gm.H200.name
    lines = [
        "# GPU cost model of the CUDA kernels (a MODEL, not a measurement)",
        "",
        f"Predicted by `make gpu-model` (benchmarks/gpu_model.py, fastdice_dev/gpu_model.py) at {meta['commit']} on "
        f"{meta['date']}, from counts taken on the emulated GPU: no kernel ran on a GPU. The first GPU run "
        "(`scripts/gpu_check.sh calibrate`) measures the same workloads and writes both side by side.",
        "",
        f"Model: per launch, time = sum over waves of max(bytes / (0.9 x peak), bytes read / (bytes in flight / "
        f"{gm.H100.latency_s * 1e9:.0f} ns)) + {gm.H100.launch_s * 1e6:.1f} us launch; {h1} {gm.H100.bandwidth / 1e12:.2f} TB/s, "
        f"{h2} {gm.H200.bandwidth / 1e12:.1f} TB/s, 132 SMs; bytes = unique 32-byte sectors read and written "
        "(DRAM traffic when every re-read hits L2); registers from ptxas sm_90 "
        "(benchmarks/results/kernel_resources_sm90.json). Fraction = the workload's minimal fwd+bwd bytes "
        "(bench.py) / predicted time / (0.9 x peak, a device-to-device copy's rate). "
        f"Little's law: {gm.H100.bytes_in_flight_needed_per_sm / 1024:.0f} KiB in flight per SM needed on the {h1}, "
        f"{gm.H200.bytes_in_flight_needed_per_sm / 1024:.0f} KiB on the {h2}.",
        "",
        f"Sampling: launches of more than {meta['max_blocks']} blocks run an even sample of {meta['max_blocks']} "
        f"blocks, counts scaled to the grid. {meta.get('sampling_error', '')}",
        "",
        "## Workloads: predicted fwd+bwd",
        "",
        f"| workload | forward | {h1} fwd / bwd us | {h1} fraction of copy BW | {h2} fwd / bwd us | {h2} fraction |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        s1, s2 = r["summary"][h1], r["summary"][h2]
        lines.append(f"| {r['workload']} | {r['strategy']} | {s1['forward_us']:.0f} / {s1['backward_us']:.0f} | "
                     f"{s1['fraction_of_copy_bandwidth']:.0%} | {s2['forward_us']:.0f} / {s2['backward_us']:.0f} | "
                     f"{s2['fraction_of_copy_bandwidth']:.0%} |")
    lines += [
        "",
        "## Launches",
        "",
        "bytes/min: unique DRAM bytes over the op's minimal bytes (its large tensors read once, its large outputs "
        "written once); sect/req: the worst main-stream load's sectors per request (ideal); eff: global load "
        "sector efficiency; conflicts: extra shared-memory wavefronts; occ: resident warps / 64 (limit); "
        "in flight: bytes per SM at full residency (mean load burst per thread).",
        "",
        f"| workload | forward | kernel | grid | bytes/min | traffic | sect/req (ideal) | eff | conflicts | regs / spill | "
        f"occ | waves | in flight/SM | {h1} us | {h2} us |",
        "|---|---|---|---|---:|---:|---|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for L in r["launches"]:
            worst = L["worst_main_load"]
            spr = f"{worst['sectors_per_request']:.1f} ({worst['ideal_sectors_per_request']:.1f})" if worst else "-"
            bom = f"{L['bytes_over_minimal']:.2f}" if L["bytes_over_minimal"] else "-"
            lines.append(
                f"| {r['workload']} | {r['strategy']} | {L['launcher']} | {L['blocks']} | {bom} | "
                f"{_fmt_bytes(L['sector_traffic_bytes'])} | {spr} | {L['load_efficiency']:.0%} | "
                f"{L['bank_conflicts']:.0f} | {L['registers']} / {L['spill_bytes']} | {L['occupancy']:.0%} "
                f"({L['occupancy_limit']}) | {L['waves']:.1f} | {L['in_flight_per_sm'] / 1024:.0f} KiB "
                f"({L['load_burst_bytes']:.0f} B) | {L['time_us'][h1]:.1f} | {L['time_us'][h2]:.1f} |")
    return "\n".join(lines) + "\n"


def run(names=None, max_blocks=16, strategies_for=STRATEGY_WORKLOADS, log=print):
    emu = ce.build(profile=True)
    ce.configure(emu, 0)
    resources = gm.load_resources()
    gen = torch.Generator().manual_seed(0)
    results = []
    for w in workloads("cuda", quick=False):
        if names and w.name not in names:
            continue
        w = dataclasses.replace(w, device="cpu")
        calls, xs, ts = record_calls(w)
        strategies = ["warp", "thread"] if w.name in strategies_for else ["warp"]
        for strategy in strategies:
            t0 = time.time()
            ops = replay(emu, calls, xs, ts, w, strategy, max_blocks, gen)
            results.append(summarize(w, strategy, ops, resources))
            s = results[-1]["summary"]
            log(f"{w.name} [{strategy}]: {gm.H100.name} {s[gm.H100.name]['total_us']:.0f} us "
                f"({s[gm.H100.name]['fraction_of_copy_bandwidth']:.0%}), {gm.H200.name} "
                f"{s[gm.H200.name]['total_us']:.0f} us ({s[gm.H200.name]['fraction_of_copy_bandwidth']:.0%}) "
                f"[{time.time() - t0:.0f} s]")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-blocks", type=int, default=16, help="blocks run per launch (0: all); the committed table used 16")
    p.add_argument("--only", nargs="*", help="workload names")
    p.add_argument("--out", default=str(gm.ROOT / "benchmarks" / "results"))
    p.add_argument("--sampling-error", default="", help="the sentence on the sampling error for the notes")
    p.add_argument("--render", type=pathlib.Path, help="rewrite the Markdown of this JSON (with --sampling-error)")
    args = p.parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text())
        if args.sampling_error:
            data["meta"]["sampling_error"] = args.sampling_error
        args.render.write_text(json.dumps(data, indent=1))
        md = markdown(data["workloads"], data["meta"])
        args.render.with_suffix(".md").write_text(md)
        print(md)
        return 0
    torch.set_num_threads(1)
    results = run(args.only, args.max_blocks, log=lambda m: print(m, file=sys.stderr, flush=True))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=gm.ROOT).stdout.strip()
    date = datetime.date.today().isoformat()
    meta = dict(commit=commit, date=date, max_blocks=args.max_blocks, kind="model", sampling_error=args.sampling_error,
                gpus=[dataclasses.asdict(g) for g in gm.GPUS])
    md = markdown(results, meta)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"gpu_model_{date}"
    stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, workloads=results), indent=1))
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
