"""Registers, spills and stack of every CUDA kernel, from a build log.

The CUDA build passes nvcc --resource-usage, so ptxas prints, per kernel and
architecture, its registers and spill bytes. This reads a build log (a file or
standard input) and prints one line per kernel, spills first:

    python setup.py build_ext --inplace 2>&1 | tee build.log
    python scripts/kernel_resources.py build.log [--json OUT.json] [--arch sm_90]

--json writes the table the GPU cost model reads (fastdice_dev/gpu_model.py:
benchmarks/results/kernel_resources_sm90.json), kernels named as the model
names the emulated launches (fastdice_dev/profile_counts.normalize_kernel).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastdice_dev.profile_counts import normalize_kernel  # noqa: E402

ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(\w+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")


def short_name(mangled: str) -> str:
    try:
        name = subprocess.run(["c++filt", mangled], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return mangled
    return normalize_kernel(name)


def parse(lines):
    rows, current = [], None
    for line in lines:
        m = ENTRY.search(line)
        if m:
            current = {"kernel": m.group(1), "arch": m.group(2)}
            continue
        if current is None:
            continue
        m = FRAME.search(line)
        if m:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = USED.search(line)
        if m:
            current["registers"] = int(m.group(1))
            rows.append(current)
            current = None
    return rows


def write_json(rows: list, path: str, arch: str, source: str) -> None:
    kernels = {}
    for r in rows:
        if r["arch"] != arch:
            continue
        kernels[short_name(r["kernel"])] = {k: r.get(k, 0) for k in ("registers", "spill_stores", "spill_loads", "stack")}
    pathlib.Path(path).write_text(json.dumps(dict(
        arch=arch, source=source, date=datetime.date.today().isoformat(),
        note="ptxas --resource-usage of a real nvcc build; read by fastdice_dev/gpu_model.py",
        kernels=dict(sorted(kernels.items()))), indent=1) + "\n")
    print(f"{len(kernels)} {arch} kernels written to {path}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", nargs="?", help="build log (default: standard input)")
    p.add_argument("--json", help="write the table for the GPU cost model here")
    p.add_argument("--arch", default="sm_90", help="the architecture --json keeps")
    p.add_argument("--source", default="", help="what produced the log (written into --json)")
    args = p.parse_args(argv[1:])
    text = open(args.log).read().splitlines() if args.log else sys.stdin.read().splitlines()
    rows = parse(text)
    if not rows:
        print("no ptxas resource usage in the log (a CPU-only build, or nvcc without --resource-usage)")
        return 0
    if args.json:
        write_json(rows, args.json, args.arch, args.source)
    rows.sort(key=lambda r: (-r.get("spill_stores", 0), -r["registers"]))
    print(f"{'regs':>4} {'spill st/ld B':>13} {'stack B':>7}  arch   kernel")
    for r in rows:
        spills = f"{r.get('spill_stores', 0)}/{r.get('spill_loads', 0)}"
        print(f"{r['registers']:>4} {spills:>13} {r.get('stack', 0):>7}  {r['arch']:<6} {short_name(r['kernel'])}")
    spilling = sum(1 for r in rows if r.get("spill_stores", 0))
    print(f"{len(rows)} kernels, {spilling} with spills, at most {max(r['registers'] for r in rows)} registers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
