"""Recipes for library API changes: keywords renamed or moved into a config, a tokenizer without a
pad token."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from twinkle_auto.monitor.known_fixes.base import (
    Catalogue,
    Crash,
    KnownFix,
    SourceText,
    callee_name,
    collector,
    frame_statements,
    line_of,
)

RECIPES: Catalogue = []
"""This module's recipes, in the order they are tried."""
recipe = collector(RECIPES)


# ------------------------------------------------------------------------- renamed keywords
@dataclass(frozen=True)
class KeywordRename:
    """`old=` became `new=` in calls whose callee name matches `callee` (a regex)."""

    old: str
    new: str
    callee: str
    source: str


KEYWORD_RENAMES: tuple[KeywordRename, ...] = (
    # transformers 4.46 deprecated Trainer(tokenizer=) for processing_class=, v5 and TRL removed it.
    KeywordRename(
        "tokenizer", "processing_class", r"Trainer$", "https://github.com/huggingface/trl/issues/6168"
    ),
    # transformers 4.41 renamed TrainingArguments(evaluation_strategy=) to eval_strategy=, v4.46 removed it.
    KeywordRename(
        "evaluation_strategy",
        "eval_strategy",
        r"(?:TrainingArguments|Config)$",
        "https://github.com/huggingface/transformers/issues/7974",
    ),
    # TRL renamed SFTConfig(max_seq_length=) to max_length= (the second error in the same report).
    KeywordRename(
        "max_seq_length", "max_length", r"^SFTConfig$", "https://github.com/huggingface/trl/issues/6168"
    ),
)


@dataclass(frozen=True)
class KeywordMove:
    """Keywords that moved from a trainer's constructor into its config object (the `args=` value)."""

    keywords: frozenset[str]
    callee: str
    config_callee: str
    source: str


KEYWORD_MOVES: tuple[KeywordMove, ...] = (
    # TRL moved dataset_text_field, max_seq_length, packing, dataset_num_proc... from SFTTrainer to SFTConfig.
    KeywordMove(
        frozenset(
            {
                "dataset_text_field",
                "max_seq_length",
                "packing",
                "dataset_num_proc",
                "dataset_kwargs",
                "dataset_batch_size",
            }
        ),
        r"^SFTTrainer$",
        r"^SFTConfig$",
        "https://github.com/NVIDIA/workbench-example-llama3-finetune/issues/1 "
        "(also https://github.com/unslothai/unsloth/issues/2010)",
    ),
)

_UNEXPECTED_KW_RE = re.compile(r"(?:(?P<qual>[\w.]+)\(\) )?got an unexpected keyword argument '(?P<kw>\w+)'")


def _calls_with_keyword(crash: Crash, keyword: str) -> list[tuple[ast.Call, ast.keyword]]:
    """Calls passing `keyword=`: those at a traceback frame if any frame has one, else all in the script."""
    found = [
        (node, kw)
        for node in ast.walk(crash.tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == keyword
    ]
    at_frames = []
    for stmt in frame_statements(crash):
        span = range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
        at_frames.extend(pair for pair in found if pair[1].lineno in span and pair not in at_frames)
        if at_frames:
            return at_frames
    return found if not crash.frames else []


@recipe("renamed keyword")
def recipe_renamed_keyword(crash: Crash) -> KnownFix | None:
    """`X() got an unexpected keyword argument 'k'` where k is a known rename and the call is in the script."""
    match = _UNEXPECTED_KW_RE.search(crash.error)
    if not match:
        return None
    keyword = match.group("kw")
    for rename in KEYWORD_RENAMES:
        if rename.old != keyword:
            continue
        calls = [
            (c, k) for c, k in _calls_with_keyword(crash, keyword) if re.search(rename.callee, callee_name(c))
        ]
        if len(calls) != 1:
            continue  # none: not this library's call; several: which one failed is not known
        call, kw = calls[0]
        if any(other.arg == rename.new for other in call.keywords):
            continue  # both spellings given: a person must choose
        text = SourceText(crash.script)
        start = text.offset(kw.lineno, kw.col_offset)
        if crash.script[start : start + len(keyword)] != keyword:
            continue
        text.replace(start, start + len(keyword), rename.new)
        return KnownFix(
            name="renamed keyword",
            source=rename.source,
            summary=(
                f"Renamed the keyword {keyword}= to {rename.new}= in the {callee_name(call)}(...) call on line "
                f"{kw.lineno}, because the library renamed it and no longer accepts the old name."
            ),
            new_script=text.result(),
        )
    for move in KEYWORD_MOVES:
        if keyword not in move.keywords:
            continue
        fix = _move_keyword(crash, keyword, move)
        if fix is not None:
            return fix
    return None


def _move_keyword(crash: Crash, keyword: str, move: KeywordMove) -> KnownFix | None:
    calls = [(c, k) for c, k in _calls_with_keyword(crash, keyword) if re.search(move.callee, callee_name(c))]
    if len(calls) != 1:
        return None
    call, kw = calls[0]
    args = next((k.value for k in call.keywords if k.arg == "args"), None)
    config = _config_call(crash.tree, args, move.config_callee, before=call.lineno)
    if config is None or any(k.arg == keyword for k in config.keywords):
        return None
    text = SourceText(crash.script)
    value = ast.get_source_segment(crash.script, kw.value)
    if value is None:
        return None
    _delete_keyword(text, kw)
    last = ([*config.args, *config.keywords] or [None])[-1]
    if last is None:
        close = text.end(config) - 1
        text.replace(close, close, f"{keyword}={value}")
    else:
        at = text.end(last.value if isinstance(last, ast.keyword) else last)
        text.replace(at, at, f", {keyword}={value}")
    return KnownFix(
        name="keyword moved to config",
        source=move.source,
        summary=(
            f"Moved {keyword}= from the {callee_name(call)}(...) call on line {kw.lineno} into the "
            f"{callee_name(config)}(...) on line {config.lineno}, where the library now expects it."
        ),
        new_script=text.result(),
    )


def _config_call(tree: ast.Module, args: ast.AST | None, callee: str, *, before: int) -> ast.Call | None:
    """The config constructor call behind a trainer's `args=`: inline, or the latest assignment of the name."""
    if isinstance(args, ast.Call):
        return args if re.search(callee, callee_name(args)) else None
    if not isinstance(args, ast.Name):
        return None
    assigned = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and node.lineno < before
        and any(isinstance(t, ast.Name) and t.id == args.id for t in node.targets)
    ]
    if not assigned:
        return None
    latest = max(assigned, key=line_of)
    return latest if isinstance(latest, ast.Call) and re.search(callee, callee_name(latest)) else None


