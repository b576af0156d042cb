"""The emulated GPU's memory profile read back (csrc/emulation/profiler.h).

``profiled(emu, fn)`` runs ``fn`` with profiling on and returns one
:class:`LaunchCounts` per kernel launch: Nsight Compute's quantities for that
launch (requests, sectors, sectors per request against the ideal, sector
efficiency, shared-memory wavefronts and bank conflicts, unique bytes read and
written), each call site named by file and line, each launch by the function
that launched it (the launch log) and by its kernel (the library's symbols).
Counts of a sampled launch (``max_blocks``) are scaled to the whole grid.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from functools import lru_cache

from . import kernel_launches

SECTOR = 32


@dataclasses.dataclass
class SiteCounts:
    site: str  # "file:line" of the access (the innermost inlined location)
    function: str  # the function that location is in (load_label, load_input_items, ...)
    kind: str  # global_load, global_store, shared_load, shared_store
    requests: float
    bytes: float
    sectors: float  # global: 32-byte sectors summed over requests
    ideal: float  # global: ideal sectors (bytes / 32 per request); shared: ideal wavefronts
    wavefronts: float  # shared
    max_access: int  # the widest access of one lane, bytes

    @property
    def sectors_per_request(self) -> float:
        return self.sectors / self.requests if self.requests else 0.0

    @property
    def ideal_sectors_per_request(self) -> float:
        return self.ideal / self.requests if self.requests else 0.0

    @property
    def efficiency(self) -> float:
        """Bytes used / bytes in the sectors fetched (global only)."""
        return self.bytes / (self.sectors * SECTOR) if self.sectors else 1.0

    @property
    def bank_conflicts(self) -> float:
        """Extra wavefronts over the ideal (shared only): an n-way conflict adds n - 1."""
        return self.wavefronts - self.ideal if self.kind.startswith("shared") else 0.0


@dataclasses.dataclass
class LaunchCounts:
    launcher: str  # the host function that launched the kernel (launch log)
    params: dict  # its template arguments
    kernel: str  # the kernel's name, normalised as scripts/kernel_resources.py names ptxas' entries
    grid: tuple
    block: tuple
    dynamic_shared: int
    static_shared: int
    blocks: int
    blocks_run: int
    unique_read_bytes: float
    unique_write_bytes: float
    unique_read_sectors: float
    unique_write_sectors: float
    load_burst_bytes: float  # mean bytes of global loads a thread issues together (profiler.cpp: Burst)
    loading_threads: float  # threads that issue global loads, per block run (those whose loads are in flight)
    sites: list

    @property
    def threads_per_block(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]

    def total(self, kind: str, field: str) -> float:
        return sum(getattr(s, field) for s in self.sites if s.kind == kind)

    @property
    def dram_bytes(self) -> float:
        """Unique sectors read and written, 32 bytes each: the DRAM traffic when every re-read hits L2."""
        return (self.unique_read_sectors + self.unique_write_sectors) * SECTOR

    @property
    def dram_read_bytes(self) -> float:
        return self.unique_read_sectors * SECTOR

    @property
    def sector_traffic_bytes(self) -> float:
        """Every request's sectors, 32 bytes each: what L1 / L2 serve (re-reads included)."""
        return (self.total("global_load", "sectors") + self.total("global_store", "sectors")) * SECTOR

    @property
    def bank_conflicts(self) -> float:
        return sum(s.bank_conflicts for s in self.sites)

    def main_loads(self, share: float = 0.05) -> list:
        """Global load sites that move at least `share` of the launch's global load bytes."""
        loads = [s for s in self.sites if s.kind == "global_load"]
        total = sum(s.bytes for s in loads)
        return [s for s in loads if total and s.bytes >= share * total]

    @property
    def load_efficiency(self) -> float:
        sectors = self.total("global_load", "sectors")
        return self.total("global_load", "bytes") / (sectors * SECTOR) if sectors else 1.0

    @property
    def store_efficiency(self) -> float:
        sectors = self.total("global_store", "sectors")
        return self.total("global_store", "bytes") / (sectors * SECTOR) if sectors else 1.0


