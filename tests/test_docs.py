"""The documentation as a user reads it: every Python example of the README and of the
docs pages runs, the README's benchmark table is the newest committed run's, the README is a
landing page, no page speaks of project history, and the API pages cover the public modules.

An example is a fenced ``python`` block. A page may give hidden set-up code (names an
example uses but does not define, such as a model) in an HTML comment that opens with
``<!-- example-setup``; it runs before the page's first example. The examples of one page
run in order, in one namespace, from a temporary working directory.
"""

import os
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import fastdice

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^(`{3,})python\n(.*?)^\1$|^<!-- example-setup\n(.*?)^-->$", re.M | re.S)
HISTORY = re.compile(r"\bsession \d+|(?<![\w&/])#\d+\b|before this change|\bissue \d+", re.I)


def _examples(page):
    text = page.read_text()
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        yield line, match.group(2) if match.group(2) is not None else match.group(3)


PAGES_WITH_EXAMPLES = [p for p in PAGES if any(True for _ in _examples(p))]


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs_example__"}
    for line, code in _examples(page):
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as error:  # the example's page and line, then the error itself
            raise AssertionError(f"the example at {page.relative_to(ROOT)}:{line} fails: {error!r}") from error


def test_readme_benchmark_table_is_the_newest_committed_run():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_benchmark_table.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines; details belong in docs/"
    opening = "\n".join(lines[:20])
    assert "make demo" in opening and "make test" in opening
    assert any(line.startswith("## ") and "MONAI" in line for line in lines), "no 'coming from MONAI' section"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_project_history_where_users_read(page):
    """History goes to the commit messages and CHANGELOG.md (not a page here), never the pages."""
    hits = [f"{page.relative_to(ROOT)}:{i}: {line.strip()}" for i, line in enumerate(page.read_text().splitlines(), 1)
            if HISTORY.search(line)]
    assert not hits, "\n".join(hits)


def _documented_modules():
    text = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    return set(re.findall(r"^\.\. automodule:: ([\w.]+)", text, re.M))


def test_api_pages_document_every_public_module():
    public = {"fastdice"} | {m.name for m in pkgutil.walk_packages(fastdice.__path__, "fastdice.")
                             if not any(part.startswith("_") for part in m.name.split("."))}
    # Programs and trainer plumbing rather than API (the demo script, nnU-Net's trainer folder),
    # and the modules whose public classes the fastdice page documents under their exported names.
    public -= {"fastdice.demo", "fastdice.nnunet.__main__", "fastdice.loss", "fastdice.combined",
               "fastdice.dice_family", "fastdice.options", "fastdice.errors"}
    public = {m for m in public if not m.startswith("fastdice.nnunet.ext_trainer")}
    missing = sorted(m for m in public if m not in _documented_modules()
                     and not any(m.startswith(d + ".") and d != "fastdice" for d in _documented_modules()))
    assert not missing, f"no API page documents {missing} (docs/api/)"


def test_api_page_of_fastdice_lists_every_public_name():
    page = (DOCS / "api" / "fastdice.md").read_text()
    modules = {"metrics", "reference", "functional"}  # pages of their own
    missing = [n for n in fastdice.__all__ if n not in modules and f"fastdice.{n}\n" not in page
               and f"fastdice.{n} " not in page]
    assert not missing, f"docs/api/fastdice.md does not document {missing}"


def test_link_checker_finds_a_missing_page_and_a_missing_anchor(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from check_html_links import broken_links

    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text('<a href="sub/page.html#there">ok</a> <a href="missing.html">no</a>'
                                         '<a href="sub/page.html#nowhere">no</a> <a href="https://example.org/x">out</a>'
                                         '<img src="_images/plot.png">')
    (tmp_path / "sub" / "page.html").write_text('<h2 id="there">T</h2><a href="../index.html">up</a>')
    broken = broken_links(str(tmp_path))
    assert len(broken) == 3, broken
    assert any("missing.html" in b for b in broken) and any("'nowhere'" in b for b in broken)
    assert any("_images/plot.png" in b for b in broken)


def test_docstring_layout_renders_plain_text_as_rest():
    sys.path.insert(0, str(DOCS / "_ext"))
    from docstring_layout import convert

    lines = ["Summary over ``input`` of shape (B, C, *spatial).", "", "Options:", "  alpha: the weight,",
             "    continued.", "  beta_x: |p - t| sums, see `gamma`.", "", "Formula::", "", "    I = sum p*t", "",
             "* one", "  more", "* two"]
    assert convert(lines) == [
        "Summary over ``input`` of shape (B, C, \\*spatial).", "", "Options:", "",
        "* **alpha**: the weight, continued.", "* **beta_x**: \\|p - t\\| sums, see ``gamma``.", "",
        "Formula::", "", "    I = sum p*t", "", "* one more", "* two"]
