"""Build of the fastdice extension (fastdice._C).

Environment:
  FASTDICE_CUDA=0   CPU-only build (fast iteration)
  FASTDICE_CUDA=1   CUDA kernels required: a missing toolkit is an error
  (unset)           CUDA kernels when torch is a CUDA build and nvcc is found
  TORCH_CUDA_ARCH_LIST  target architectures; default "8.0;9.0" when no GPU is visible
  FASTDICE_SANITIZE=1   build with -fsanitize=address,undefined (CPU code)
"""

import glob
import os
import re
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# The torch releases CI builds and tests fastdice against (2.11, 2.13 and 2.14);
# pyproject.toml's lower bound and the README state the same range.
TORCH_OLDEST = (2, 11)
TORCH_NEWEST_TESTED = (2, 14)

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit(
        "fastdice: building needs torch installed first: pip install torch, "
        "then pip install --no-build-isolation fastdice"
    )


def _check_torch_version():
    """One clear line for a torch outside the tested range, instead of a page of compiler errors."""
    found = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    tested = "%d.%d to %d.%d" % (TORCH_OLDEST + TORCH_NEWEST_TESTED)
    if found < TORCH_OLDEST:
        sys.exit(f"fastdice: torch {torch.__version__} is too old to build fastdice; it needs torch {tested}")
    if found > TORCH_NEWEST_TESTED:
        print(f"fastdice: warning: torch {torch.__version__} is newer than the tested range ({tested})", flush=True)


_check_torch_version()


def _version():
    """fastdice/_version.py, read without importing the package (which needs the extension)."""
    with open(os.path.join(ROOT, "fastdice", "_version.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _find_cuda_home():
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    # /usr/local/bin/nvcc may be a wrapper script: torch would then guess
    # CUDA_HOME=/usr/local and fail to link -lcudart.
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def _want_cuda():
    flag = os.environ.get("FASTDICE_CUDA", "").strip()
    cuda_home = _find_cuda_home()
    available = torch.version.cuda is not None and cuda_home is not None and os.path.exists(
        os.path.join(cuda_home, "bin", "nvcc")
    )
    if flag == "0":
        return False, cuda_home
    if flag == "1" and not available:
        sys.exit(
            "fastdice: FASTDICE_CUDA=1 but no usable CUDA toolkit "
            f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cuda_home})"
        )
    return available, cuda_home


def _extension():
    use_cuda, cuda_home = _want_cuda()
    sanitize = os.environ.get("FASTDICE_SANITIZE", "0") == "1"
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # -fno-trapping-math lets GCC if-convert (and so vectorize) the CPU loops;
    # the kernels never rely on floating-point exception flags. -g0 undoes the
    # -g that Python's own CFLAGS add: debug info for torch's templates doubled
    # the compile time (dice_loss_from_stats_kernel.cpp: 44.6 -> 21.4 s CPU).
    cxx_flags = ["-O3", "-g0", "-fopenmp", "-fno-trapping-math", "-Wno-psabi"]
    link_flags = ["-fopenmp"]
    if sanitize:
        cxx_flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
        link_flags += ["-fsanitize=address,undefined"]
    extra = {"cxx": cxx_flags}
    if use_cuda:
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            if torch.cuda.is_available():
                major, minor = torch.cuda.get_device_capability()
                os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        # --resource-usage: registers, spills and shared memory of every kernel in the build log.
        extra["nvcc"] = ["-O3", "-lineinfo", "--resource-usage"]
        ext_cls = cpp_extension.CUDAExtension
    else:
        ext_cls = cpp_extension.CppExtension
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "-") if use_cuda else "-"
    print(
        f"fastdice build: cuda={'yes' if use_cuda else 'no'} arch={arch} "
        f"torch={torch.__version__} sanitize={'yes' if sanitize else 'no'}",
        flush=True,
    )
    _BUILD_CONFIG.update(VERSION=_version(), CUDA=use_cuda, CUDA_ARCH_LIST=arch, TORCH_VERSION=torch.__version__,
                         SANITIZE=sanitize)
    return ext_cls(
        "fastdice._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args=extra,
        extra_link_args=link_flags,
        py_limited_api=False,
    )


# What fastdice.build_config() reports, decided by _extension().
_BUILD_CONFIG = {}


class BuildExtension(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    """torch's BuildExtension that also writes fastdice/_build_config.py beside the
    extension it builds (in place, or in the build tree that becomes the wheel), and
    only then: making an sdist must not rewrite the checkout's record of its build."""

    def run(self):
        package_dir = os.path.join(ROOT if self.inplace else self.build_lib, "fastdice")
        os.makedirs(package_dir, exist_ok=True)
        with open(os.path.join(package_dir, "_build_config.py"), "w") as f:
            f.write("# Written by setup.py at build time.\n")
            f.write("".join(f"{name} = {value!r}\n" for name, value in _BUILD_CONFIG.items()))
        super().run()


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
)
