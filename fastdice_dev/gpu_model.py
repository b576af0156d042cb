"""A cost model of fastdice's CUDA kernels on an H100 SXM and an H200, from
counts taken on the emulated GPU: a MODEL, not a measurement.

For each launch the profiling build of the emulation library
(csrc/emulation/profiler.h, profile_counts.py) gives the unique bytes read and
written (DRAM traffic when every re-read hits in L2), the global requests and
their sectors, shared-memory bank conflicts, the grid, the block and its shared
memory, and the bytes a thread's loads keep in flight together. The kernels'
registers come from ptxas (benchmarks/results/kernel_resources_sm90.json,
scripts/kernel_resources.py --json). From these, per launch:

    blocks per SM   sm_90 occupancy rules (64 warps, 32 blocks, 65,536 registers
                    in units of 256 per warp, 228 KB shared memory in units of
                    128 B plus 1 KB reserved per block)
    waves           blocks / (blocks per SM x 132 SMs)
    time            sum over waves of max(bytes of the wave / (0.9 x peak bandwidth),
                    bytes read in the wave / (bytes in flight / latency))
                    + launch cost

where bytes in flight = resident threads of the wave that load x the bytes each
keeps in flight (its mean burst: the global loads it issues one after another
without a barrier, collective or store between them and without returning to
a load site, up to 4 at one site, nvcc's default unroll),
latency = 700 ns loaded (Little's law: about 16 KiB per SM for 0.9 x 3.35 TB/s,
23 KiB for 0.9 x 4.8 TB/s) and the launch cost 2.5 us per kernel back to back.
The fraction of bandwidth a workload reaches is its minimal bytes (benchmarks/
bench.py's Workload.minimal_bytes: input and target read by the forward and by
the backward, the gradient written) over the predicted fwd+bwd time, against
0.9 x peak (what a device-to-device copy reaches: about 3.0 TB/s measured on
an H100, 4.3 TB/s on an H200).

Every constant here is a starting point for the first GPU run to correct
(scripts/gpu_check.sh calibrate).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "benchmarks" / "results" / "kernel_resources_sm90.json"


@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    bandwidth: float  # bytes / s, spec
    sms: int = 132
    achievable: float = 0.9  # of spec, for a streaming kernel (copy: 3.0 of 3.35 TB/s)
    latency_s: float = 700e-9  # loaded DRAM latency
    launch_s: float = 2.5e-6  # one kernel launch back to back in a stream

    @property
    def copy_bandwidth(self) -> float:
        return self.achievable * self.bandwidth

    @property
    def bytes_in_flight_needed_per_sm(self) -> float:
        """Little's law: what each SM must keep in flight to hold the achievable bandwidth."""
        return self.copy_bandwidth * self.latency_s / self.sms


H100 = Gpu("H100 SXM", 3.35e12)
H200 = Gpu("H200", 4.8e12)
GPUS = (H100, H200)

# sm_90 per SM (the CUDA occupancy calculator's table for compute capability 9.0)
MAX_WARPS = 64
MAX_BLOCKS = 32
REGISTERS = 65536
REGISTER_UNIT = 256  # registers per warp are allocated in units of 256
SHARED_BYTES = 228 * 1024
SHARED_UNIT = 128
SHARED_RESERVED = 1024  # per block
WARP = 32


def blocks_per_sm(threads: int, registers: int, shared_bytes: int) -> tuple[int, str]:
    """(resident blocks per SM, the limit that binds: warps, blocks, registers or shared)."""
    warps = math.ceil(threads / WARP)
    regs_per_warp = math.ceil(registers * WARP / REGISTER_UNIT) * REGISTER_UNIT
    limits = {
        "blocks": MAX_BLOCKS,
        "warps": MAX_WARPS // warps,
        "registers": (REGISTERS // regs_per_warp) // warps if regs_per_warp else MAX_BLOCKS,
        "shared": SHARED_BYTES // (math.ceil(shared_bytes / SHARED_UNIT) * SHARED_UNIT + SHARED_RESERVED),
    }
    limit = min(limits, key=limits.get)
    return limits[limit], limit


def load_resources(path: pathlib.Path = RESOURCES) -> dict:
    """Kernel name (profile_counts.normalize_kernel) -> ptxas' registers, spills and stack for sm_90."""
    if not path.exists():
        return {}
    return json.loads(path.read_text())["kernels"]


@dataclasses.dataclass
class LaunchModel:
    """One launch's model on one GPU."""
    registers: int
    spill_bytes: int
    blocks_per_sm: int
    limit: str
    occupancy: float  # resident warps / 64
    waves: float
    in_flight_per_sm: float  # bytes, at full residency
    time_s: float
    bandwidth_bound_s: float
    mlp_bound_s: float


def model_launch(counts, gpu: Gpu, resources: dict) -> LaunchModel:
    res = resources.get(counts.kernel)
    registers = res["registers"] if res else 32
    spill = (res.get("spill_stores", 0) + res.get("spill_loads", 0)) if res else 0
    threads = counts.threads_per_block
    bps, limit = blocks_per_sm(threads, registers, counts.dynamic_shared + counts.static_shared)
    bps = max(bps, 1)
    per_wave = bps * gpu.sms
    waves = counts.blocks / per_wave
    burst = counts.load_burst_bytes or 16.0
    loading = counts.loading_threads or threads  # a block's threads that load
    in_flight_sm = bps * loading * burst
    dram = counts.dram_bytes
    read = counts.dram_read_bytes
    per_block, read_per_block = dram / counts.blocks, read / counts.blocks
    t_bw = t_mlp = t = 0.0
    left = counts.blocks
    while left > 0:
        n = min(left, per_wave)
        # the wave's blocks spread over the SMs: its threads' loads in flight over the latency
        rate_mlp = n * loading * burst / gpu.latency_s
        a = n * per_block / gpu.copy_bandwidth
        b = n * read_per_block / rate_mlp
        t_bw += a
        t_mlp += b
        t += max(a, b)
        left -= n
    return LaunchModel(registers, spill, bps, limit, bps * math.ceil(threads / WARP) / MAX_WARPS, waves, in_flight_sm,
                       t + gpu.launch_s, t_bw, t_mlp)
