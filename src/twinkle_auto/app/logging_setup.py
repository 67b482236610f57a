"""The assistant's own log: ./auto.log, rotated, never the console, never a secret.

The console belongs to the chat; a log line there would garble the prompt. An API key can reach a log
through a library's debug output (request headers, reprs of clients), so a filter masks every secret the
app was given before any handler writes a record.
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import re
import signal
from pathlib import Path
from typing import Any

LOG_FILE = "auto.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_-]{8,}|Bearer\s+[A-Za-z0-9._-]{8,})")


class SecretFilter(logging.Filter):
    """Masks given secrets and key-shaped strings in the final message of every record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4 and s != "not-needed"]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _KEYLIKE.sub("***", message)
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(
    verbose: bool = False, secrets: list[str] | None = None, path: str | Path = LOG_FILE
) -> None:
    """Route all logging to a rotating ./auto.log (DEBUG with --verbose, else INFO)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", delay=True
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(secrets or []))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    dump_stacks_on_signal(path)


_STACKS: list[Any] = []
"""The open file faulthandler writes to (it must stay open for as long as the signal may come)."""


def dump_stacks_on_signal(path: str | Path) -> None:
    """`kill -USR1 <pid>` appends every thread's stack to the log: a hung app is diagnosed without a
    debugger (the chat's quit waits on threads; which one is what this shows)."""
    sig = getattr(signal, "SIGUSR1", None)
    if sig is None:  # Windows
        return
    try:
        stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for faulthandler
    except OSError:
        return
    faulthandler.register(sig, file=stream, all_threads=True, chain=False)
    for old in _STACKS:
        old.close()
    _STACKS[:] = [stream]
