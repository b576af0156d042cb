"""The README's headline table, from the newest committed CPU benchmark run.

    python scripts/readme_benchmark_table.py          # rewrite the table in README.md
    python scripts/readme_benchmark_table.py --check  # exit 1 if README.md's table is not this

The table sits between the markers ``<!-- benchmark-table:start -->`` and
``<!-- benchmark-table:end -->``; tests/test_docs.py runs --check, so the README never
shows numbers of another run than the newest one committed.
"""

import argparse
import json
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))

from benchmark_tables import newest_run  # noqa: E402  (the docs' choice of run, shared)

README = os.path.join(ROOT, "README.md")
START, END = "<!-- benchmark-table:start -->", "<!-- benchmark-table:end -->"
# (workload, what it is) shown in the headline, in this order.
WORKLOADS = [
    ("3d_b2_c4_96^3", "softmax logits, label map, 2×4×96³"),
    ("3d_b2_c4_96^3_dice_ce", "Dice + cross-entropy, 2×4×96³"),
    ("3d_b2_c4_96^3_sigmoid_dense", "sigmoid logits, dense target, 2×4×96³"),
    ("2d_b16_c2_512^2", "softmax logits, label map, 16×2×512²"),
]
PEERS = [("monai", "MONAI"), ("nnunet", "nnU-Net"), ("reference_compiled", "torch.compile (eager formula)")]


def table() -> str:
    path = newest_run("bench_cpu_")
    with open(path) as f:
        run = json.load(f)
    env = run["environment"]
    rows = {r["workload"]["name"]: r["providers"] for r in run["workloads"]}
    lines = [
        "| CPU, forward + backward | fastdice | " + " | ".join(name for _, name in PEERS) + " |",
        "|---|---|" + "---|" * len(PEERS),
    ]
    for workload, label in WORKLOADS:
        providers = rows[workload]
        ours = providers["fastdice"]["total"]["median_ms"]
        cells = [f"{providers[key]['total']['median_ms']:.1f} ms ({providers[key]['total']['median_ms'] / ours:.1f}× slower)"
                 if key in providers else "—" for key, _ in PEERS]
        lines.append(f"| {label} | **{ours:.1f} ms** | " + " | ".join(cells) + " |")
    lines += ["", f"{env['device_name']}, torch {env['torch'].split('+')[0]}, median of 15 interleaved runs "
                  f"(`benchmarks/results/{os.path.basename(path)}`); no GPU numbers yet."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's table differs")
    args = parser.parse_args()
    with open(README) as f:
        text = f.read()
    block = re.compile(re.escape(START) + r"\n.*?" + re.escape(END), re.S)
    if not block.search(text):
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    new = block.sub(lambda _: f"{START}\n{table()}\n{END}", text)
    if args.check:
        if new != text:
            print("README.md's benchmark table is not the newest committed run's: "
                  "run python scripts/readme_benchmark_table.py", file=sys.stderr)
            return 1
        return 0
    with open(README, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
