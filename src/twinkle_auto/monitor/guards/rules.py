"""The rule registry: what a rule sees (`Scripts`) and how rules are registered and run.

Each family module (capability, honesty, gaming, structure) owns a `RuleSet`; the package joins them in
report order. A rule is a pure function of the two scripts; it runs only when the trees it needs exist,
so a rule never sees a None tree.
"""

from __future__ import annotations

import ast
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from twinkle_auto.monitor.guards.ast_util import parse, parse_lenient, salvage
from twinkle_auto.monitor.guards.findings import GuardFinding


@dataclass
class Scripts:
    """The two versions a rule compares, parsed once; a tree is None when that version cannot be parsed."""

    old: str
    new: str
    old_tree: ast.Module | None
    new_tree: ast.Module | None
    new_error: str | None
    run_dir: str | None = None
    failing_lines: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        old: str,
        new: str,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        failing_lines: frozenset[int] = frozenset(),
    ) -> Scripts:
        new_tree, new_error = parse(new)
        return cls(
            old=old,
            new=new,
            old_tree=parse_lenient(old),
            new_tree=new_tree,
            new_error=new_error,
            run_dir=os.fspath(run_dir) if run_dir is not None else None,
            failing_lines=failing_lines,
        )

    @cached_property
    def old_capability_tree(self) -> ast.Module:
        """The old tree, or what can be salvaged of it: a capability the old script had is never "new"."""
        return self.old_tree if self.old_tree is not None else salvage(self.old)

    @cached_property
    def old_lines(self) -> list[str]:
        return self.old.splitlines()

    @cached_property
    def new_lines(self) -> list[str]:
        return self.new.splitlines()

    def new_lines_of(self, old_line: int) -> list[int]:
        """Where an old line (1-based) went: one line if kept, the replacing lines if edited, none if
        deleted. This is how a failing line in `old` is found again in `new`."""
        i = old_line - 1
        for tag, i1, i2, j1, j2 in self.line_opcodes:
            if i1 <= i < i2:
                if tag == "equal":
                    return [j1 + (i - i1) + 1]
                if tag == "replace":
                    return list(range(j1 + 1, j2 + 1))
                return []
        return []

    def line_kept(self, old_line: int) -> bool:
        """Whether an old line (1-based) is in the patched script unchanged (indentation aside)."""
        i = old_line - 1
        return any(tag == "equal" and i1 <= i < i2 for tag, i1, i2, _, _ in self.line_opcodes)

    @cached_property
    def failing_new_lines(self) -> frozenset[int]:
        """The failing lines as they are in the patched script."""
        return frozenset(line for old_line in self.failing_lines for line in self.new_lines_of(old_line))

    @cached_property
    def line_opcodes(self) -> list[tuple[str, int, int, int, int]]:
        """difflib opcodes from old lines to new lines (whitespace-insensitive), shared by the rules."""
        old = [line.strip() for line in self.old_lines]
        new = [line.strip() for line in self.new_lines]
        return difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()


Rule = Callable[[Scripts], list[GuardFinding]]


@dataclass
class RuleSet:
    """The rules of one family, in report order."""

    family: str
    rules: list[tuple[str, Rule]] = field(default_factory=list)

    def rule(self, name: str, *, needs_old: bool = True, needs_new: bool = True) -> Callable[[Rule], Rule]:
        """Register a rule named `name` (its findings carry that id unless they name a finer one)."""

        def register(fn: Rule) -> Rule:
            def guarded(scripts: Scripts) -> list[GuardFinding]:
                if (needs_new and scripts.new_tree is None) or (needs_old and scripts.old_tree is None):
                    return []
                return fn(scripts)

            guarded.__name__ = fn.__name__
            guarded.__doc__ = fn.__doc__
            self.rules.append((name, guarded))
            return fn

        return register

    def finding(self, rule: str, message: str, line: int | None = None) -> GuardFinding:
        return GuardFinding(family=self.family, rule=rule, message=message, line=line)
