"""What a guard reports: one finding per construct, grouped into a review of a whole patch."""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("unsafe", "honesty", "gaming", "structure")
"""Report order. `unsafe` is what the patched script could do that the original could not; `honesty`
and `gaming` are ways of making a crash vanish without fixing it; `structure` is what twinkle-auto needs
from any script (it parses, keeps its loop, its TrainingRuntime calls and its resume logic)."""


@dataclass(frozen=True)
class GuardFinding:
    """One reason to refuse (or, under approval, to warn about) a patch.

    `message` is one line naming the capability or the trick and where it is, e.g.
    "adds a call to os.system (line 12)"; `line` is that line in the patched script (None when the
    finding is about the script as a whole).
    """

    family: str
    rule: str
    message: str
    line: int | None = None


@dataclass(frozen=True)
class PatchReview:
    """Every finding about one patch, in report order."""

    findings: tuple[GuardFinding, ...]

    @property
    def ok(self) -> bool:
        """True when nothing was found: the patch may be applied without asking."""
        return not self.findings

    @property
    def unsafe(self) -> tuple[GuardFinding, ...]:
        """Findings about new capabilities: never applied without a person's approval."""
        return tuple(finding for finding in self.findings if finding.family == "unsafe")

    def family(self, name: str) -> tuple[GuardFinding, ...]:
        return tuple(finding for finding in self.findings if finding.family == name)

    def messages(self) -> list[str]:
        return [finding.message for finding in self.findings]
