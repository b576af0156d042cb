"""fastdice benchmark: forward, backward and fwd+bwd time and peak extra memory
of every provider on the same inputs, interleaved, with a Markdown table last.

    python -m benchmarks.bench [--device cpu|cuda] [--quick] [--out DIR]
"""

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

# Inductor compiles in worker processes that stay alive and keep busy after the
# first compile: on a 2-core machine they took the CPU from the timed loops of
# the first workloads (fastdice at 3-4x its time in the next run). Compile in process.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

# glibc's allocator in its steady state for the CPU run: no block mapped with mmap and the
# heap never trimmed, so freed memory stays mapped and reused. With the defaults, a free()
# that merges into a large free top of the heap returns it to the OS (brk) inside whichever
# timed call frees next: 10-13 ms of kernel time landed in fastdice's 2 ms forward after the
# textbook module had freed its temporaries (perf, `__do_sys_brk` < `unmap_page_range`), and
# blocks mapped afresh fault on first touch. Both are the allocator's cost, not a loss's;
# benchmarks/bench_page_faults.py measures them under the defaults. glibc reads these at start.
STEADY_ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}

import torch

from . import utils
from .providers import FLOORS, PROVIDERS, NotApplicable, Skip


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    shape: tuple
    activation: str = "softmax"
    dense_target: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    loss: str = "dice"  # "dice_ce": Dice + cross-entropy (softmax, label maps); "seed": DiceLoss() on probabilities
    # Deep supervision as nnU-Net's trainer: the output of `shape` and ds_levels more, each halved
    # in every spatial dimension; inputs and targets are lists, targets int16 (B, 1, ...) label maps
    # downsampled nearest-exact (nnU-Net 2.8.1's data pipeline); only nnU-Net's providers take them.
    ds_levels: int = 0
    target_dtype: str = "float32"  # dense targets: float32, bool or uint8 (a 0/1 mask as loaded)
    # The seed workload's pooling: DiceLoss(pooling=...) against the reference and MONAI pooled alike
    # (the textbook module pools globally only).
    pooling: str = "global"

    def __post_init__(self):
        if self.loss == "seed":
            assert self.activation == "none" and self.dense_target
        else:
            assert self.pooling == "global", "pooling is an option of the seed workload"
        if self.ds_levels:
            assert self.loss == "dice_ce" and self.activation == "softmax" and not self.dense_target

    def level_shapes(self):
        """The shape of every output, full resolution first (one entry without deep supervision)."""
        b, c, *spatial = self.shape
        return [(b, c, *(s >> i for s in spatial)) for i in range(self.ds_levels + 1)]

    def ds_weights(self):
        """nnUNetTrainer._build_loss's weights (no DDP): 1, 1/2, 1/4, ..., the lowest output 0, sum 1."""
        w = [1 / 2 ** i for i in range(self.ds_levels + 1)]
        w[-1] = 0
        return [v / sum(w) for v in w]

    def make_inputs(self, seed=0):
        g = torch.Generator(device="cpu").manual_seed(seed)
        dtype = getattr(torch, self.dtype)
        if self.ds_levels:
            xs = [torch.randn(s, generator=g).to(dtype=dtype, device=self.device).requires_grad_(True)
                  for s in self.level_shapes()]
            b, c, *spatial = self.shape
            full = torch.randint(0, c, (b, 1, *spatial), generator=g, dtype=torch.int16)
            ts = [full] + [  # batchgeneratorsv2's DownsampleSegForDSTransform
                torch.nn.functional.interpolate(full.float(), s[2:], mode="nearest-exact").to(torch.int16)
                for s in self.level_shapes()[1:]
            ]
            return xs, [t.to(self.device) for t in ts]
        if self.activation == "none":  # probabilities
            x = torch.rand(self.shape, generator=g).to(dtype=dtype, device=self.device).requires_grad_(True)
        else:
            x = torch.randn(self.shape, generator=g).to(dtype=dtype, device=self.device).requires_grad_(True)
        b, c, *spatial = self.shape
        if self.dense_target:
            t = (torch.rand(self.shape, generator=g) < 0.1).to(getattr(torch, self.target_dtype)).to(self.device)
        else:
            t = torch.randint(0, c, (b, *spatial), generator=g).to(self.device)
        return x, t

    def _used_levels(self):
        """The outputs the loss reads (deep supervision skips the weight-0 one)."""
        shapes = self.level_shapes()
        return shapes[:-1] if self.ds_levels else shapes

    def forward_bytes(self):
        """Bytes the forward must move: read input and target once."""
        return (self.minimal_bytes() - self.input_bytes()) // 2

    def input_bytes(self):
        elem = torch.empty((), dtype=getattr(torch, self.dtype)).element_size()
        return sum(math.prod(s) * elem for s in self._used_levels())

    def minimal_bytes(self):
        """Bytes a fused fwd+bwd must move: read input and target twice, write the gradient."""
        elem = torch.empty((), dtype=getattr(torch, self.dtype)).element_size()
        total = 0
        for shape in self._used_levels():
            n = math.prod(shape)
            x_bytes = n * elem
            if self.dense_target:
                t_bytes = n * torch.empty((), dtype=getattr(torch, self.target_dtype)).element_size()
            else:
                t_bytes = (n // shape[1]) * (2 if self.ds_levels else 8)
            total += 2 * (x_bytes + t_bytes) + x_bytes
        return total


# The workloads that decide between the CUDA forward strategies (warp / thread):
# softmax + label maps, float32 and bfloat16, C = 4 and 14, Dice and Dice + CE.
STRATEGY_WORKLOADS = [
    "3d_b2_c14_128^3", "3d_b2_c4_128^3", "3d_b2_c14_128^3_dice_ce", "3d_b2_c4_128^3_dice_ce",
    "3d_b2_c14_128^3_bf16", "3d_b2_c4_128^3_bf16", "3d_b2_c14_128^3_bf16_dice_ce", "3d_b2_c4_128^3_bf16_dice_ce",
]


def workloads(device, quick):
    W = lambda *a, **k: Workload(*a, device=device, **k)  # noqa: E731
    if quick:
        return [
            W("seed_3d_b2_c4_96^3", (2, 4, 96, 96, 96), activation="none", dense_target=True, loss="seed"),
            W("3d_b2_c4_96^3", (2, 4, 96, 96, 96)),
            W("2d_b8_c2_256^2_sigmoid_dense", (8, 2, 256, 256), activation="sigmoid", dense_target=True),
            W("3d_b2_c4_96^3_dice_ce", (2, 4, 96, 96, 96), loss="dice_ce"),
            W("3d_b2_c4_96^3_dice_ce_ds", (2, 4, 96, 96, 96), loss="dice_ce", ds_levels=4),
        ]
    seed = dict(activation="none", dense_target=True, loss="seed")
    ws = [
        # The seed's workload: DiceLoss() against the textbook module, probabilities and a dense 0/1 target.
        W("seed_3d_b2_c4_96^3", (2, 4, 96, 96, 96), **seed),
        W("seed_3d_b2_c4_64^3", (2, 4, 64, 64, 64), **seed),
        W("seed_2d_b16_c1_512^2", (16, 1, 512, 512), **seed),
        # The other dense-target paths of the bounds: bool / uint8 masks, sigmoid logits.
        W("seed_3d_b2_c4_96^3_bool", (2, 4, 96, 96, 96), **seed, target_dtype="bool"),
        W("seed_3d_b2_c4_96^3_u8", (2, 4, 96, 96, 96), **seed, target_dtype="uint8"),
        # The other poolings (the kernels are the same; the epilogue pools the per-(sample, class) sums).
        W("seed_3d_b2_c4_96^3_batch_pooling", (2, 4, 96, 96, 96), **seed, pooling="batch"),
        W("seed_3d_b2_c4_96^3_sample_pooling", (2, 4, 96, 96, 96), **seed, pooling="sample"),
        W("3d_b2_c4_96^3_sigmoid_dense", (2, 4, 96, 96, 96), activation="sigmoid", dense_target=True),
        W("3d_b2_c4_96^3_sigmoid_dense_bool", (2, 4, 96, 96, 96), activation="sigmoid", dense_target=True,
          target_dtype="bool"),
        W("3d_b2_c4_96^3", (2, 4, 96, 96, 96)),
        W("2d_b16_c2_512^2", (16, 2, 512, 512)),
        W("2d_b16_c21_512^2", (16, 21, 512, 512)),
        W("3d_b2_c4_64^3", (2, 4, 64, 64, 64)),
        W("3d_b2_c4_128^3", (2, 4, 128, 128, 128)),
        W("3d_b2_c14_128^3", (2, 14, 128, 128, 128)),
        W("3d_b2_c4_96^3_dice_ce", (2, 4, 96, 96, 96), loss="dice_ce"),
        W("3d_b2_c14_128^3_dice_ce", (2, 14, 128, 128, 128), loss="dice_ce"),
        # nnU-Net's training loss: Dice + CE over the full-resolution output and 4 downsampled ones.
        W("3d_b2_c4_128^3_dice_ce_ds", (2, 4, 128, 128, 128), loss="dice_ce", ds_levels=4),
        W("3d_b2_c4_128^3_sigmoid_dense", (2, 4, 128, 128, 128), activation="sigmoid", dense_target=True),
        W("3d_b2_c14_128^3_bf16", (2, 14, 128, 128, 128), dtype="bfloat16"),
        W("2d_b16_c21_512^2_bf16", (16, 21, 512, 512), dtype="bfloat16"),
    ]
    if device == "cuda":
        ws += [
            W("3d_b2_c4_128^3_bf16", (2, 4, 128, 128, 128), dtype="bfloat16"),
            W("3d_b2_c4_128^3_dice_ce", (2, 4, 128, 128, 128), loss="dice_ce"),
            W("3d_b2_c4_128^3_bf16_dice_ce", (2, 4, 128, 128, 128), dtype="bfloat16", loss="dice_ce"),
            W("3d_b2_c14_128^3_bf16_dice_ce", (2, 14, 128, 128, 128), dtype="bfloat16", loss="dice_ce"),
        ]
        # The reference workloads first: a run cut short keeps them.
        first = STRATEGY_WORKLOADS + ["3d_b2_c4_96^3"]
        ws = sorted(ws, key=lambda w: first.index(w.name) if w.name in first else len(first))
    if device == "cpu":  # keep the CPU run to a few minutes
        ws = [w for w in ws if "c21" not in w.name and "c14" not in w.name] + [
            W("3d_b2_c14_64^3", (2, 14, 64, 64, 64)),
            W("3d_b2_c4_96^3_bf16", (2, 4, 96, 96, 96), dtype="bfloat16"),
        ]
    return ws


def copy_bandwidth_gbs():
    """Measured device-to-device copy bandwidth (read + write) in GB/s."""
    n = 256 * 1024 * 1024  # 1 GiB of float32
    a = torch.empty(n, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    reps = 10
    for _ in range(reps):
        b.copy_(a)
    end.record()
    end.synchronize()
    ms = start.elapsed_time(end) / reps
    del a, b
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def cpu_memory_child(provider, workload_json):
    """Entry of the fresh subprocess that measures one provider's CPU peak memory."""
    w = Workload(**json.loads(workload_json))
    fn = PROVIDERS[provider](w)
    x, t = w.make_inputs()
    fn(x, t).backward()  # warm-up (compilation, lazy init)
    print(json.dumps({"peak_extra_bytes": utils.cpu_peak_extra_bytes_here(fn, x, t)}))


def cpu_peak_memory(provider, w):
    cmd = [sys.executable, "-m", "benchmarks.bench", "--memory-child", provider, json.dumps(dataclasses.asdict(w))]
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    for key in STEADY_ALLOCATOR:  # peak memory as a user's process has it
        env.pop(key, None)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


def run_workload(w, args, copy_gbs):
    providers, skipped, compile_s = {}, {}, {}
    # Compiled providers start afresh per workload: past dynamo's recompile limit
    # (8 graphs per function) a compiled provider would silently run eagerly.
    torch._dynamo.reset()
    for name, make in PROVIDERS.items():
        if args.providers and name not in args.providers:
            continue
        try:
            fn = make(w)
            x, t = w.make_inputs()
            t0 = time.perf_counter()
            fn(x, t).backward()  # compiles where there is something to compile
            if w.device == "cuda":
                torch.cuda.synchronize()
            compile_s[name] = time.perf_counter() - t0
            providers[name] = fn
        except NotApplicable:
            continue
        except Skip as e:
            skipped[name] = str(e)
        except Exception as e:  # a provider that fails is reported, not dropped
            skipped[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    n_buffers = 1
    if w.device == "cuda":
        one = w.minimal_bytes()
        n_buffers = max(2, min(8, int(200e6 // max(one, 1)) + 1))  # rotate past the 50 MB L2
    inputs = [w.make_inputs(seed=i) for i in range(n_buffers)]
    warmup, reps = (2, 7) if args.quick else (3, 15)
    if w.device == "cuda":
        warmup, reps = 2, 12  # bursts of utils.CUDA_BURST iterations each
    times = utils.interleaved_times(providers, inputs, w.device, warmup, reps)
    rows = {}
    for name, fn in providers.items():
        row = dict(times[name])
        row["first_call_s"] = compile_s[name]
        if w.device == "cuda":
            row["peak_extra_bytes"] = utils.cuda_peak_extra_bytes(fn, *inputs[0])
            total_s = row["total"]["median_ms"] * 1e-3
            row["minimal_bytes_gbs"] = w.minimal_bytes() / total_s / 1e9
            row["fraction_of_copy_bw"] = row["minimal_bytes_gbs"] / copy_gbs
            row["forward_bytes_gbs"] = w.forward_bytes() / (row["fwd"]["median_ms"] * 1e-3) / 1e9
        elif not args.no_memory and name not in FLOORS:
            row["peak_extra_bytes"] = cpu_peak_memory(name, w)
        rows[name] = row
    # Each provider's time as a multiple of the floor: the larger of reading
    # (and, backward, writing) and one exp per logit where the path has one.
    for name, row in rows.items():
        for part in ("fwd", "bwd", "total"):
            floor = max((rows[f][part]["median_ms"] for f in FLOORS if f in rows), default=None)
            if floor:
                row[f"{part}_x_floor"] = row[part]["median_ms"] / floor
    x_bytes = sum(x.numel() * x.element_size() for x in utils.as_list(inputs[0][0]))
    return {"workload": dataclasses.asdict(w), "input_bytes": x_bytes, "providers": rows, "skipped": skipped}


def markdown(results):
    lines = [
        "| workload | provider | fwd ms | bwd ms | fwd+bwd ms | fastdice speed-up | fwd / bwd × floor | peak extra MB | GB/s (% copy) | fwd GB/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["workloads"]:
        rows = r["providers"]
        base = "fastdice" if "fastdice" in rows else "fastdice_nnunet"  # deep supervision: nnU-Net's providers only
        ours = rows.get(base, {}).get("total", {}).get("median_ms")
        for name, row in rows.items():
            total = row["total"]["median_ms"]
            speed = f"{total / ours:.2f}x" if ours and name != base else ""
            mem = row.get("peak_extra_bytes")
            mem = f"{mem / 2**20:.1f}" if mem is not None else "n/a"
            bw = f"{row['minimal_bytes_gbs']:.0f} ({100 * row['fraction_of_copy_bw']:.0f}%)" if "minimal_bytes_gbs" in row else ""
            fwd_bw = f"{row['forward_bytes_gbs']:.0f}" if "forward_bytes_gbs" in row else ""
            floor = f"{row['fwd_x_floor']:.2f} / {row['bwd_x_floor']:.2f}" if "fwd_x_floor" in row else ""
            speed = "" if name in FLOORS else speed
            lines.append(
                f"| {r['workload']['name']} | {name} | {row['fwd']['median_ms']:.2f} | {row['bwd']['median_ms']:.2f} | "
                f"{total:.2f} | {speed} | {floor} | {mem} | {bw} | {fwd_bw} |"
            )
        for name, why in r["skipped"].items():
            lines.append(f"| {r['workload']['name']} | {name} | skipped: {why} | | | | | | | |")
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [r["workload"]["name"] for r in results["workloads"]]
    peers = [p for p in ("reference", "reference_compiled", "monai", "smp", "exacta")]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    width = 0.8 / len(peers)
    for i, peer in enumerate(peers):
        vals = []
        for r in results["workloads"]:
            rows = r["providers"]
            if peer in rows and "fastdice" in rows:
                vals.append(rows[peer]["total"]["median_ms"] / rows["fastdice"]["total"]["median_ms"])
            else:
                vals.append(0)
        ax.bar([j + i * width for j in range(len(names))], vals, width, label=peer)
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("fastdice speed-up (fwd+bwd)")
    ax.set_title(f"fastdice vs peers on {results['environment']['device_name']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def save_all(results, env, out_dir):
    """Writes the JSON and the Markdown table; returns (json path, table)."""
    path = utils.save_results(results, out_dir, env)
    table = markdown(results)
    with open(path.replace(".json", ".md"), "w") as f:
        allocator = f", allocator: {env['cpu_allocator']}" if env.get("cpu_allocator") else ""
        f.write(f"fastdice benchmark: {env['device_name']}, torch {env['torch']}, commit {env['commit']}, {env['date']}"
                f"{allocator}\n\n")
        f.write(table + "\n")
    return path, table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small workload set (under two minutes on 2 CPU cores)")
    p.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    p.add_argument("--providers", nargs="*", help="subset of providers")
    p.add_argument("--workloads", nargs="*", help="subset of workloads, by name ('strategies': the ones that decide "
                   "between the CUDA forward strategies)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU memory subprocesses")
    p.add_argument("--allocator", choices=("steady", "default"), default="steady",
                   help="CPU: glibc without mmap and trimming (steady, see STEADY_ALLOCATOR) or its defaults")
    p.add_argument("--memory-child", nargs=2, metavar=("PROVIDER", "WORKLOAD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        return cpu_memory_child(*args.memory_child)
    if args.device == "cpu" and args.allocator == "steady" and any(
            os.environ.get(k) != v for k, v in STEADY_ALLOCATOR.items()):
        sys.stdout.flush()
        argv = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.bench", *argv], dict(os.environ, **STEADY_ALLOCATOR))

    env = utils.environment(args.device)
    copy_gbs = copy_bandwidth_gbs() if args.device == "cuda" else None
    env["copy_bandwidth_gbs"] = copy_gbs
    if args.device == "cpu":
        env["cpu_allocator"] = ("glibc, " + " ".join(f"{k}={v}" for k, v in STEADY_ALLOCATOR.items())
                                if args.allocator == "steady" else "glibc defaults")
    print(f"# fastdice benchmark on {env['device_name']}, torch {env['torch']}, commit {env['commit']}", flush=True)
    results = {"workloads": [], "quick": args.quick, "environment": env}
    names = args.workloads or []
    if "strategies" in names:
        names = [n for n in names if n != "strategies"] + STRATEGY_WORKLOADS
    for w in workloads(args.device, args.quick):
        if names and w.name not in names:
            continue
        print(f"- {w.name} ...", flush=True)
        results["workloads"].append(run_workload(w, args, copy_gbs))
        if args.device == "cuda":
            torch.cuda.empty_cache()
        # Saved after every workload: a run stopped at a time limit keeps what it measured.
        path, table = save_all(results, env, args.out)
    png = plot(results, path.replace(".json", ".png"))
    print(f"\nresults: {path}" + (f", plot: {png}" if png else ""))
    if copy_gbs:
        print(f"measured device copy bandwidth: {copy_gbs:.0f} GB/s")
    print(table)


if __name__ == "__main__":
    main()
