"""The package as a packager gets it: one version, the torch range stated the same
everywhere, and the sdist and wheel that `make package` builds hold what they must.

The listing tests read the artifacts in $FASTDICE_DIST_DIR (set by `make package`)
and skip without it. Their oracles are the git checkout (every tracked source file)
and the #include lines of the sources the build compiles, not the MANIFEST.in or the
setup.py under test.
"""

import ast
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (ROOT / "fastdice" / "_version.py").read_text(), re.M).group(1)
DIST_DIR = os.environ.get("FASTDICE_DIST_DIR")
# What setup.py compiles (its globs, written here again).
COMPILED = re.compile(r"^csrc/([^/]+\.cpp|ops/[^/]+\.cpp|cpu/[^/]+\.cpp|cuda/[^/]+\.cu)$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def _tracked(prefix):
    """Files git tracks under prefix, relative to the checkout's root."""
    try:
        out = subprocess.run(["git", "ls-files", prefix], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return {line for line in out.stdout.splitlines() if line}


def _torch_range_of_setup_py():
    tree = ast.parse((ROOT / "setup.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("TORCH_OLDEST", "TORCH_NEWEST_TESTED"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["TORCH_OLDEST"], found["TORCH_NEWEST_TESTED"]


# ----------------------------------------------------------------------------
# One version, one torch range
# ----------------------------------------------------------------------------


def test_version_has_one_source():
    import fastdice

    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", VERSION), VERSION
    assert fastdice.__version__ == VERSION
    assert fastdice.build_config()["version"] == VERSION, "the extension was built from another version: rebuild"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and not re.search(r'^version\s*=\s*"', pyproject, re.M)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[?(\d[^\]\s]*)", changelog, re.M).group(1) == VERSION, "CHANGELOG's newest entry"


def test_torch_range_is_stated_the_same_everywhere():
    oldest, newest = _torch_range_of_setup_py()
    lower = "torch>=%d.%d" % oldest
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dependencies = \[[^\]]*"' + re.escape(lower) + '"', pyproject, re.M), lower
    assert re.search(r'^requires = \[[^\]]*"' + re.escape(lower) + '"', pyproject, re.M), lower
    stated = "torch %d.%d to %d.%d" % (oldest + newest)
    for doc in ("README.md", "docs/installation.md"):
        assert stated in (ROOT / doc).read_text(), f"{doc} does not state the tested range '{stated}'"
    ci = (ROOT / ".ci" / "run").read_text()
    for minor in sorted({oldest[1], newest[1] - 1}):
        assert f"{oldest[0]}.{minor}." in ci, f".ci/run builds and tests no torch {oldest[0]}.{minor}"


def _stub_torch(tmp_path, body):
    stub = tmp_path / "stub" / "torch"
    (stub / "utils").mkdir(parents=True)
    (stub / "__init__.py").write_text(body)
    (stub / "utils" / "__init__.py").write_text("")
    (stub / "utils" / "cpp_extension.py").write_text("")
    checkout = tmp_path / "checkout"
    (checkout / "fastdice").mkdir(parents=True)
    (checkout / "setup.py").write_text((ROOT / "setup.py").read_text())
    (checkout / "fastdice" / "_version.py").write_text((ROOT / "fastdice" / "_version.py").read_text())
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "stub"))
    return subprocess.run([sys.executable, "setup.py", "build_ext"], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=120)


def test_build_with_too_old_torch_says_so_in_one_line(tmp_path):
    oldest, newest = _torch_range_of_setup_py()
    old = "%d.%d.0" % (oldest[0], oldest[1] - 1)
    proc = _stub_torch(tmp_path, f"__version__ = '{old}+cpu'\n")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"torch {old}+cpu is too old" in lines[0] and "%d.%d to %d.%d" % (oldest + newest) in lines[0]


def test_build_without_torch_says_what_to_install(tmp_path):
    proc = _stub_torch(tmp_path, "raise ImportError('No module named torch')\n")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install --no-build-isolation" in lines[0], proc.stderr


# ----------------------------------------------------------------------------
# The artifacts of `make package`
# ----------------------------------------------------------------------------


def _artifact(pattern):
    if not DIST_DIR:
        pytest.skip("FASTDICE_DIST_DIR is not set (make package sets it)")
    found = sorted(pathlib.Path(DIST_DIR).glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {DIST_DIR}, found {[p.name for p in found]}"
    return found[0]


@pytest.fixture(scope="module")
def sdist_files():
    path = _artifact("fastdice-*.tar.gz")
    assert path.name == f"fastdice-{VERSION}.tar.gz"
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        prefix = f"fastdice-{VERSION}/"
        assert all(n.startswith(prefix) for n in names)
        return {n[len(prefix):]: tar.extractfile(n).read() for n in names}


@pytest.fixture(scope="module")
def wheel_names():
    path = _artifact("fastdice-*.whl")
    assert path.name.startswith(f"fastdice-{VERSION}-")
    with zipfile.ZipFile(path) as whl:
        return set(whl.namelist())


def test_sdist_holds_every_tracked_source_and_the_package(sdist_files):
    missing = sorted((_tracked("csrc") | _tracked("fastdice")) - set(sdist_files))
    assert not missing, f"the sdist lacks {missing}"
    for name in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "setup.py", "PKG-INFO"):
        assert name in sdist_files, name


def test_sdist_holds_every_header_the_compiled_sources_include(sdist_files):
    compiled = [n for n in sdist_files if COMPILED.match(n)]
    assert any(n.endswith(".cu") for n in compiled) and any(n.startswith("csrc/cpu/") for n in compiled)
    todo, seen, missing = list(compiled), set(), []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for include in INCLUDE.findall(sdist_files[name].decode()):
            candidates = [os.path.normpath(os.path.join(os.path.dirname(name), include)),
                          os.path.normpath(os.path.join("csrc", include))]
            hit = next((c for c in candidates if c in sdist_files), None)
            if hit is None:
                missing.append(f"{include} (included by {name})")
            else:
                todo.append(hit)
    assert not missing, missing
    assert len(seen) > len(compiled), "no header followed: the include pattern matched nothing"


def test_sdist_has_no_build_leftovers(sdist_files):
    leftovers = [n for n in sdist_files if n.startswith(("tests/", "build/", "benchmarks/")) or "__pycache__" in n
                 or n.endswith((".so", ".o", ".pyc")) or n == "fastdice/_build_config.py"]
    assert not leftovers, leftovers


def test_wheel_holds_the_extension_and_py_typed(wheel_names):
    assert len([n for n in wheel_names if re.fullmatch(r"fastdice/_C\.[^/]*\.so", n)]) == 1, sorted(wheel_names)
    modules = {n for n in _tracked("fastdice") if n.endswith((".py", "py.typed"))}
    assert not modules - wheel_names, sorted(modules - wheel_names)
    assert "fastdice/_build_config.py" in wheel_names
    assert f"fastdice-{VERSION}.dist-info/licenses/LICENSE" in wheel_names


def test_wheel_has_no_tests_or_build_leftovers(wheel_names):
    top = {n.split("/")[0] for n in wheel_names}
    assert top == {"fastdice", f"fastdice-{VERSION}.dist-info"}, top
    leftovers = [n for n in wheel_names if "__pycache__" in n or n.endswith((".o", ".pyc", ".cpp", ".cu", ".h"))]
    assert not leftovers, leftovers


def test_wheel_metadata_states_version_license_and_torch(tmp_path):
    path = _artifact("fastdice-*.whl")
    with zipfile.ZipFile(path) as whl:
        metadata = whl.read(f"fastdice-{VERSION}.dist-info/METADATA").decode()
    oldest, _ = _torch_range_of_setup_py()
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "\nLicense-Expression: BSD-3-Clause\n" in metadata
    assert "\nRequires-Dist: torch>=%d.%d\n" % oldest in metadata
