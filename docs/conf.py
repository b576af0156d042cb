"""Sphinx configuration of the fastdice documentation (make docs)."""

import importlib.util
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # the checkout's fastdice, built in place
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

import fastdice  # noqa: E402  (the built package: autodoc reads its docstrings)

project = "fastdice"
author = "the fastdice authors"
copyright = "the fastdice authors"
release = fastdice.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "benchmark_tables",
    "docstring_layout",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
# architecture.md is included by design.md, not a page of its own.
exclude_patterns = ["_build", "architecture.md"]
# The page of fastdice.functional is built once the module exists; it then needs its line
# ("functional") in the toctree of docs/api/index.md, or the build stops on the unlisted page.
if importlib.util.find_spec("fastdice.functional") is None:
    exclude_patterns.append("api/functional.md")
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_mock_imports = []
# Types named in signatures that are not documented here (torch's, typing's) are not errors.
nitpick_ignore_regex = [(r"py:.*", r"(torch|typing|collections|numbers|enum|os|numpy|np)\..*"),
                        (r"py:.*", r"(Tensor|Module|Optional|Union|Literal|Sequence|Callable|Any)"),
                        # Private bases and helpers named in signatures, and the internal options module.
                        (r"py:.*", r"(.*\.)?_\w+"), (r"py:.*", r"fastdice\.options\..*")]

html_theme = "furo"
html_title = f"fastdice {release}"
html_static_path = []
# No network at build time: no intersphinx, no remote images.
