"""What twinkle-auto needs from any training script, kept by every patch.

The patched script parses; every loop that trained still exists; `trainer.train()` is still called; the
TrainingRuntime calls that let twinkle-auto watch the run and the resume logic that lets a relaunch
continue are still there; and the patch is a patch, not a rewrite that nobody can review.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections import Counter
from collections.abc import Iterable

from twinkle_auto.monitor.guards.ast_util import (
    RESUME_KEYWORDS,
    call_name,
    index,
    receiver,
    trainer_train_calls,
    training_loops,
)
from twinkle_auto.monitor.guards.findings import GuardFinding
from twinkle_auto.monitor.guards.rules import RuleSet, Scripts

RUNTIME_CONSTRUCTOR = "TrainingRuntime"
RUNTIME_METHODS = ("start", "log_metrics", "finish", "register_graceful_shutdown")
"""What twinkle-auto needs from the script to watch it (get_resume_info is resume logic)."""
RESUME_CALLS = ("get_resume_info", "load_state_dict", "load_checkpoint")
RESUME_NAMES = ("skip_consumed_samples",)
"""Resume logic, with `torch.load(` and `.load(` on a receiver named like a model."""

MAX_CHANGED_FRACTION = 0.5
"""A patch may change at most this share of the old script's non-blank lines..."""
MIN_REWRITE_LINES = 6
"""...unless it changes fewer lines than this (tiny scripts would otherwise refuse any fix)."""

parses = RuleSet("structure")
"""Reported first: without a tree no other rule can judge the patch."""
rules = RuleSet("structure")
"""Reported after the unsafe, honesty and gaming families."""


@parses.rule("parse", needs_old=False, needs_new=False)
def rule_new_script_parses(s: Scripts) -> list[GuardFinding]:
    """A script that does not parse would crash at once; the other rules need its tree anyway."""
    if s.new_error is None:
        return []
    match = re.search(r"at line (\d+)", s.new_error)
    return [parses.finding("parse", s.new_error, int(match.group(1)) if match else None)]


@rules.rule("loop-kept")
def rule_training_loop_kept(s: Scripts) -> list[GuardFinding]:
    """Every loop that trains in the old script still has a counterpart in the new one."""
    assert s.old_tree is not None and s.new_tree is not None
    old_loops, new_loops = training_loops(s.old_tree), training_loops(s.new_tree)
    if len(new_loops) >= len(old_loops):
        return []
    lines = ", ".join(str(loop.lineno) for loop in old_loops)
    return [
        rules.finding(
            "loop-kept",
            f"training loop removed: the old script has {len(old_loops)} loop(s) that train (line {lines}), "
            f"the patched one {len(new_loops)}",
        )
    ]


@rules.rule("trainer-train-kept")
def rule_trainer_train_kept(s: Scripts) -> list[GuardFinding]:
    """HF/TRL scripts have no loop of their own: the `trainer.train()` call is the training."""
    assert s.old_tree is not None and s.new_tree is not None
    old_calls, new_calls = trainer_train_calls(s.old_tree), trainer_train_calls(s.new_tree)
    if len(new_calls) >= len(old_calls):
        return []
    return [
        rules.finding(
            "trainer-train-kept",
            f"trainer.train() call removed (old line {old_calls[0].lineno}); the patch must not skip training",
        )
    ]


def _runtime_counts(tree: ast.AST) -> Counter[str]:
    counts: Counter[str] = Counter()
    for call in index(tree).of_type(ast.Call):
        name = call_name(call)
        if name == RUNTIME_CONSTRUCTOR:
            counts[f"{RUNTIME_CONSTRUCTOR}("] += 1
        elif isinstance(call.func, ast.Attribute) and name in RUNTIME_METHODS:
            counts[f".{name}("] += 1
    return counts


