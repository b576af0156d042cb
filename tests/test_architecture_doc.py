"""docs/architecture.md cites only code that exists: every file or folder path it names is in
the tree, and every function, class, constant or macro it names is defined in the sources."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SOURCE_DIRS = ("fastdice", "csrc", "examples")
SOURCE_SUFFIXES = {".py", ".h", ".cpp", ".cu", ".cuh"}
PATH_SUFFIXES = (".py", ".h", ".cpp", ".cu", ".cuh", ".md")


def cited() -> list:
    """The backticked spans of the document."""
    return re.findall(r"`([^`\n]+)`", DOC.read_text())


def is_path(span: str) -> bool:
    return "/" in span and " " not in span or span.endswith(PATH_SUFFIXES)


def code_name(span: str):
    """The name a span cites (``fastdice::constants`` -> ``constants``, ``opts.epilogue_args``
    -> ``epilogue_args``, ``dice_stats(...)`` -> ``dice_stats``), or None for a span that is not
    a name (a shape, a string value, an argument spelling such as ``mask=``, a sentence)."""
    span = re.sub(r"\(.*\)$", "", span)
    if not re.fullmatch(r"[A-Za-z_][\w.:]*", span) or span.startswith(("torch.", "torch:")):
        return None
    name = re.split(r"::|\.", span)[-1]
    # A plain lower-case word (an option value such as `plain`) is prose, not a code name.
    if re.fullmatch(r"[a-z]+", name) and "." not in span and "::" not in span:
        return None
    return name


def source_text() -> str:
    return "\n".join(
        p.read_text(errors="replace")
        for d in SOURCE_DIRS for p in (ROOT / d).rglob("*")
        if p.suffix in SOURCE_SUFFIXES and p.is_file()
    )


def defines(text: str, name: str) -> bool:
    if any(ROOT.glob(f"fastdice/**/{name}.py")) or any(ROOT.glob(f"fastdice/{name}*.so")):  # a module
        return True
    text = "\n".join(line for line in text.splitlines() if name in line)
    n = re.escape(name)
    patterns = [
        rf"^\s*(async\s+)?def\s+{n}\b", rf"^\s*class\s+{n}\b", rf"^\s*{n}\s*(:[^=\n]*)?=",  # Python
        rf"^\s*{n}\s*:",  # a dataclass / NamedTuple field
        rf"#define\s+{n}\b", rf"\b(struct|class|enum)\s+{n}\b", rf"#\s*if(n?def)?\b[^\n]*\b{n}\b",  # C++
        rf"\b(constexpr|const)\b[^;=\n]*\b{n}\s*=",  # C++ constants
        rf"m\.def\(\s*\"{n}\(", rf"\"{n}\(",  # op schemas
        rf"\b{n}\s*\(",  # a C++ declaration or a call of a function defined in a header
        rf"\b(self|opts)\.{n}\s*=", rf"object\.__setattr__\(self,\s*\"{n}\"",  # attributes
        rf"^\s*{n}\s*,",  # an unpacked tuple target
        rf"\bX\(\w+,\s*{n}\b",  # an X-macro entry
        rf"\b{n}\b[^\n]*=\s*(_ops\.|torch\.ops)",  # a constant read from the extension
    ]
    return any(re.search(p, text, re.MULTILINE) for p in patterns)


def path_exists(span: str) -> bool:
    """A path from the root (``csrc/*.h``: some file matches), or a bare file name that
    some file of the tree has (``dice.py`` beside the folder cited with it)."""
    if "/" not in span:
        return any(ROOT.glob(f"fastdice/**/{span}")) or any(ROOT.glob(f"csrc/**/{span}"))
    return any(ROOT.glob(span.rstrip("/")))


def test_cited_paths_exist():
    missing = sorted({s for s in cited() if is_path(s) and not path_exists(s)})
    assert not missing, f"docs/architecture.md cites paths that are not in the tree: {missing}"


def test_cited_code_names_are_defined():
    text = source_text()
    names = {code_name(s) for s in cited() if not is_path(s)} - {None}
    assert len(names) > 40  # the document does cite code
    missing = sorted(n for n in names if not defines(text, n))
    assert not missing, f"docs/architecture.md cites names defined nowhere in the sources: {missing}"


def test_the_checker_catches_a_stale_name():
    text = source_text()
    assert not defines(text, "native_stats") and not defines(text, "explain_target_error")
    assert defines(text, "dice_loss_with_options") and defines(text, "FD_EPILOGUE_OPTIONS")


def test_only_functional_calls_the_ops_for_losses():
    """The layering the document describes: no compat module imports fastdice._ops, and of the
    loss modules only fastdice/functional.py does."""
    import ast

    def imports_ops(path: pathlib.Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_ops"):
                return True
            if isinstance(node, ast.ImportFrom) and any(alias.name == "_ops" for alias in node.names):
                return True
            if isinstance(node, ast.Import) and any(alias.name.endswith("._ops") for alias in node.names):
                return True
        return False

    compat = sorted((ROOT / "fastdice" / "compat").rglob("*.py"))
    losses = [ROOT / "fastdice" / name for name in ("loss.py", "combined.py", "dice_family.py")]
    offenders = [str(p.relative_to(ROOT)) for p in compat + losses if imports_ops(p)]
    assert not offenders, f"these modules call fastdice._ops instead of fastdice.functional: {offenders}"
    assert imports_ops(ROOT / "fastdice" / "functional.py")
