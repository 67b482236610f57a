"""The app's log: secrets masked, and SIGUSR1 writes every thread's stack into it (a real subprocess)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twinkle_auto.app.logging_setup import SecretFilter


def test_secret_filter_masks_given_secrets_and_key_shaped_strings() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "key %s and sk-abcdefghijkl", ("hunter2-secret",), None
    )
    assert SecretFilter(["hunter2-secret"]).filter(record)
    assert record.getMessage() == "key *** and ***"


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signal")
def test_sigusr1_appends_every_threads_stack_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "auto.log"
    code = (
        "import sys, threading, time\n"
        "from twinkle_auto.app.logging_setup import setup_logging\n"
        f"setup_logging(path={str(log)!r})\n"
        "def waits_forever():\n"
        "    time.sleep(60)\n"
        "threading.Thread(target=waits_forever, name='stuck', daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "waits_forever" not in (
            log.read_text() if log.exists() else ""
        ):
            time.sleep(0.1)
        text = log.read_text()
        assert "waits_forever" in text and "Thread 0x" in text
        assert child.poll() is None  # the dump does not end the process
    finally:
        child.kill()
        child.wait()