def _resume_counts(tree: ast.AST) -> Counter[str]:
    counts: Counter[str] = Counter()
    for node in index(tree).nodes:
        if isinstance(node, ast.Call):
            name, base = call_name(node), receiver(node)
            if name in RESUME_CALLS:
                counts[f"{name}("] += 1
            elif name == "load" and base == "torch":
                counts["torch.load("] += 1
            elif name == "load" and "model" in base.rsplit(".", 1)[-1].lower():
                counts[f"{base}.load("] += 1
        elif isinstance(node, ast.keyword) and node.arg in RESUME_KEYWORDS:
            counts[f"{node.arg}="] += 1
        elif (identifier := _identifier(node)) in RESUME_NAMES:
            counts[identifier] += 1
    return counts


def _identifier(node: ast.AST) -> str | None:
    """The name a Name, Attribute or keyword node carries."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.keyword):
        return node.arg
    return None


def _strip_comments(source: str) -> str:
    return "\n".join(re.sub(r"#.*", "", line) for line in source.splitlines())


def _text_counts(source: str, labels: Iterable[str]) -> Counter[str]:
    """Fallback for an old script that cannot be parsed even leniently: count the labels as text."""
    text = _strip_comments(source)
    counts: Counter[str] = Counter()
    for label in labels:
        bare = label.rstrip("(=")
        pattern = re.escape(bare.lstrip(".")) + (r"\s*\(" if label.endswith("(") else "")
        pattern = (r"\." if label.startswith(".") else r"\b") + pattern
        if label.endswith("="):
            pattern += r"\s*=(?!=)"
        counts[label] = len(re.findall(pattern, text))
    return counts


def _dropped(old: Counter[str], new: Counter[str]) -> list[tuple[str, int, int]]:
    return [(label, count, new.get(label, 0)) for label, count in old.items() if new.get(label, 0) < count]


@rules.rule("runtime-calls-kept", needs_old=False)
def rule_runtime_calls_kept(s: Scripts) -> list[GuardFinding]:
    """Without TrainingRuntime's calls twinkle-auto goes blind: no metrics, no status, no stop."""
    assert s.new_tree is not None
    if s.old_tree is not None:
        old, new = _runtime_counts(s.old_tree), _runtime_counts(s.new_tree)
    else:
        labels = [f"{RUNTIME_CONSTRUCTOR}(", *(f".{m}(" for m in RUNTIME_METHODS)]
        old, new = _text_counts(s.old, labels), _text_counts(s.new, labels)
    return [
        rules.finding(
            "runtime-calls-kept",
            f"TrainingRuntime call {label} removed ({before} in the old script, {after} in the patched one); "
            "twinkle-auto needs it to watch the run",
        )
        for label, before, after in _dropped(old, new)
    ]


@rules.rule("resume-kept", needs_old=False)
def rule_resume_logic_kept(s: Scripts) -> list[GuardFinding]:
    """Without its resume logic a relaunched fix would silently start training over from step 0."""
    assert s.new_tree is not None
    if s.old_tree is not None:
        old, new = _resume_counts(s.old_tree), _resume_counts(s.new_tree)
    else:
        labels = [
            *(f"{c}(" for c in RESUME_CALLS),
            "torch.load(",
            *(f"{k}=" for k in RESUME_KEYWORDS),
            *RESUME_NAMES,
        ]
        old, new = _text_counts(s.old, labels), _text_counts(s.new, labels)
    return [
        rules.finding(
            "resume-kept",
            f"resume logic removed: {label} ({before} in the old script, {after} in the patched one); "
            "a relaunch would start over",
        )
        for label, before, after in _dropped(old, new)
    ]


@rules.rule("minimal-patch", needs_old=False, needs_new=False)
def rule_patch_is_minimal(s: Scripts) -> list[GuardFinding]:
    """A rewrite cannot be reviewed and loses what the LLM did not copy; ask for a patch instead."""
    old = [line.rstrip() for line in s.old_lines if line.strip()]
    new = [line.rstrip() for line in s.new_lines if line.strip()]
    if not old:
        return []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    changed = max(len(old) - kept, len(new) - kept)
    if changed < MIN_REWRITE_LINES or changed <= MAX_CHANGED_FRACTION * len(old):
        return []
    percent = min(100, round(100 * changed / len(old)))
    return [rules.finding("minimal-patch", f"patch rewrites {percent}% of the script; send a minimal patch")]
