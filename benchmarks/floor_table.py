"""The README's CPU tables from one committed benchmark run. The throughput
table: per path, fastdice's forward and backward in ns per element, each as
a multiple of its floor (the larger of the read and exp floors measured in
the same run), and the ratio to the fastest peer (the peer's time /
fastdice's, fwd+bwd). The peer table: fastdice's fwd+bwd time, each peer's
as a multiple of it, and fastdice's peak extra memory.

    python -m benchmarks.floor_table benchmarks/results/bench_cpu_<...>.json
"""

import json
import math
import sys

# Providers that are measurements, not peers.
NOT_PEERS = {"fastdice", "fastdice_thread", "fastdice_nnunet", "floor_read", "floor_exp"}


def table(path: str) -> str:
    with open(path) as f:
        run = json.load(f)
    env = run["environment"]
    lines = [
        f"From `{path.rsplit('/', 1)[-1]}` ({env['device_name']}, torch {env['torch']}, commit {env['commit']}):",
        "",
        "| workload | elements | fwd ns/elem | fwd × floor | bwd ns/elem | bwd × floor | fastest peer (its fwd+bwd ÷ fastdice's) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in run["workloads"]:
        rows = r["providers"]
        w = r["workload"]
        if "fastdice" not in rows or w.get("ds_levels"):
            continue
        n = math.prod(w["shape"])
        fd = rows["fastdice"]
        peers = {k: v for k, v in rows.items() if k not in NOT_PEERS and "total" in v}
        best = min(peers, key=lambda k: peers[k]["total"]["median_ms"]) if peers else None
        ratio = f"{best} {peers[best]['total']['median_ms'] / fd['total']['median_ms']:.2f}×" if best else "—"
        fwd_floor = f"{fd['fwd_x_floor']:.2f}" if "fwd_x_floor" in fd else "—"
        bwd_floor = f"{fd['bwd_x_floor']:.2f}" if "bwd_x_floor" in fd else "—"
        lines.append(
            f"| {w['name']} | {n / 1e6:.1f} M | {fd['fwd']['median_ms'] * 1e6 / n:.3f} | {fwd_floor} | "
            f"{fd['bwd']['median_ms'] * 1e6 / n:.3f} | {bwd_floor} | {ratio} |"
        )
    return "\n".join(lines)


PEERS = ("textbook", "reference", "reference_compiled", "monai", "smp", "exacta", "nnunet", "nnunet_compiled")


def peers_table(path: str) -> str:
    with open(path) as f:
        run = json.load(f)
    runs = [r for r in run["workloads"] if "fastdice" in r["providers"]]
    present = [p for p in PEERS if any(p in r["providers"] for r in runs)]
    lines = [
        "| workload | fastdice fwd+bwd ms | " + " | ".join(present) + " | fastdice peak extra MB |",
        "|---|---|" + "---|" * len(present) + "---|",
    ]
    for r in runs:
        rows = r["providers"]
        ours = rows["fastdice"]["total"]["median_ms"]
        cells = [f"{rows[p]['total']['median_ms'] / ours:.2f}×" if p in rows else "—" for p in present]
        mem = rows["fastdice"].get("peak_extra_bytes")
        mem = f"{mem / 2**20:.1f}" if mem is not None else "—"
        lines.append(f"| {r['workload']['name']} | {ours:.2f} | " + " | ".join(cells) + f" | {mem} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1]))
    print()
    print(peers_table(sys.argv[1]))
