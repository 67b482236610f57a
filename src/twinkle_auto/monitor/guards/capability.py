"""Capability guard (filled in below)."""

from __future__ import annotations

from twinkle_auto.monitor.guards.rules import RuleSet

rules = RuleSet("unsafe")


def capabilities(tree, run_dir=None):  # noqa: ANN001, ANN201 - replaced below
    return []