def _delete_keyword(text: SourceText, kw: ast.keyword) -> None:
    """Remove `kw=value` and one adjoining comma; a keyword alone on its line takes the line with it."""
    start, end = text.start(kw), text.end(kw.value)
    script = text.script
    after = end
    while after < len(script) and script[after] in " \t":
        after += 1
    if after < len(script) and script[after] == ",":
        end = after + 1
        while end < len(script) and script[end] in " \t":
            end += 1
    else:
        before = start
        while before > 0 and script[before - 1] in " \t\n":
            before -= 1
        if before > 0 and script[before - 1] == ",":
            start = before - 1
    line_start = script.rfind("\n", 0, start) + 1
    if not script[line_start:start].strip() and end < len(script) and script[end] == "\n":
        start, end = line_start, end + 1
    text.replace(start, end, "")


# ------------------------------------------------------------------------------- pad token
# transformers collators and torch's pad_sequence need a pad token; causal LM tokenizers (Llama, GPT-2)
# ship without one. https://github.com/jianzhnie/LLamaTuner/issues/96, https://github.com/huggingface/trl/issues/1152
_PAD_ERROR_RE = re.compile(
    r"padding_value'? \(position \d+\) must be \w+, not NoneType"
    r"|Asking to pad but the tokenizer does not have a padding token"
    r"|tokenizer does not have a pad(?:ding)? token"
    r"|pad_token(?:_id)? is None"
)
_TOKENIZER_NAME_RE = re.compile(r"tok", re.IGNORECASE)


@recipe("missing pad token")
def recipe_pad_token(crash: Crash) -> KnownFix | None:
    """Set pad_token = eos_token right after the tokenizer is created, when the script never sets it."""
    if not _PAD_ERROR_RE.search(crash.error) or "pad_token" in _assigned_attributes(crash.tree):
        return None
    creations = [
        node
        for node in ast.walk(crash.tree)
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], (ast.Name, ast.Attribute))
        and isinstance(node.value, ast.Call)
        and (
            "Tokenizer" in callee_name(node.value)
            or (
                callee_name(node.value) == "from_pretrained"
                and _TOKENIZER_NAME_RE.search(ast.unparse(node.targets[0]).rsplit(".", 1)[-1])
            )
        )
    ]
    names = {ast.unparse(node.targets[0]) for node in creations}
    if len(names) != 1:
        return None  # no tokenizer made here, or several: which one pads is not known
    name = names.pop()
    text = SourceText(crash.script)
    for node in creations:
        lines = crash.script.splitlines(keepends=True)
        line = lines[node.lineno - 1]
        indent = line[: len(line) - len(line.lstrip())]
        at = text.starts[node.end_lineno or node.lineno]
        newline = "" if at == 0 or crash.script[at - 1] == "\n" else "\n"
        text.replace(
            at,
            at,
            f"{newline}{indent}if {name}.pad_token is None:\n{indent}    {name}.pad_token = {name}.eos_token\n",
        )
    where = ", ".join(str(node.end_lineno) for node in creations)
    return KnownFix(
        name="missing pad token",
        source="https://github.com/jianzhnie/LLamaTuner/issues/96",
        summary=(
            f"Set {name}.pad_token to its eos_token after the tokenizer is created (line {where}), because "
            "the tokenizer has no pad token and padding needs one."
        ),
        new_script=text.result(),
    )


def _assigned_attributes(tree: ast.Module) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(t.attr for t in targets if isinstance(t, ast.Attribute))
        if isinstance(node, ast.Call) and callee_name(node) == "add_special_tokens":
            out.add("pad_token")  # tokenizer.add_special_tokens({"pad_token": ...})
    return out
