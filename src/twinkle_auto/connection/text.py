"""Making text a training process wrote safe to show on a terminal.

output.log is untrusted: escape sequences in it can move the cursor, retitle the window, rewrite what is
on the screen (hiding a traceback, or faking a prompt) or, on some terminals, do worse. Everything we
show from a log goes through `printable` first — the `logs` command and the chat alike — so a terminal
only ever receives text, tabs and newlines.
"""

from __future__ import annotations

import re

_ANSI = re.compile(
    r"""
    \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?      # OSC ... BEL or ST (window titles, hyperlinks)
  | \x1b[P^_X][^\x1b]*(?:\x1b\\)?          # DCS / PM / APC / SOS strings ... ST
  | \x1b\[[0-?]*[ -/]*[@-~]                # CSI: colours, cursor moves, erase
  | \x1b[ -/]*[0-~]                        # other two-byte escapes (charset, keypad, reset)
  | \x9b[0-?]*[ -/]*[@-~]                  # 8-bit CSI
  | \x9d[^\x07\x9c]*(?:\x07|\x9c)?         # 8-bit OSC
    """,
    re.VERBOSE,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 controls except tab and newline, DEL, and the C1 range."""


def printable(text: str) -> str:
    """`text` without ANSI escape sequences and C0/C1 control characters (tab and newline kept).

    A carriage return is dropped too, so a progress bar's redraws read as one line of text.
    """
    return _CONTROLS.sub("", _ANSI.sub("", text))
