"""Development tools of fastdice, not shipped with the package: the CUDA
emulation harness (emulation.py, kernel_launches.py), the emulated GPU's memory
profiler read back (profile_counts.py) and the GPU cost model (gpu_model.py).

Imported by tests/ and scripts/ from the repository root (``python -m pytest``
and ``python -m benchmarks...`` put it on sys.path).
"""
