"""Structured edits: a patch format a small model cannot get wrong in form.

SEARCH/REPLACE blocks and unified diffs fail on form with small models: a missing ``=======`` line, an
unclosed block, a search text re-typed with one character off. A structured answer (JSON constrained by
a schema, which llama.cpp turns into a grammar and OpenAI-compatible servers enforce) removes the form
errors; what is left is *where* the edit goes, so an edit names its place twice: by line numbers against
the numbered excerpt the model was shown, and by an anchor (the current text of those lines). Either one
alone works; when both are given and disagree, the anchor wins if it is found unambiguously near the
stated lines, because a model copies text more reliably than it counts lines.

Anchors are matched fuzzily (whitespace-insensitive, then by difflib similarity), and an anchor that
fits two places equally is refused rather than guessed. Every refusal is one line that says exactly why
(which edit, which lines, the closest candidates), because it goes back to the model to correct itself.
Pure functions: no I/O, no LLM.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from twinkle_auto.monitor.patching import (  # one indentation helper for both formats
    PatchError,
    _common_indent,
    _leading_ws,
    apply_patch,
    extract_patch,
)

__all__ = [
    "Edit",
    "EditPlan",
    "apply_answer",
    "apply_edits",
    "edit_plan_schema",
    "locate_anchor",
    "parse_plan",
]

NEAR_MATCH_RATIO = 0.82
"""An anchor line is taken as the script line it resembles when their similarity reaches this (difflib)."""
AMBIGUITY_MARGIN = 0.03
"""Two candidate places whose similarity differs by less than this are equally good: refuse, don't guess."""
ANCHOR_SEARCH_RADIUS = 15
"""When line numbers and anchor disagree, the anchor is looked for this many lines around the stated ones
first (the model miscounted); only then in the whole script."""
CANDIDATES_SHOWN = 2
MAX_QUOTE = 70


class Edit(BaseModel):
    """One replacement: lines start_line..end_line (1-based, inclusive) and/or the lines `anchor` quotes.

    An insertion before line N is start_line=N, end_line=N-1. An empty replacement deletes the lines.
    """

    start_line: int | None = Field(default=None, description="first line to replace (1-based)")
    end_line: int | None = Field(default=None, description="last line to replace (inclusive)")
    anchor: str | None = Field(default=None, description="current text of the lines to replace, copied")
    replacement: str = Field(description="the new text of those lines")


class EditPlan(BaseModel):
    """What the fix changes and why, in one plain sentence, and the edits that do it."""

    summary: str = Field(description="one plain sentence: what is changed and why")
    edits: list[Edit]