@lru_cache(maxsize=4)
def _symbols(library: str) -> dict:
    """Function offset -> demangled name, from the library's symbol table (hidden symbols included)."""
    out = subprocess.run(["nm", "-C", "--defined-only", library], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            table[int(parts[0], 16)] = parts[2]
    return table


def _function_name(demangled: str) -> str:
    """fastdice::cuda::load_input_items<4, float, float>(...) -> load_input_items."""
    head = normalize_kernel(demangled)
    head = head.split("<", 1)[0]
    return head.rsplit("::", 1)[-1].split(" ")[-1]


def _site_names(library: str, offsets: list) -> dict:
    """Offset -> ("file:line", function) of the innermost inlined location (the line tables of the -g1 build)."""
    if not offsets:
        return {}
    # The return address follows the call: the access is the instruction before it.
    query = [hex(int(o, 16) - 1) for o in offsets]
    out = subprocess.run(["addr2line", "-f", "-C", "-e", library, *query], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    names = {}
    for i, off in enumerate(offsets):
        function, line = out[2 * i], out[2 * i + 1]
        path, _, lineno = line.partition(":")
        names[off] = (f"{path.rsplit('/', 1)[-1]}:{lineno.split(' ')[0]}", _function_name(function))
    return names


def normalize_kernel(demangled: str) -> str:
    """The kernel's name as scripts/kernel_resources.py writes ptxas' entries (no namespaces, no parameters)."""
    name = re.sub(r"\(anonymous namespace\)::|_GLOBAL__N__\w+::|fastdice::cuda::|fastdice::", "", demangled)
    name = name.replace("c10::BFloat16", "bf16").replace("c10::Half", "f16")
    name = re.sub(r"\(Activation\)0", "none", re.sub(r"\(Activation\)1", "sigmoid",
                                                     re.sub(r"\(Activation\)2", "softmax", name)))
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0 and i > 0 and name[i - 1] != " ":
            return name[:i].removeprefix("void ")
    return name.removeprefix("void ")


def parse(records: list, log: list) -> list:
    """LaunchCounts of the profiler's JSON records and the launch log entries taken with them."""
    if len(records) != len(log):
        raise RuntimeError(f"{len(records)} profiled launches but {len(log)} launch log entries")
    raw = [json.loads(r) for r in records]
    launches = []
    for rec, entry in zip(raw, log):
        if rec["error"]:
            raise RuntimeError(f"profiled launch failed: {rec['error']}")
        launch = kernel_launches.parse(entry)
        lib = rec["library"]
        blocks = rec["grid"][0] * rec["grid"][1] * rec["grid"][2]
        scale = blocks / rec["blocks_run"] if rec["blocks_run"] else 1.0
        names = _site_names(lib, sorted({s["site"] for s in rec["sites"]}))
        kernel = _symbols(lib).get(int(rec["kernel_offset"], 16), rec["kernel_offset"])
        sites = [SiteCounts(*names.get(s["site"], (s["site"], "?")), s["kind"], s["requests"] * scale, s["bytes"] * scale,
                            s["sectors"] * scale, s["ideal"] * scale, s["wavefronts"] * scale, s["max_access"])
                 for s in rec["sites"]]
        launches.append(LaunchCounts(
            launch.launcher, launch.params, normalize_kernel(kernel), tuple(rec["grid"]), tuple(rec["block"]),
            rec["dynamic_shared"], rec["static_shared"], blocks, rec["blocks_run"],
            rec["unique_read_bytes"] * scale, rec["unique_write_bytes"] * scale,
            rec["unique_read_sectors"] * scale, rec["unique_write_sectors"] * scale,
            rec["load_burst_mean_bytes"], rec["loading_threads"] / max(rec["blocks_run"], 1), sites))
    return launches


def profiled(emu, fn, max_blocks: int = 0):
    """(fn(), [LaunchCounts of every launch fn made]) with profiling on; max_blocks > 0 runs a sample of
    at most that many blocks per launch (the counts scaled to the whole grid)."""
    emu.take_profile()
    emu.take_launch_log(True)
    emu.set_profiling(True, max_blocks)
    try:
        result = fn()
    finally:
        emu.set_profiling(False, 0)
        log = emu.take_launch_log(False)
        records = emu.take_profile()
    return result, parse(records, log)
