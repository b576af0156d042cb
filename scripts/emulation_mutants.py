"""Plants each bug of fastdice_dev/emulation_mutants.py's MUTANTS in a copy of csrc/,
rebuilds the emulation library from the copy and runs the emulation tests
against it: each mutant must make them fail.

    python scripts/emulation_mutants.py [--only N ...] [-k PYTEST_EXPR]

The copy and its build live under build/mutants/ (the build is incremental:
only the files that include the mutated one recompile). Prints one line per
mutant and exits non-zero if any survives.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastdice_dev.emulation_mutants import MUTANTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, nargs="*", help="indices into MUTANTS")
    parser.add_argument("-k", default="", help="pytest -k expression for the tests run against each mutant")
    args = parser.parse_args()
    work = ROOT / "build" / "mutants"
    csrc = work / "csrc"
    if csrc.exists():
        shutil.rmtree(csrc)
    shutil.copytree(ROOT / "csrc", csrc)
    survivors = 0
    for i, (name, old, new, what) in enumerate(MUTANTS):
        if args.only and i not in args.only:
            continue
        path = csrc / "cuda" / name
        original = (ROOT / "csrc" / "cuda" / name).read_text()
        if original.count(old) != 1:
            print(f"[{i}] {what}: the planted text is not found exactly once in {name}", flush=True)
            survivors += 1
            continue
        path.write_text(original.replace(old, new))
        t0 = time.time()
        env = dict(os.environ, FASTDICE_EMULATION_CSRC=str(csrc), FASTDICE_EMULATION_BUILD=str(work / "build"))
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_emulation.py")]
        if args.k:
            cmd += ["-k", args.k]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        path.write_text(original)
        out = proc.stdout + proc.stderr
        reason = next((ln[1:].strip() for ln in out.splitlines()
                       if ln.startswith("E ") and ("Error" in ln or "assert" in ln)), "")[:200]
        print(f"[{i}] {'caught  ' if proc.returncode else 'SURVIVED'} {time.time() - t0:5.0f}s  {what}\n      {reason}",
              flush=True)
        survivors += proc.returncode == 0
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
