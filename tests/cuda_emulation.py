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


def sources(csrc: pathlib.Path) -> list[str]:
    emu = csrc / "emulation"
    files = [emu / "emulator.cpp", emu / "fiber.cpp", *sorted((emu / "kernels").glob("*.cpp"))]
    files += [csrc / "dice_problem.cpp", csrc / "dice_epilogue_host.cpp"]
    return [str(f) for f in files]


def build(csrc: pathlib.Path | None = None, build_dir: pathlib.Path | None = None, verbose: bool = False):
    """Compiles (incrementally, with ninja) and loads the emulation library; returns torch.ops.fastdice_emu.

    FASTDICE_EMULATION_CSRC / FASTDICE_EMULATION_BUILD point it at another
    source tree and build folder (scripts/emulation_mutants.py).
    """
    from torch.utils import cpp_extension

    csrc = pathlib.Path(csrc or os.environ.get("FASTDICE_EMULATION_CSRC") or ROOT / "csrc")
    build_dir = pathlib.Path(build_dir or os.environ.get("FASTDICE_EMULATION_BUILD") or ROOT / "build" / "emulation")
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 2))
    cpp_extension.load(
        name="fastdice_emulation",
        sources=sources(csrc),
        extra_include_paths=[str(csrc)],
        # -O1: the emulated kernels' speed hardly matters next to the fiber
        # switches, and it halves the compile time of the template-heavy files.
        # The alignment sanitizer traps (SIGILL, reported by the emulator) on a
        # misaligned vector load or store, which the GPU faults on and x86 allows.
        extra_cflags=["-O1", "-g0", "-DFASTDICE_EMULATION", "-fvisibility=hidden", "-Wno-unknown-pragmas",
                      "-fsanitize=alignment", "-fsanitize-undefined-trap-on-error"],
        extra_ldflags=["-Wl,-Bsymbolic"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose,
    )
    return torch.ops.fastdice_emu


def configure(emu, schedule: int, max_grid_y: int = 65535, max_shared_optin: int = H100_SHARED_OPTIN) -> None:
    emu.configure(schedule, max_grid_y, max_shared_optin, SCHEDULES[schedule])


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, for bitwise comparison (NaN payloads included)."""
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.numel() else t.new_empty(0, dtype=torch.uint8)