def edit_plan_schema() -> dict[str, Any]:
    """JSON schema for ``response_format={"type": "json_schema", ...}``.

    Hand-written rather than pydantic's, because grammar converters (llama.cpp) handle plain required
    properties best: every field is required, so the model always states both the line numbers and the
    anchor text, which `apply_edits` cross-checks.
    """
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": "one plain sentence: what is changed and why"},
            "edits": {
                "type": "array",
                "minItems": 1,
                "maxItems": 6,
                "items": {
                    "type": "object",
                    "properties": {
                        "start_line": {"type": "integer", "description": "first line to replace"},
                        "end_line": {"type": "integer", "description": "last line to replace (inclusive)"},
                        "anchor": {
                            "type": "string",
                            "description": "the current text of start_line..end_line, copied from the excerpt",
                        },
                        "replacement": {"type": "string", "description": "the new text of those lines"},
                    },
                    "required": ["start_line", "end_line", "anchor", "replacement"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["summary", "edits"],
        "additionalProperties": False,
    }


# ----------------------------------------------------------------------------------------- helpers
def _squash(text: str) -> str:
    """Whitespace-insensitive form of a line: what it says, not how it is laid out."""
    return " ".join(text.split())


def _code(line: str) -> str:
    """A line without its trailing `# comment` (a `#` inside a string stays): models copying a line
    often leave its comment out. A line that is only a comment is kept whole."""
    quote: str | None = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif line.startswith(quote, i):
                i += len(quote) - 1
                quote = None
        elif ch in "'\"":
            quote = line[i : i + 3] if line[i : i + 3] in ("'''", '"""') else ch
            i += len(quote) - 1
        elif ch == "#":
            code = line[:i].rstrip()
            return code if code.strip() else line
        i += 1
    return line


def _quote(text: str) -> str:
    text = _squash(text)
    return json.dumps(text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + "...")


def _reindent(replacement: list[str], first: str, floor: str) -> list[str]:
    """Shift the replacement so its first line has the indentation `first`, keeping its inner structure.

    Models copy the first line of a block faithfully and lose the indentation of the rest (or the other
    way round): the shift is the one that puts the first line where the replaced line was, and no line
    ends up left of `floor` (the replaced block's own indentation), which would silently close a loop.
    """
    text = [line for line in replacement if line.strip()]
    if not text:
        return replacement
    current = _leading_ws(text[0])
    out = []
    for line in replacement:
        if not line.strip():
            out.append("")
            continue
        own = _leading_ws(line)
        body = line[len(own) :]
        # A line less indented than the first keeps its offset from the block's floor.
        indent = first + own[len(current) :] if own.startswith(current) else floor + own
        if len(indent) < len(floor):
            indent = floor
        out.append(indent + body)
    return out


def _anchor_lines(anchor: str) -> list[str]:
    lines = anchor.strip("\n").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return [_strip_number(line) for line in lines]


_NUMBERED_RE = re.compile(r"^\s*>?\s*\d+\s*[|:]\s?")


def _strip_number(line: str) -> str:
    """Models copy excerpt lines with their ``  34 | `` prefix; the prefix is not part of the code."""
    return _NUMBERED_RE.sub("", line, count=1)


def _window_score(hay: list[str], start: int, needle: list[str]) -> float:
    """Mean similarity of `needle` lines against the script lines from `start` (whitespace squashed)."""
    total = 0.0
    for offset, want in enumerate(needle):
        got = _squash(hay[start + offset])
        want = _squash(want)
        if got == want:
            total += 1.0
        elif not got or not want:
            total += 0.0
        else:
            total += difflib.SequenceMatcher(None, got, want, autojunk=False).ratio()
    return total / len(needle)


def locate_anchor(
    lines: list[str], anchor: str, *, near: tuple[int, int] | None = None, label: str = "anchor"
) -> tuple[int, int]:
    """(start, end) 0-based inclusive of the script lines `anchor` quotes, or PatchError saying why not.

    Exact matches (whitespace squashed) win over near matches; among near matches the best wins only when
    it is clearly better than the next. `near` (0-based start, end) limits the first search to around the
    lines the model named, so an anchor repeated elsewhere in the script is still placed.
    """
    needle = _anchor_lines(anchor)
    if not needle:
        raise PatchError(f"{label} is empty: copy the lines to replace from the excerpt")
    k = len(needle)
    if k > len(lines):
        raise PatchError(f"{label} has {k} lines but the script has only {len(lines)}")
    regions: list[range] = []
    if near is not None:
        lo = max(0, near[0] - ANCHOR_SEARCH_RADIUS)
        hi = min(len(lines) - k, near[1] + ANCHOR_SEARCH_RADIUS)
        regions.append(range(lo, hi + 1))
    regions.append(range(0, len(lines) - k + 1))
    wanted = [_squash(_code(line)) for line in needle]
    squashed = [_squash(_code(line)) for line in lines]
    scored: list[tuple[float, int]] = []
    for region in regions:
        exact = [i for i in region if squashed[i : i + k] == wanted]
        if len(exact) == 1:
            return exact[0], exact[0] + k - 1
        if len(exact) > 1:
            if near is not None and region is regions[0]:
                best = min(exact, key=lambda i: abs(i - near[0]))
                if sum(1 for i in exact if abs(i - near[0]) == abs(best - near[0])) == 1:
                    return best, best + k - 1
            where = " and ".join(str(i + 1) for i in exact[:3])
            raise PatchError(
                f"{label} {_quote(needle[0])} matches lines {where} equally; give the line numbers of the "
                "right place or quote more lines"
            )
        scored = sorted(((_window_score(lines, i, needle), i) for i in region), reverse=True)
        good = [(score, i) for score, i in scored if score >= NEAR_MATCH_RATIO]
        if good:
            best_score, best = good[0]
            rivals = [
                i for score, i in good[1:] if best_score - score < AMBIGUITY_MARGIN and abs(i - best) >= k
            ]
            if not rivals:
                return best, best + k - 1
            where = " and ".join(str(i + 1) for i in sorted([best, *rivals][:3]))
            raise PatchError(
                f"{label} {_quote(needle[0])} matches lines {where} about equally; give the line numbers "
                "of the right place or quote more lines"
            )
    closest = ", ".join(
        f"line {i + 1} {_quote(lines[i])} ({score:.0%} similar)" for score, i in scored[:CANDIDATES_SHOWN]
    )
    raise PatchError(f"{label} {_quote(needle[0])} is not in the script; closest: {closest}")


# ------------------------------------------------------------------------------------------ applying
def _resolve(lines: list[str], edit: Edit, number: int) -> tuple[int, int]:
    """0-based (start, end) of the lines `edit` replaces; end = start - 1 for an insertion."""
    label = f"edit {number}"
    count = len(lines)
    has_range = edit.start_line is not None
    anchor = edit.anchor if edit.anchor and edit.anchor.strip() else None
    if not has_range and anchor is None:
        raise PatchError(f"{label} has neither start_line/end_line nor an anchor: say which lines to replace")
    if has_range:
        start = int(edit.start_line)  # type: ignore[arg-type]
        end = int(edit.end_line) if edit.end_line is not None else start
        if start < 1 or start > count + 1:
            raise PatchError(f"{label}: start_line {start} is outside the script (lines 1-{count})")
        if end < start - 1 or end > count:
            raise PatchError(
                f"{label}: end_line {end} does not fit start_line {start} (script has {count} lines)"
            )
        start0, end0 = start - 1, end - 1
        if anchor is None:
            return start0, end0
        needle = _anchor_lines(anchor)
        if end0 < start0:  # an insertion: the anchor, if any, quotes the line it goes before
            if start0 < count and _window_score(lines, start0, needle[:1]) >= NEAR_MATCH_RATIO:
                return start0, end0
        elif end0 - start0 + 1 == len(needle) and _window_score(lines, start0, needle) >= NEAR_MATCH_RATIO:
            return start0, end0
        elif len(needle) < end0 - start0 + 1 and any(
            _window_score(lines, i, needle) >= NEAR_MATCH_RATIO for i in range(start0, end0 - len(needle) + 2)
        ):
            return start0, end0  # the anchor quotes part of the stated range: the range holds
        try:
            found = locate_anchor(lines, anchor, near=(start0, max(start0, end0)), label=f"{label}: anchor")
        except PatchError as exc:
            shown = _quote(lines[start0]) if start0 < count else "(end of script)"
            raise PatchError(f"{exc}; line {start} is {shown}") from None
        if end0 < start0:
            return found[0], found[0] - 1
        return found
    return locate_anchor(lines, anchor, label=f"{label}: anchor")  # type: ignore[arg-type]


def _new_lines(lines: list[str], start: int, end: int, replacement: str) -> list[str]:
    new = replacement.split("\n")
    if replacement.endswith("\n"):
        new = new[:-1]
    new = [line.rstrip("\r") for line in new]
    if not replacement.strip():
        return []
    if end >= start:
        block = lines[start : end + 1]
        first_line = next((line for line in block if line.strip()), "")
        return _reindent(new, _leading_ws(first_line), _common_indent(block))
    else:  # insertion: indent like the line it goes before, or the one above at the end of a block
        after = next((line for line in lines[start:] if line.strip()), "")
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        target = _leading_ws(after) if after else _leading_ws(before)
        if before.rstrip().endswith(":") and len(_leading_ws(after)) <= len(_leading_ws(before)):
            target = _leading_ws(before) + "    "
    return _reindent(new, target, target)


def _check_overlaps(spans: list[tuple[int, int, int, Edit]]) -> None:
    """Two edits of the same line cannot both be right; an insertion inside a replaced range neither."""
    for i, (s1, e1, n1, _) in enumerate(spans):
        for s2, e2, n2, _ in spans[i + 1 :]:
            both_replace = e1 >= s1 and e2 >= s2
            clash = (
                (both_replace and s1 <= e2 and s2 <= e1)
                or (e1 < s1 and e2 >= s2 and s2 < s1 <= e2)
                or (e2 < s2 and e1 >= s1 and s1 < s2 <= e1)
            )
            if clash:
                raise PatchError(
                    f"edits {n1} and {n2} overlap (lines {s1 + 1}-{max(s1, e1) + 1} and "
                    f"{s2 + 1}-{max(s2, e2) + 1}); merge them into one edit"
                )


def apply_edits(script: str, plan: EditPlan, *, name: str = "train.py") -> str:
    """`script` with every edit of `plan` applied, or PatchError and nothing changed.

    All edits refer to the script as it was shown (the original line numbers), so they are resolved
    first, checked for overlap, and applied bottom-up.
    """
    if not plan.edits:
        raise PatchError(
            "the answer has no edits: give at least one {start_line, end_line, anchor, replacement}"
        )
    lines = script.splitlines()
    spans = [
        (*_resolve(lines, edit, number), number, edit) for number, edit in enumerate(plan.edits, start=1)
    ]
    _check_overlaps(spans)
    new = list(lines)
    # Bottom-up, so earlier line numbers stay valid; at one start, a replacement before an insertion.
    for start, end, _, edit in sorted(spans, key=lambda s: (s[0], s[1] >= s[0], s[2]), reverse=True):
        new[start : end + 1] = _new_lines(lines, start, end, edit.replacement)
    newline = "\r\n" if "\r\n" in script else "\n"
    text = newline.join(new)
    if new and (script.endswith(("\n", "\r")) or not script):
        text += newline
    if not text.strip():
        raise PatchError(f"the edits leave {name} empty")
    if new == lines:
        raise PatchError(f"the edits change nothing in {name}: the replacement equals the current lines")
    return text


# ------------------------------------------------------------------------------------------- answers
_FENCED_JSON_RE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)


def _json_candidates(text: str) -> list[str]:
    out = [match.group(1) for match in _FENCED_JSON_RE.finditer(text)]
    first, last = text.find("{"), text.rfind("}")
    if first != -1 and last > first:
        out.append(text[first : last + 1])
    return out


def _plan_from_dict(data: Any) -> EditPlan:
    if isinstance(data, list):  # a bare list of edits
        data = {"summary": "", "edits": data}
    if isinstance(data, dict) and "edits" not in data and "replacement" in data:
        data = {"summary": str(data.get("summary", "")), "edits": [data]}
    try:
        return EditPlan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise PatchError(
            f"the answer is not a valid edit plan: {where or 'answer'}: {first.get('msg')}"
        ) from None


def parse_plan(answer: str) -> EditPlan | None:
    """The edit plan in a text answer (raw or fenced JSON), None when the answer holds no JSON object.

    A JSON object that is there but malformed for a plan raises PatchError with the field at fault.
    """
    seen_json: PatchError | None = None
    for candidate in _json_candidates(answer):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError as exc:
            seen_json = seen_json or PatchError(
                f"the answer's JSON does not parse: {exc.msg} at char {exc.pos}"
            )
            continue
        if isinstance(data, (dict, list)):
            return _plan_from_dict(data)
    if seen_json is not None and not _looks_like_patch(answer):
        raise seen_json
    return None


def _looks_like_patch(text: str) -> bool:
    return "<<<<<<<" in text or "\n@@" in text or text.startswith("@@")


def apply_answer(
    script: str, answer: EditPlan | dict[str, Any] | str, *, name: str = "train.py"
) -> tuple[str, str]:
    """(new_script, summary) from any answer form the fix loop accepts, or PatchError saying why not.

    Accepted: a structured plan, JSON text of a plan (fenced or not), and the fallbacks for models
    without structured output: SEARCH/REPLACE blocks or a unified diff (summary = the prose before it).
    """
    if isinstance(answer, EditPlan):
        return apply_edits(script, answer, name=name), answer.summary.strip()
    if isinstance(answer, dict):
        plan = _plan_from_dict(answer)
        return apply_edits(script, plan, name=name), plan.summary.strip()
    text = str(answer)
    if not _looks_like_patch(text):
        plan = parse_plan(text)
        if plan is not None:
            return apply_edits(script, plan, name=name), plan.summary.strip()
    try:
        patch = extract_patch(text)
    except PatchError:
        raise PatchError(
            "no edit plan found in the answer: reply with JSON {summary, edits: [{start_line, end_line, "
            "anchor, replacement}]}"
        ) from None
    return apply_patch(script, patch, name=name), _prose_summary(text)


def _prose_summary(text: str) -> str:
    """The first prose sentence before a fallback patch, as its summary."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("```", "<<<<<<<", "---", "+++", "@@", "diff ")):
            if stripped.startswith(("<<<<<<<", "---", "@@", "diff ")):
                break
            continue
        return stripped[:300]
    return ""
