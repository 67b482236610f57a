"""Guards that judge an LLM's patch to a training script before anything on disk changes.

A fix is code an LLM wrote from text an untrusted process printed, so it is judged twice, by reading it
with `ast` (never by running it):

* what the patched script can *do* that the original could not (`capability`: new imports, processes,
  network, deletions, permission and environment changes, dynamic code, writes outside the run folder);
* whether it makes the crash vanish instead of fixing it (`honesty`: the failing computation deleted or
  emptied, the input data changed, the script's work replaced; `gaming`: swallowed errors, early exits,
  cut loops, dropped records) or breaks what twinkle-auto needs from any script (`structure`).

`review_patch` returns every finding; `check_patch` is the same as a list of one-line messages (empty
means the patch is fine); `script_capabilities` lists what a whole new script can do, for approving a
script proposed in the chat. All are pure functions: no I/O, no LLM.

Modules: `capability` (family "unsafe", with `catalog` saying what counts, `resolve` seeing through
aliases and obfuscation, `paths` deciding what is inside the run folder), `honesty`, `gaming` (errors
swallowed, early exits, constant results, dropped records, dead conditions) and `work` (steps, epochs,
data and loop bounds cut), `structure`; `ast_util`, `folding` (literal strings however spelled)
and `rules` are shared. Rule ids are in `RULES`; a
finding's `rule` names the finer capability (`process-call`, `network`, `write-outside-run`...).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from twinkle_auto.monitor.guards import capability, gaming, honesty, structure, work
from twinkle_auto.monitor.guards.ast_util import parse
from twinkle_auto.monitor.guards.findings import FAMILIES, GuardFinding, PatchReview
from twinkle_auto.monitor.guards.rules import Rule, Scripts

__all__ = [
    "FAMILIES",
    "RULES",
    "GuardFinding",
    "PatchReview",
    "check_patch",
    "review_patch",
    "script_capabilities",
]

RULES: list[tuple[str, Rule]] = [
    *structure.parses.rules,
    *capability.rules.rules,
    *honesty.rules.rules,
    *gaming.rules.rules,
    *work.rules.rules,
    *structure.rules.rules,
]
"""(rule id, rule) in report order: parse first (nothing else can judge a script that does not parse),
then what the patch lets the script do, then how it could hide the crash, then what any script keeps."""


def review_patch(
    old: str,
    new: str,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    failing_lines: Iterable[int] = (),
) -> PatchReview:
    """Every finding about replacing `old` by `new`.

    `run_dir` is the run folder (a write is safe only when its path is provably inside it);
    `failing_lines` are the line numbers, in `old`, of the traceback frames that are in the script: the
    honesty rules refuse a patch that deletes or empties the computation on them.
    """
    lines = frozenset(int(n) for n in failing_lines if int(n) > 0)
    try:
        scripts = Scripts.of(old, new, run_dir=run_dir, failing_lines=lines)
        findings: list[GuardFinding] = []
        for _, rule in RULES:
            findings.extend(rule(scripts))
    except RecursionError:  # absurdly deep nesting: refuse, never wave through what could not be read
        return PatchReview(
            (GuardFinding("structure", "parse", "patched script is nested too deeply to review"),)
        )
    return PatchReview(findings=tuple(findings))


def check_patch(old: str, new: str) -> list[str]:
    """Every reason to refuse replacing `old` by `new`, one line each; empty means the patch is fine."""
    return review_patch(old, new).messages()


def script_capabilities(source: str, *, run_dir: str | os.PathLike[str] | None = None) -> list[GuardFinding]:
    """What a whole script can do (processes, network, deletions, dynamic code, writes, imports...).

    For approving a script proposed in the chat: nothing is compared, everything is shown. A script that
    does not parse gets one `structure` finding saying why.
    """
    try:
        tree, error = parse(source)
        if tree is None:
            return [GuardFinding("structure", "parse", error or "script does not parse", None)]
        return capability.capabilities(tree, run_dir=os.fspath(run_dir) if run_dir is not None else None)
    except RecursionError:
        return [GuardFinding("structure", "parse", "script is nested too deeply to review")]
