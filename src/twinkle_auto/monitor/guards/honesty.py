"""Honesty guard (filled in below)."""

from __future__ import annotations

from twinkle_auto.monitor.guards.rules import RuleSet

rules = RuleSet("honesty")
