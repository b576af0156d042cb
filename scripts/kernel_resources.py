"""Registers, spills and stack of every CUDA kernel, from a build log.

The CUDA build passes nvcc --resource-usage, so ptxas prints, per kernel and
architecture, its registers and spill bytes. This reads a build log (a file or
standard input) and prints one line per kernel, spills first:

    python setup.py build_ext --inplace 2>&1 | tee build.log
    python scripts/kernel_resources.py build.log
"""

from __future__ import annotations

import re
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(\w+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")


def short_name(mangled: str) -> str:
    try:
        name = subprocess.run(["c++filt", mangled], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return mangled
    name = re.sub(r"\(anonymous namespace\)::|fastdice::cuda::|fastdice::", "", name)
    name = name.replace("c10::BFloat16", "bf16").replace("c10::Half", "f16")
    name = re.sub(r"\(Activation\)0", "none", re.sub(r"\(Activation\)1", "sigmoid", re.sub(r"\(Activation\)2", "softmax", name)))
    # Drop the parameter list: the first "(" outside the template arguments.
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0 and i > 0 and name[i - 1] != " ":
            return name[:i].removeprefix("void ")
    return name.removeprefix("void ")


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


def main(argv: list[str]) -> int:
    text = open(argv[1]).read().splitlines() if len(argv) > 1 else sys.stdin.read().splitlines()
    rows = parse(text)
    if not rows:
        print("no ptxas resource usage in the log (a CPU-only build, or nvcc without --resource-usage)")
        return 0
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
