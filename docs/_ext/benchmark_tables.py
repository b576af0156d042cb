"""Benchmark tables generated at build time from the committed results.

A page writes a placeholder line, ``<!-- benchmark: NAME -->``, and the build replaces it
with the table made from the newest committed run in ``benchmarks/results/`` (newest by the
date the run recorded, not by file name). The numbers are never copied by hand into a page.

NAME is one of ``source`` (which run: file, device, torch, commit, date), ``peers`` (fwd+bwd
time of every peer as a multiple of fastdice's), ``floors`` (fastdice against its floors),
``plot`` (the run's PNG), ``metrics`` (the validation-metric benchmark).
"""

import glob
import json
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
PLACEHOLDER = re.compile(r"^<!-- benchmark: ([a-z]+) -->$", re.M)


def newest_run(prefix: str) -> str:
    """The committed run (JSON) of this kind with the latest recorded date."""
    runs = []
    for path in glob.glob(os.path.join(RESULTS, prefix + "*.json")):
        with open(path) as f:
            env = json.load(f).get("environment", {})
        if env.get("date"):
            runs.append((env["date"], path))
    if not runs:
        raise FileNotFoundError(f"no committed benchmark run {prefix}*.json with a date in {RESULTS}")
    return max(runs)[1]


def _source(path: str) -> str:
    with open(path) as f:
        env = json.load(f)["environment"]
    return (f"Run `{os.path.basename(path)}`: {env['device_name']}, torch {env['torch']}, "
            f"commit {env['commit']}, {env['date'][:10]}.")


def _metrics_table(path: str) -> str:
    with open(path) as f:
        run = json.load(f)
    lines = ["| workload | provider | update + compute ms | fastdice speed-up | peak extra MB |",
             "|---|---|---|---|---|"]
    for workload in run["workloads"]:
        rows = workload["providers"]
        ours = rows["fastdice"]["median_ms"]
        for name, row in rows.items():
            speedup = "" if name == "fastdice" else f"{row['median_ms'] / ours:.1f}×"
            lines.append(f"| {workload['workload']['name']} | {name} | {row['median_ms']:.2f} | {speedup} | "
                         f"{row['peak_extra_bytes'] / 2**20:.1f} |")
    return _source(path) + "\n\n" + "\n".join(lines)


def generate(name: str, docname_dir: str) -> str:
    """The Markdown that replaces the placeholder NAME."""
    sys.path.insert(0, ROOT)
    from benchmarks import floor_table  # the tables' one implementation, shared with the CLI

    if name == "metrics":
        return _metrics_table(newest_run("bench_metrics_"))
    run = newest_run("bench_cpu_")
    if name == "source":
        return _source(run)
    if name == "peers":
        return floor_table.peers_table(run)
    if name == "floors":
        # floor_table.table() opens with its own source line; the page shows the source once.
        return "\n".join(floor_table.table(run).splitlines()[2:])
    if name == "plot":
        png = os.path.splitext(run)[0] + ".png"
        return f"![fastdice against its peers, CPU]({os.path.relpath(png, docname_dir)})"
    raise ValueError(f"unknown benchmark placeholder {name!r}")


def _replace(app, docname, source):
    docname_dir = os.path.dirname(os.path.join(app.srcdir, docname))
    source[0] = PLACEHOLDER.sub(lambda m: generate(m.group(1), docname_dir), source[0])


def setup(app):
    app.connect("source-read", _replace)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
