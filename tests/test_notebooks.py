"""The notebooks run top to bottom, offline, and are committed without outputs.

Each notebook is executed with nbclient in a kernel of this very Python (a kernel spec written to a temp
folder and put first on JUPYTER_PATH, so a user's own `python3` kernel never stands in for the venv). The
notebooks make their own temporary TWINKLE_HOME and stop what they start; the assertions read their
printed outputs. Notebook 2's "local LLM" part runs against the scripted OpenAI-compatible stub, so the
ChatOpenAI path is exercised the same way every time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from openai_stub import Rule, StubLLM

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_graphs.ipynb", "02_monitor_tick.ipynb", "03_embedding.ipynb"]
KERNEL = "twinkle-auto-test"
CELL_TIMEOUT_S = 180

STUB_PATCH = (
    "<<<<<<< SEARCH\n"
    "    return F.cross_entropy(logits, targets)\n"
    "=======\n"
    "    return F.cross_entropy(logits.view(B * T, C), targets.view(B * T))\n"
    ">>>>>>> REPLACE\n"
)


def test_the_notebooks_are_committed_without_outputs() -> None:
    found = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name}: a cell has outputs (strip them before committing)"
                assert cell.execution_count is None, f"{name}: a cell has an execution count"


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec that runs ipykernel with this interpreter, found before any other."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "twinkle-auto tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile or startup files
    monkeypatch.delenv("TWINKLE_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("TWINKLE_LLM_MODEL", raising=False)
    monkeypatch.delenv("TWINKLE_LLM_API_KEY", raising=False)
    return KERNEL


def _execute(name: str, kernel: str, tmp_path: Path) -> str:
    """Run the notebook (in memory: the committed file is never written) and return its printed text."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=60,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        coalesce_streams=True,  # one print may arrive in several chunks: merge them
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        nbformat.write(nb, tmp_path / name)  # the executed copy, for a look at what went wrong
        pytest.fail(f"{name} failed (executed copy: {tmp_path / name}):\n{exc}")
    texts: list[str] = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{name}: {output.get('ename')}: {output.get('evalue')}"
            if output.output_type == "stream":
                texts.append(output.text)
            elif "data" in output:
                texts.append(f"\n{output.data.get('text/markdown') or output.data.get('text/plain', '')}\n")
    return "".join(texts)


@pytest.mark.slow
def test_01_graphs_draws_both_graphs_and_their_states(venv_kernel: str, tmp_path: Path) -> None:
    text = _execute("01_graphs.ipynb", venv_kernel, tmp_path)
    assert text.count("```mermaid") == 2
    for node in ("collect", "triage", "classify", "rewrite", "archive", "resume", "notify", "approve"):
        assert f"| {node} |" in text  # drawn as an ASCII box
    assert "| agent |" in text and "| tools |" in text
    assert "**MonitorState**" in text and "**ChatState**" in text
    assert "| `fix_attempts` | `int` |" in text and "| `tool_rounds` | `int` |" in text


@pytest.mark.slow
@pytest.mark.torch
def test_02_monitor_tick_fixes_a_real_crash_with_the_rules_and_a_known_fix(
    venv_kernel: str, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    stub = StubLLM(
        [
            Rule(match="train.py (version", text=STUB_PATCH),  # the patch prompt
        ]
    )
    base_url = stub.start()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("TWINKLE_LLM_BASE_URL", base_url)
            env.setenv("TWINKLE_LLM_MODEL", "stub-model")
            text = _execute("02_monitor_tick.ipynb", venv_kernel, tmp_path)
    finally:
        stub.stop()
    assert "path: collect → verify → triage → classify → claim → rewrite → archive → resume" in text
    # a crash raised from the script's own code is a FIX by rule: no verdict call
    assert (
        "decision: FIX (rules (code error: the fix explains it)), fixed: True, archived_as: train_v1.py"
        in text
    )
    assert "train_v1.py exists: True" in text
    assert "known fix: per-token logits to cross_entropy" in text  # known fixes come before the LLM
    assert "ct-buggy: finished at step 150/150, script v2" in text
    assert "decision: LGTM, done: True" in text
    # the same tick with ChatOpenAI, against the stub
    assert "local LLM decided: FIX (rules (code error: the fix explains it)), fixed: True" in text
    assert "ct-buggy-llm after the LLM's fix: finished at step 150/150" in text
    # neither a verdict (a code error) nor a patch (the known fix comes first) is asked of the LLM
    assert stub.requests == []


@pytest.mark.slow
def test_03_embedding_runs_the_monitor_and_tools_inside_host_apps(venv_kernel: str, tmp_path: Path) -> None:
    text = _execute("03_embedding.ipynb", venv_kernel, tmp_path)
    assert "tiny-crash   FIX      (llm)" in text and "tiny-ok      LGTM     (rules)" in text
    assert "Apply this fix to tiny-crash/train.py and relaunch it?" in text
    assert "the fix was declined; train.py unchanged" in text
    assert "tools called: ['list_training_runs', 'get_training_status']" in text
