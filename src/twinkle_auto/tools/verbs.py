"""The words that ask for each action on a run (and on the chart's steps), for ToolArgs.ASKED_BY.

Why this exists: pause, resume and stop are one family, and a small model mixes them up ("pause it"
answered with resume_training, "put it on hold" with stop_training, "carry on with the training" with
start_training, "zoom all the way out" with a zoom to steps 0-0). Which of them the person asked for
is in their words, and the words for each are few and plain; a call that does the opposite of the one
action asked for is sent back before it runs (graphs/chat/grounding.py). Only clear verbs are listed:
a request whose words ask for two actions, or for none of these, is left to the model.
"""

from __future__ import annotations

RUN_ACTIONS: dict[str, tuple[str, ...]] = {
    "pause_training": ("pause", "on hold", "hold off", "hold it", "hold the", "suspend", "freeze"),
    "resume_training": ("resume", "continue", "unpause", "carry on", "go on", "pick … up"),
    "stop_training": ("stop", "kill", "terminate", "cancel", "abort", "end", "for good"),
}
"""Tool name -> the words that ask for it ("…" stands for up to three words: "pick grpo-math back up").
"restart" is neither resume nor start: it may mean either; bare "hold" is left out ("hold on, …")."""

START_WORDS = ("start", "launch", "kick off", "begin", "new run", "fine-tune", "finetune", "train")
"""Words that ask for a new run (start_training)."""

SERVE_WORDS = ("serve", "serving", "host")
"""Words that ask for a model to be served (start_server). "server" is not one: "a GRPO run on the
server" asks for a run."""

STARTS_AND_RUN_ACTIONS: dict[str, tuple[str, ...]] = {
    **RUN_ACTIONS,
    "start_training": START_WORDS,
    "start_server": SERVE_WORDS,
}
"""The run actions, starting a new run and serving a model: a new run is never what "carry on",
"pause" or "serve this model" asks for."""

CHART_ACTIONS: dict[str, tuple[str, ...]] = {
    "reset_chart": (
        "zoom … out",
        "unzoom",
        "reset",
        "undo",
        "all the steps",
        "all steps",
        "every step",
        "whole run",
        "full range",
    ),
    "zoom_chart": ("zoom in", "narrow", "only show", "just show", "between", "steps … to", "last … steps"),
}
"""The words that ask for each change of the chart's steps: a zoom is never what "zoom out" or "show
every step" asks for."""
