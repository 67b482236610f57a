"""Apply an LLM's minimal patch to a training script.

The auto-fix asks the LLM for a patch, never a whole script: a re-emitted script silently loses lines
the model did not bother to copy, and a patch is small enough for a person to read. LLMs are sloppy
with patches, though: they wrap them in fences and prose, get hunk line numbers wrong, drop trailing
whitespace and shift indentation. This module accepts that sloppiness where the intent is unambiguous
and refuses (with one clear line saying why) everywhere else, because a wrong edit to train.py is
worse than no edit. Pure functions: no I/O, no LLM.

Two formats are understood:

* SEARCH/REPLACE blocks (aider's format), applied in order, each search text matching exactly once::

      <<<<<<< SEARCH
      old lines
      =======
      new lines
      >>>>>>> REPLACE

* unified diffs (``--- a/train.py`` / ``+++ b/train.py`` / ``@@ -l,n +l,n @@``); hunks are located by
  their context and removed lines, the header numbers only break ties.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["PatchError", "apply_patch", "extract_patch", "unified_diff"]

_SEARCH_RE = re.compile(r"^\s*<{5,9}\s?SEARCH\b.*$")
_DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
_REPLACE_RE = re.compile(r"^\s*>{5,9}\s?REPLACE\b.*$")
_HUNK_RE = re.compile(r"^@@")
_HUNK_NUMBERS_RE = re.compile(r"^@@+\s*-(\d+)(?:,(\d+))?\s+\+(\d+)(?:,(\d+))?\s*@@")
_FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.DOTALL | re.MULTILINE)
_DIFF_HEADER_PREFIXES = ("diff ", "index ", "new file mode", "deleted file mode", "similarity index")


class PatchError(ValueError):
    """A patch that cannot be applied safely; the message is one line that says what is wrong.

    The message goes back to the LLM (so it can send a better patch) and to the person watching, so it
    names the block or hunk and never dumps the patch.
    """


# ----------------------------------------------------------------------------------------- extraction
def extract_patch(answer: str) -> str:
    """Pull the patch out of an LLM answer, dropping fences and prose around it.

    SEARCH/REPLACE blocks are returned re-rendered in canonical form (so prose and fences between
    blocks vanish); a unified diff is returned from its first header or hunk line to its last hunk
    line, preferring a fenced block that holds one.
    """
    if any(_SEARCH_RE.match(line) for line in answer.splitlines()):
        blocks = _parse_blocks(answer)
        return "\n".join(_render_block(search, replace) for search, replace in blocks) + "\n"
    for match in _FENCE_RE.finditer(answer):
        body = match.group(2)
        if any(_HUNK_RE.match(line) for line in body.splitlines()):
            return _diff_span(body)
    if any(_HUNK_RE.match(line) for line in answer.splitlines()):
        return _diff_span(answer)
    raise PatchError(
        "no patch found in the answer: send SEARCH/REPLACE blocks or a unified diff, not a whole script"
    )


def _render_block(search: list[str], replace: list[str]) -> str:
    return "\n".join(["<<<<<<< SEARCH", *search, "=======", *replace, ">>>>>>> REPLACE"])


def _diff_span(text: str) -> str:
    """The unified-diff lines of `text`: from the first header/hunk line until a line no diff has."""
    lines = text.splitlines()
    start = None
    for i, line in enumerate(lines):
        is_file_header = line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")
        if is_file_header or line.startswith("diff --git ") or _HUNK_RE.match(line):
            start = i
            break
    if start is None:
        raise PatchError("no patch found in the answer")
    span: list[str] = []
    for line in lines[start:]:
        if line == "" or line[0] in " +-@\\" or line.startswith(_DIFF_HEADER_PREFIXES):
            span.append(line)
        else:
            break
    while span and span[-1] == "":
        span.pop()
    return "\n".join(span) + "\n"


# ------------------------------------------------------------------------------------------ applying
def apply_patch(script: str, patch: str, *, name: str = "train.py") -> str:
    """Return `script` with `patch` applied, or raise PatchError and change nothing.

    The format is recognised from the patch itself. Lines outside the patch (fences, prose) are
    ignored, so an un-extracted answer usually works too, but `extract_patch` first is the contract.
    """
    lines = script.splitlines()
    if any(_SEARCH_RE.match(line) for line in patch.splitlines()):
        new_lines = _apply_blocks(lines, _parse_blocks(patch), name)
    elif any(_HUNK_RE.match(line) for line in patch.splitlines()):
        new_lines = _apply_hunks(lines, _parse_hunks(patch), name)
    else:
        raise PatchError("patch is neither SEARCH/REPLACE blocks nor a unified diff")
    newline = "\r\n" if "\r\n" in script else "\n"
    new = newline.join(new_lines)
    if new_lines and (script.endswith(("\n", "\r")) or not script):
        new += newline
    if not new.strip():
        raise PatchError(f"the patch leaves {name} empty")
    if new == script or new_lines == lines:
        raise PatchError(f"the patch changes nothing in {name}")
    return new


def unified_diff(old: str, new: str, name: str = "train.py") -> str:
    """A unified diff from `old` to `new`, for showing a person what a fix changes.

    It is also a valid patch for `apply_patch`, so what was shown is what can be applied.
    """
    diff = difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=f"a/{name}", tofile=f"b/{name}", lineterm=""
    )
    text = "\n".join(diff)
    return text + "\n" if text else ""


# ------------------------------------------------------------------------------- locating a line block
@dataclass
class _Match:
    """Where a block of lines sits in the script, and how to indent lines that replace it."""

    start: int
    length: int
    reindent: Callable[[list[str]], list[str]] = field(default=lambda replacement: replacement)


def _leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _common_indent(lines: list[str]) -> str:
    indents = [_leading_ws(line) for line in lines if line.strip()]
    if not indents:
        return ""
    prefix = indents[0]
    for indent in indents[1:]:
        while not indent.startswith(prefix):
            prefix = prefix[:-1]
    return prefix


def _find_exact(hay: list[str], needle: list[str], norm: Callable[[str], str]) -> list[_Match]:
    k = len(needle)
    wanted = [norm(line) for line in needle]
    normed = [norm(line) for line in hay]
    return [_Match(i, k) for i in range(len(hay) - k + 1) if normed[i : i + k] == wanted]


def _find_shifted(hay: list[str], needle: list[str]) -> list[_Match]:
    """Matches where every needle line sits in the script under one uniform indentation change."""
    k = len(needle)
    if not any(line.strip() for line in needle):
        return []
    needle_indent = _common_indent(needle)
    dedented = [line[len(needle_indent) :].rstrip() if line.strip() else "" for line in needle]
    matches: list[_Match] = []
    for i in range(len(hay) - k + 1):
        prefix: str | None = None
        for want, got in zip(dedented, hay[i : i + k]):
            got = got.rstrip()
            if not want:
                if got.strip():
                    break
                continue
            if not got.endswith(want) or got[: len(got) - len(want)].strip():
                break
            here = got[: len(got) - len(want)]
            if prefix is None:
                prefix = here
            elif here != prefix:
                break
        else:
            if prefix is not None:
                matches.append(_Match(i, k, _reindenter(needle_indent, prefix)))
    return matches


def _reindenter(old_indent: str, new_indent: str) -> Callable[[list[str]], list[str]]:
    def reindent(replacement: list[str]) -> list[str]:
        out = []
        for line in replacement:
            if not line.strip():
                out.append("")
            elif line.startswith(old_indent):
                out.append(new_indent + line[len(old_indent) :])
            else:
                out.append(new_indent + line.lstrip())
        return out

    return reindent


def _locate(hay: list[str], needle: list[str]) -> list[_Match]:
    """All places `needle` fits, from the strictest comparison that finds any.

    Stopping at the first comparison that matches keeps a loose rule from turning a unique exact match
    into an "ambiguous" one.
    """
    for matches in (
        lambda: _find_exact(hay, needle, lambda line: line),
        lambda: _find_exact(hay, needle, str.rstrip),
        lambda: _find_shifted(hay, needle),
    ):
        found = matches()
        if found:
            return found
    return []


# ------------------------------------------------------------------------------ SEARCH/REPLACE blocks
def _parse_blocks(text: str) -> list[tuple[list[str], list[str]]]:
    lines = text.splitlines()
    blocks: list[tuple[list[str], list[str]]] = []
    i = 0
    while i < len(lines):
        if not _SEARCH_RE.match(lines[i]):
            i += 1
            continue
        number = len(blocks) + 1
        search: list[str] = []
        i += 1
        while i < len(lines) and not _DIVIDER_RE.match(lines[i]):
            if _SEARCH_RE.match(lines[i]) or _REPLACE_RE.match(lines[i]):
                break
            search.append(lines[i])
            i += 1
        if i >= len(lines) or not _DIVIDER_RE.match(lines[i]):
            raise PatchError(f"search block {number} has no ======= line between search and replace")
        replace: list[str] = []
        i += 1
        while i < len(lines) and not _REPLACE_RE.match(lines[i]):
            if _SEARCH_RE.match(lines[i]) or _DIVIDER_RE.match(lines[i]):
                break
            replace.append(lines[i])
            i += 1
        if i >= len(lines) or not _REPLACE_RE.match(lines[i]):
            raise PatchError(f"search block {number} is not closed with >>>>>>> REPLACE")
        i += 1
        blocks.append((search, replace))
    if not blocks:
        raise PatchError("no SEARCH/REPLACE block found in the patch")
    return blocks


def _trim_blank_edges(search: list[str], replace: list[str]) -> tuple[list[str], list[str]]:
    """Drop blank lines at the edges of a search text, and as many matching ones from its replacement."""
    search, replace = list(search), list(replace)
    while search and not search[0].strip():
        search.pop(0)
        if replace and not replace[0].strip():
            replace.pop(0)
    while search and not search[-1].strip():
        search.pop()
        if replace and not replace[-1].strip():
            replace.pop()
    return search, replace


def _apply_blocks(lines: list[str], blocks: list[tuple[list[str], list[str]]], name: str) -> list[str]:
    lines = list(lines)
    for number, (search, replace) in enumerate(blocks, start=1):
        if not any(line.strip() for line in search):
            raise PatchError(f"search block {number} is empty; quote the lines of {name} to replace")
        matches = _locate(lines, search)
        if not matches:
            trimmed_search, trimmed_replace = _trim_blank_edges(search, replace)
            if trimmed_search != search:
                search, replace = trimmed_search, trimmed_replace
                matches = _locate(lines, search)
        if not matches and len(search) == 1:
            lines = _replace_within_line(lines, search[0], replace, number, name)
            continue
        if not matches:
            raise PatchError(f"search block {number} not found in {name}")
        if len(matches) > 1:
            where = ", ".join(str(m.start + 1) for m in matches[:5])
            raise PatchError(
                f"search block {number} is ambiguous: it matches {len(matches)} places in {name} "
                f"(lines {where}); include more surrounding lines"
            )
        match = matches[0]
        lines[match.start : match.start + match.length] = match.reindent(replace)
    return lines


def _replace_within_line(
    lines: list[str], search: str, replace: list[str], number: int, name: str
) -> list[str]:
    """A one-line search text that is part of a line (e.g. just `tokenizer=tok`)."""
    needle = search.strip()
    hits = [(i, line.count(needle)) for i, line in enumerate(lines) if needle and needle in line]
    total = sum(count for _, count in hits)
    if total == 0:
        raise PatchError(f"search block {number} not found in {name}")
    if total > 1:
        where = ", ".join(str(i + 1) for i, _ in hits[:5])
        raise PatchError(
            f"search block {number} is ambiguous: it matches {total} places in {name} "
            f"(lines {where}); include more surrounding lines"
        )
    if len(replace) > 1:
        raise PatchError(
            f"search block {number} matches only part of a line; replace whole lines to add or remove lines"
        )
    index = hits[0][0]
    lines = list(lines)
    lines[index] = lines[index].replace(needle, replace[0].strip() if replace else "", 1)
    return lines


# ------------------------------------------------------------------------------------- unified diffs
@dataclass
class _Hunk:
    old_start: int | None
    body: list[tuple[str, str]] = field(default_factory=list)
    """(tag, text) with tag " " context, "-" removed, "+" added."""
    implicit_blanks: int = 0
    """Trailing context lines that were empty raw lines: maybe blank context, maybe a separator."""

    @property
    def old_lines(self) -> list[str]:
        return [text for tag, text in self.body if tag in " -"]

    @property
    def new_lines(self) -> list[str]:
        return [text for tag, text in self.body if tag in " +"]


def _parse_hunks(patch: str) -> list[_Hunk]:
    lines = patch.splitlines()
    hunks: list[_Hunk] = []
    current: _Hunk | None = None
    for i, line in enumerate(lines):
        if _HUNK_RE.match(line):
            numbers = _HUNK_NUMBERS_RE.match(line)
            current = _Hunk(old_start=int(numbers.group(1)) if numbers else None)
            hunks.append(current)
            continue
        if current is None:
            continue  # file headers, prose, fences before the first hunk
        is_file_header = line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")
        if is_file_header or line.startswith(_DIFF_HEADER_PREFIXES):
            current = None
        elif line == "":
            current.body.append((" ", ""))
            current.implicit_blanks += 1
            continue
        elif line[0] in " -+":
            current.body.append((line[0], line[1:]))
        elif line[0] == "\\":
            continue  # "\ No newline at end of file"
        else:
            current = None  # a closing fence or prose ends the hunk
            continue
        if current is not None:
            current.implicit_blanks = 0
    for hunk in hunks:
        for _ in range(hunk.implicit_blanks):
            hunk.body.pop()
    return hunks


def _apply_hunks(lines: list[str], hunks: list[_Hunk], name: str) -> list[str]:
    lines = list(lines)
    offset = 0
    for number, hunk in enumerate(hunks, start=1):
        if not any(tag != " " for tag, _ in hunk.body):
            continue
        old, new = hunk.old_lines, hunk.new_lines
        at = f" at line {hunk.old_start}" if hunk.old_start is not None else ""
        if not any(line.strip() for line in old):
            raise PatchError(
                f"hunk {number} has no context or removed lines; include a few unchanged lines around it"
            )
        matches = _locate(lines, old)
        if not matches:
            raise PatchError(
                f"hunk {number} does not apply{at}: its context and removed lines are not in {name}"
            )
        if len(matches) > 1:
            if hunk.old_start is None:
                raise PatchError(
                    f"hunk {number} is ambiguous: its lines match {len(matches)} places in {name}; "
                    "include more context lines"
                )
            hint = hunk.old_start - 1 + offset
            matches.sort(key=lambda m: abs(m.start - hint))
        match = matches[0]
        lines[match.start : match.start + match.length] = match.reindent(new)
        offset += len(new) - len(old)
    return lines
