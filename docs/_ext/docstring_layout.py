"""Render fastdice's plain-text docstrings as reStructuredText.

fastdice's docstrings are written for ``help()`` and IDEs: paragraphs, ``name: meaning``
option lists under a line ending with a colon, ``*`` bullets, ``::`` literal blocks and
``double-backtick`` literals, with no other reST markup. Read as reST, their free indentation
and characters such as ``*spatial`` or ``|p - t|`` are markup errors. This hook (autodoc's
``autodoc-process-docstring``) turns each docstring into the reST that shows the same text:

* a paragraph becomes one line (an indented continuation line is part of it);
* the indented lines under a line ending with ``:`` become a bullet list, one item per line
  at the list's indentation (deeper lines continue the item), ``name: meaning`` with the name
  in bold;
* a ``::`` block and a ``>>>`` example stay as they are;
* ``*``, ``|`` and a word's trailing ``_`` outside literals are escaped, and a single-backtick
  `name` becomes a literal (a Sphinx role such as :class:`X` stays a role).
"""

import re

# Kept as they are: ``literals`` and the few Sphinx roles the docstrings use (:class:`DiceLoss`).
_LITERAL = re.compile(r"(``.+?``|:(?:class|func|meth|mod|attr|data):`[^`]+`)")
_OPTION = re.compile(r"^((?:[A-Za-z_][\w.]*)(?:, [A-Za-z_][\w.]*)*): (.*)$")


def _escape(text: str) -> str:
    """Escape reST inline markup outside ``literals`` and roles; `single` backticks become literals."""
    parts = _LITERAL.split(text)
    for i in range(0, len(parts), 2):
        part = parts[i]
        part = part.replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|")
        part = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", part)
        part = re.sub(r"`([^`]+)`", r"``\1``", part)
        parts[i] = part
    return "".join(parts)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _item(text: str) -> str:
    text = re.sub(r"^[*-] ", "", text)
    match = _OPTION.match(text)
    if match:
        return f"* **{match.group(1)}**: {_escape(match.group(2))}"
    return "* " + _escape(text)


def convert(lines):
    """The reST lines for a docstring's plain-text lines."""
    out = []
    i, n = 0, len(lines)

    def emit_block(block):
        out.append("")
        out.extend(block)

    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        base = _indent(line)
        stripped = line.strip()
        if stripped.startswith(">>>"):
            block = []
            while i < n and lines[i].strip():
                block.append(lines[i][base:])
                i += 1
            emit_block(block)
            continue
        if stripped.startswith(("* ", "- ")):
            items = []
            while i < n and lines[i].strip() and _indent(lines[i]) >= base:
                text = lines[i].strip()
                if _indent(lines[i]) == base and text.startswith(("* ", "- ")):
                    items.append(text)
                else:
                    items[-1] += " " + text
                i += 1
            emit_block([_item(t) for t in items])
            continue
        # A paragraph: lines at its indentation, deeper lines continue it, until a line that
        # ends with ':' is followed by deeper lines (a list) or the paragraph ends.
        text = stripped
        i += 1
        while i < n and lines[i].strip() and not (text.endswith(":") and _indent(lines[i]) > base):
            if _indent(lines[i]) < base:
                break
            text += " " + lines[i].strip()
            i += 1
        if text.endswith("::"):
            emit_block([_escape(text[:-2]) + "::" if text[:-2].strip() else "::"])
            # The literal block: every following line that is blank or deeper than the paragraph.
            block = []
            while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            depth = min(_indent(b) for b in block if b.strip()) if block else 0
            emit_block(["    " + b[depth:] if b.strip() else "" for b in block])
            continue
        emit_block([_escape(text)])
        if i < n and lines[i].strip() and text.endswith(":") and _indent(lines[i]) > base:
            entry = _indent(lines[i])
            items = []
            while i < n and lines[i].strip() and _indent(lines[i]) > base:
                if _indent(lines[i]) <= entry or not items:
                    entry = min(entry, _indent(lines[i]))
                    items.append(lines[i].strip())
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            emit_block([_item(t) for t in items])
    while out and not out[0]:
        out.pop(0)
    return out


def _process(app, what, name, obj, options, lines):
    if not name.startswith("fastdice"):
        return
    lines[:] = convert(lines)


def setup(app):
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
