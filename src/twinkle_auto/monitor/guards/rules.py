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
