"""Shared benchmark machinery: timing, memory, device description, results."""

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import time

import torch


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def git_commit() -> str:
    """The checkout's commit; FASTDICE_COMMIT names it where the tree has no .git
    (a copy of the working tree on a lent GPU machine)."""
    if os.environ.get("FASTDICE_COMMIT"):
        return os.environ["FASTDICE_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: str) -> dict:
    import fastdice

    return {
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "fastdice_build": fastdice.build_config(),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }


def as_list(x) -> list:
    """The input tensors of a workload: one, or one per output under deep supervision."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def clear_grad(x) -> None:
    for tensor in as_list(x):
        tensor.grad = None


class Timer:
    """Times fwd and bwd of one iteration: events on CUDA, perf_counter on CPU."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def run(self, fn, x, t):
        """Returns (fwd_ms, bwd_ms) of loss = fn(x, t); loss.backward()."""
        clear_grad(x)
        if self.cuda:
            e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            e0.record()
            loss = fn(x, t)
            e1.record()
            loss.backward()
            e2.record()
            e2.synchronize()
            return e0.elapsed_time(e1), e1.elapsed_time(e2)
        t0 = time.perf_counter()
        loss = fn(x, t)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3


#: CUDA iterations queued back to back per timed burst.
CUDA_BURST = 8


def queued_cuda_times(fn, pairs):
    """(fwd_ms, bwd_ms) of each iteration of a burst queued without host syncs.

    Events are recorded around each iteration's forward and backward; the only
    sync is at the end. While the host enqueues faster than the GPU runs, the
    events measure GPU time, as in training, where the host runs ahead. The
    first iteration is dropped: the idle GPU waited for its first launch. A
    provider whose host work outlasts its GPU work shows its host time.
    """
    events = []
    for x, t in pairs:
        clear_grad(x)
        e = tuple(torch.cuda.Event(enable_timing=True) for _ in range(3))
        e[0].record()
        loss = fn(x, t)
        e[1].record()
        loss.backward()
        e[2].record()
        events.append(e)
    events[-1][2].synchronize()
    return [(e0.elapsed_time(e1), e1.elapsed_time(e2)) for e0, e1, e2 in events[1:]]


def quartiles(values: list) -> dict:
    """Median and quartiles (ms) of timing samples."""
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return {"median_ms": statistics.median(values), "q1_ms": q[0], "q3_ms": q[2], "n": len(values)}


def _interleave(providers: dict, warmup: int, reps: int, measure) -> dict:
    """Runs providers A B C A B C ... so that machine drift hits all alike:
    ``measure(fn, it)`` returns the samples of one turn; the warm-up turns'
    are dropped. Returns name -> every sample kept."""
    samples = {name: [] for name in providers}
    for it in range(warmup + reps):
        for name, fn in providers.items():
            measured = measure(fn, it)
            if it >= warmup:
                samples[name].extend(measured)
    return samples


def interleaved_times(providers: dict, inputs: list, device: str, warmup: int, reps: int) -> dict:
    """Forward and backward times of each provider, interleaved (see _interleave).

    inputs is a list of (x, t) pairs used in rotation (on CUDA, enough of them
    that no provider finds its inputs in L2 from the previous iteration). On
    CUDA each turn is a burst of CUDA_BURST queued iterations (queued_cuda_times).
    """
    timer = Timer(device)

    def measure(fn, it):
        if device == "cuda":
            return queued_cuda_times(fn, [inputs[(it * CUDA_BURST + j) % len(inputs)] for j in range(CUDA_BURST)])
        return [timer.run(fn, *inputs[it % len(inputs)])]

    out = {}
    for name, s in _interleave(providers, warmup, reps, measure).items():
        fwd, bwd = [f for f, _ in s], [b for _, b in s]
        out[name] = {"fwd": quartiles(fwd), "bwd": quartiles(bwd), "total": quartiles([f + b for f, b in s])}
    return out


def interleaved_call_times(providers: dict, inputs: list, device: str, warmup: int, reps: int) -> dict:
    """ms per call fn(x, t) (no backward; the device synchronized before and
    after, so a call's host syncs count), interleaved (see _interleave)."""

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def measure(fn, it):
        x, t = inputs[it % len(inputs)]
        sync()
        t0 = time.perf_counter()
        fn(x, t)
        sync()
        return [(time.perf_counter() - t0) * 1e3]

    return {name: quartiles(s) for name, s in _interleave(providers, warmup, reps, measure).items()}


def cuda_peak_extra_bytes(fn, x, t, backward: bool = True) -> int:
    """Peak CUDA memory of one fwd (+bwd) above what was allocated before it."""
    clear_grad(x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn(x, t)
    if backward:
        out.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    clear_grad(x)
    return int(peak)


def _vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _give_back_free_heap() -> None:
    """glibc's malloc_trim(0): the warm-up's freed memory, still resident in the heap,
    goes back to the OS, so that the measured call's allocations show in the RSS
    (a reused block would count as 0 bytes)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_extra_bytes_here(fn, x, t) -> int:
    """Peak RSS growth of one fwd+bwd in this (fresh) process: resets the
    high-water mark through /proc/self/clear_refs, then reads VmHWM."""
    clear_grad(x)
    _give_back_free_heap()
    before = _vm_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    loss = fn(x, t)
    loss.backward()
    peak = _vm_kb("VmHWM")
    del loss
    return max(0, (peak - before) * 1024)


def cpu_peak_extra_bytes_of(fn) -> int:
    """Peak RSS growth of one call fn() in this (fresh) process (as cpu_peak_extra_bytes_here)."""
    _give_back_free_heap()
    before = _vm_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    out = fn()
    peak = _vm_kb("VmHWM")
    del out
    return max(0, (peak - before) * 1024)


def save_results(results: dict, out_dir: str, env: dict, prefix: str = "bench") -> str:
    os.makedirs(out_dir, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in env["device_name"]).strip("-").lower()
    slug = "-".join(p for p in slug.split("-") if p)[:60]
    path = os.path.join(out_dir, f"{prefix}_{env['device']}_{slug}_{env['date'][:10]}.json")
    with open(path, "w") as f:
        json.dump({"environment": env, **results}, f, indent=1)
    return path


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
