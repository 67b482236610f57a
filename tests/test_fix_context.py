"""Focused fix context: frames in the script, enclosing blocks, definitions, outline, within budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twinkle_auto.monitor.fix_context import build_fix_context, estimate_tokens, script_frames


def run_script(tmp_path: Path, script: str, name: str = "train.py") -> str:
    """Run `script` for real and return its stderr (the traceback)."""
    path = tmp_path / name
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    return proc.stderr


def generated_script(n_lines: int, *, crash_in: int) -> str:
    """A stdlib-only script of about `n_lines` lines: many small functions, one of which crashes."""
    parts = ["import math", "import json", "", "SCALE = 3", "table = {'a': 1, 'b': 2}", ""]
    i = 0
    while len("\n".join(parts).splitlines()) < n_lines - 20:
        body = [f"def helper_{i}(values):", f'    """Helper number {i}."""', "    total = 0"]
        body += [f"    total += math.sqrt(abs(values[{j % 3}])) * {j} + SCALE  # step {j}" for j in range(8)]
        if i == crash_in:
            body += ["    key = 'c' if total > -1 else 'a'", "    return table[key] + total"]
        else:
            body += ["    return total"]
        parts += body + ["", ""]
        i += 1
    parts += [
        "results = []",
        "for epoch in range(3):",
        "    row = {}",
        f"    for k in range({i}):",
        "        row[k] = globals()[f'helper_{k}']([1.0, 2.0, epoch])",
        "    results.append(row)",
        "print(json.dumps(results))",
    ]
    return "\n".join(parts) + "\n"


def test_frames_definitions_and_error_of_a_real_crash(tmp_path: Path) -> None:
    script = generated_script(200, crash_in=5)
    traceback = run_script(tmp_path, script)
    ctx = build_fix_context(script, traceback, script_path=str(tmp_path / "train.py"))
    lines = script.splitlines()
    crash_line = next(n for n, line in enumerate(lines, 1) if "return table[key]" in line)
    call_line = next(n for n, line in enumerate(lines, 1) if "globals()[f'helper_" in line)
    assert ctx.failing_lines == [call_line, crash_line]
    assert ctx.error == "KeyError: 'c'"
    assert f">{crash_line:5d} |     return table[key] + total" in ctx.text
    # The enclosing function is there whole, with its header.
    header = lines.index("def helper_5(values):") + 1
    assert f"{header:6d} | def helper_5(values):" in ctx.text
    # `table` is defined at module level, far from the failing line: its definition is shown.
    table_line = lines.index("table = {'a': 1, 'b': 2}") + 1
    assert table_line in ctx.lines
    assert f"{table_line:6d} | table = {{'a': 1, 'b': 2}}" in ctx.text
    # Other helpers are not shown, only outlined.
    assert "def helper_9(values):" in ctx.text.split("Outline of the rest")[1]
    assert "* 3 + SCALE" not in ctx.text.split("def helper_5")[0]


@pytest.mark.parametrize("crash_in", [0, 30])
def test_a_1000_line_script_fits_the_budget(tmp_path: Path, crash_in: int) -> None:
    script = generated_script(1000, crash_in=crash_in)
    assert len(script.splitlines()) >= 990
    traceback = run_script(tmp_path, script)
    ctx = build_fix_context(script, traceback, script_path=str(tmp_path / "train.py"), max_tokens=2500)
    assert estimate_tokens(script) > 3 * 2500  # the whole script would not fit
    assert ctx.approx_tokens == estimate_tokens(ctx.text) <= 2500
    assert ">" in ctx.text and "KeyError: 'c'" in ctx.text
    assert ctx.failing_lines[-1] in ctx.lines


def test_budget_shrinks_windows_before_losing_the_failing_line(tmp_path: Path) -> None:
    script = generated_script(400, crash_in=3)
    traceback = run_script(tmp_path, script)
    wide = build_fix_context(script, traceback, max_tokens=2500)
    narrow = build_fix_context(script, traceback, max_tokens=500)
    assert narrow.approx_tokens < wide.approx_tokens
    assert narrow.approx_tokens <= 500
    assert wide.failing_lines[-1] in narrow.lines


def test_frames_of_a_launcher_log_with_prefixes_and_library_frames() -> None:
    log = (
        "step 1 loss 2.3\n"
        "[rank0]: Traceback (most recent call last):\n"
        '[rank0]:   File "/runs/r1/train.py", line 4, in <module>\n'
        "[rank0]:     main()\n"
        '[rank0]:   File "/runs/r1/train.py", line 2, in main\n'
        "[rank0]:     trainer = Trainer(tokenizer=tok)\n"
        '[rank0]:   File "/venv/lib/python3.12/site-packages/trl/train.py", line 90, in __init__\n'
        "[rank0]:     super().__init__(**kw)\n"
        "[rank0]: TypeError: Trainer.__init__() got an unexpected keyword argument 'tokenizer'\n"
    )
    frames = script_frames(log, "/runs/r1/train.py")
    assert [(f.line, f.function) for f in frames] == [(4, "<module>"), (2, "main")]
    script = "def main():\n    trainer = Trainer(tokenizer=tok)\n\nmain()\n"
    ctx = build_fix_context(script, log, script_path="/runs/r1/train.py")
    assert ctx.error == "TypeError: Trainer.__init__() got an unexpected keyword argument 'tokenizer'"
    assert ctx.failing_lines == [4, 2]


def test_archived_version_frames_count_as_the_script() -> None:
    tb = 'Traceback (most recent call last):\n  File "/r/train_v2.py", line 1, in <module>\n    x\nNameError: x\n'
    assert [f.line for f in script_frames(tb, "/r/train.py")] == [1]


def test_syntax_error_frame(tmp_path: Path) -> None:
    script = "import math\nfor i in range(3)\n    print(math.pi)\n"
    traceback = run_script(tmp_path, script)
    ctx = build_fix_context(script, traceback)
    assert ctx.failing_lines == [2]
    assert ctx.error.startswith("SyntaxError")
    assert ">    2 | for i in range(3)" in ctx.text


def test_traceback_without_script_frames_shows_the_head() -> None:
    script = "\n".join(f"x{i} = {i}" for i in range(300)) + "\n"
    ctx = build_fix_context(script, "RuntimeError: something failed in a worker\n")
    assert ctx.failing_lines == []
    assert "names no line of train.py" in ctx.text
    assert 1 in ctx.lines and ctx.error == "RuntimeError: something failed in a worker"


def test_a_short_script_is_shown_whole(tmp_path: Path) -> None:
    script = "import math\n\nvalues = [1, 2]\nSCALE = 3\nprint(math.sqrt(values[2]) * SCALE)\n"
    traceback = run_script(tmp_path, script)
    ctx = build_fix_context(script, traceback)
    assert ctx.lines == [1, 2, 3, 4, 5]
    assert "    1 | import math" in ctx.text and ">    5 | print(" in ctx.text
    assert "Outline" not in ctx.text and "..." not in ctx.text
