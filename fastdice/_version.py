"""The version of fastdice: the one place it is written.

Read by the build (pyproject.toml's dynamic version, and setup.py into ``build_config()``)
and exported as ``fastdice.__version__``. Kept free of imports so the build can read it
without importing torch or the extension.
"""

__version__ = "0.1.0"
