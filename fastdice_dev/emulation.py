"""The CUDA emulation tier: fastdice's .cu files compiled for the host.

csrc/emulation/ maps the seam of csrc/cuda/device_runtime.cuh (launches,
shared memory, registration) and the CUDA built-ins onto a fiber scheduler
that runs every CUDA thread with its own stack. The kernels' host wrappers
become ops of the ``fastdice_emu`` library over CPU tensors:
``torch.ops.fastdice_emu.dice_stats(...)`` runs exactly the launch code and
kernels that ``torch.ops.fastdice.dice_stats`` runs on a GPU.
"""

from __future__ import annotations

import os
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Two schedules, each with its own poison byte, so that an output element no
# thread wrote differs between them bit for bit.
SCHEDULES = {0: 0xFF, 1: 0x7B}
H100_SHARED_OPTIN = 232448


def sources(csrc: pathlib.Path, profile: bool = False) -> list[str]:
    emu = csrc / "emulation"
    files = [emu / f for f in ("guarded_memory.cpp", "scheduler.cpp", "runtime_shims.cpp", "control_ops.cpp", "fiber.cpp",
                               "profiler.cpp")]
    files += sorted((emu / "kernels").glob("*.cpp"))
    files += [csrc / "dice_problem.cpp", csrc / "dice_epilogue_host.cpp"]
    if profile:
        files.append(emu / "profile_test_kernels.cpp")
    return [str(f) for f in files]


def build(csrc: pathlib.Path | None = None, build_dir: pathlib.Path | None = None, verbose: bool = False,
          profile: bool = False):
    """Compiles (incrementally, with ninja) and loads the emulation library; returns torch.ops.fastdice_emu.

    FASTDICE_EMULATION_CSRC / FASTDICE_EMULATION_BUILD point it at another
    source tree and build folder (scripts/emulation_mutants.py).

    profile=True builds the profiling library instead (csrc/emulation/profiler.h):
    the same kernels compiled with -fsanitize=thread, whose entry points the
    profiler defines to record every memory access, plus the hand-made kernels
    of profile_test_kernels.cpp; its ops are torch.ops.fastdice_emu_profile, so
    that both libraries can be loaded in one process.
    """
    from torch.utils import cpp_extension

    csrc = pathlib.Path(csrc or os.environ.get("FASTDICE_EMULATION_CSRC") or ROOT / "csrc")
    default_dir = ROOT / "build" / ("emulation-profile" if profile else "emulation")
    build_dir = pathlib.Path(build_dir or (None if profile else os.environ.get("FASTDICE_EMULATION_BUILD"))
                             or default_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 2))
    # -O1: the emulated kernels' speed hardly matters next to the fiber
    # switches, and it halves the compile time of the template-heavy files.
    flags = ["-O1", "-DFASTDICE_EMULATION", "-fvisibility=hidden", "-Wno-unknown-pragmas"]
    if profile:
        # Every load and store calls __tsan_read<N> / __tsan_write<N> (defined by
        # profiler.cpp; no sanitizer runtime is linked); -g1: line tables, to
        # name the call sites.
        flags += ["-g1", "-DFASTDICE_EMULATION_PROFILE", "-DFD_EMU_NAMESPACE=fastdice_emu_profile",
                  "-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0", "-Wno-tsan"]
    else:
        # The alignment sanitizer traps (SIGILL, reported by the emulator) on a
        # misaligned vector load or store, which the GPU faults on and x86 allows.
        flags += ["-g0", "-fsanitize=alignment", "-fsanitize-undefined-trap-on-error"]
    cpp_extension.load(
        name="fastdice_emulation_profile" if profile else "fastdice_emulation",
        sources=sources(csrc, profile),
        extra_include_paths=[str(csrc)],
        extra_cflags=flags,
        extra_ldflags=["-Wl,-Bsymbolic"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose,
    )
    return torch.ops.fastdice_emu_profile if profile else torch.ops.fastdice_emu


def library_path(profile: bool = False) -> pathlib.Path:
    """The built emulation library (after build())."""
    return ROOT / "build" / ("emulation-profile" if profile else "emulation") / (
        "fastdice_emulation_profile.so" if profile else "fastdice_emulation.so")


def configure(emu, schedule: int, max_grid_y: int = 65535, max_shared_optin: int = H100_SHARED_OPTIN) -> None:
    emu.configure(schedule, max_grid_y, max_shared_optin, SCHEDULES[schedule])


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, for bitwise comparison (NaN payloads included)."""
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.numel() else t.new_empty(0, dtype=torch.uint8)
