"""The launch spec: a run is relaunched exactly as it was started, and never with the assistant's secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import read_meta, run_cli, wait_for

from twinkle_auto.connection.errors import RunError
from twinkle_auto.connection.launch import LaunchSpec, new_spec, parse_env_assignments, spec_from_meta

pytestmark = pytest.mark.slow

PROJECT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import helper                      # a sibling module of the script, not of the run folder
    from twinkle_auto.runtime import TrainingRuntime
    rt = TrainingRuntime(); rt.start(script_path=__file__)
    data = open("data/input.txt").read().strip()      # relative to the working directory
    report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "helper": helper.VALUE, "data": data,
              "total": os.environ.get("TOTAL_STEPS"), "lr": os.environ.get("LR"),
              "secrets": sorted(k for k in os.environ if k.startswith("TWINKLE_LLM") or k == "OPENAI_API_KEY"),
              "hf": os.environ.get("HF_TOKEN")}
    print("REPORT " + json.dumps(report), flush=True)
    step = rt.get_resume_info()["last_step"]
    while True:
        step += 1
        rt.log_metrics(step=step, loss=1.0 / step)
        time.sleep(0.02)
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "train.py").write_text(PROJECT_SCRIPT)
    (proj / "helper.py").write_text("VALUE = 'sibling'\n")
    (proj / "data" / "input.txt").write_text("rows\n")
    return proj


def _reports(home: Path, run_id: str) -> list[dict]:
    path = home / run_id / "output.log"
    log = path.read_text() if path.exists() else ""
    return [json.loads(line[len("REPORT ") :]) for line in log.splitlines() if line.startswith("REPORT ")]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


SECRETS = {"TWINKLE_LLM_API_KEY": "sk-assistant-key", "OPENAI_API_KEY": "sk-openai", "TWINKLE_LLM_MODEL": "m"}


def test_start_records_and_resume_replays_args_cwd_env_and_sibling_modules(home: Path, project: Path) -> None:
    other = project.parent / "elsewhere"
    other.mkdir()
    env = {**SECRETS, "TOTAL_STEPS": "100000", "HF_TOKEN": "hf-user"}
    started = run_cli(
        "start", "spec", "--script", str(project / "train.py"), "--env", "LR=0.01", "--pass-env", "HF_TOKEN",
        "--", "--lr", "1e-4", "--tag", "a b", env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    wait_for(lambda: _reports(home, "spec"))
    meta = read_meta(home, "spec")
    first_pid = meta["pid"]
    assert not set(SECRETS) & set(_environ(first_pid)), "a child inherited the assistant's secrets"
    spec = meta["launch"]
    assert spec["args"] == ["--lr", "1e-4", "--tag", "a b"]
    assert spec["cwd"] == str(project) and spec["source_dir"] == str(project)
    assert spec["env"] == {"LR": "0.01"} and spec["environ"]["TOTAL_STEPS"] == "100000"
    assert spec["pass_env"] == ["HF_TOKEN"] and meta["host"]
    text = (home / "spec" / "meta.json").read_text()
    assert "hf-user" not in text and "sk-assistant-key" not in text and "sk-openai" not in text

    assert run_cli("pause", "spec").returncode == 0
    # resumed from another directory, with other settings in the environment: the run does not care
    resumed = subprocess.run(
        [sys.executable, "-m", "twinkle_auto", "resume", "spec"],
        capture_output=True, text=True, timeout=60, cwd=other,
        env={**os.environ, **SECRETS, "TOTAL_STEPS": "500", "LR": "0.05", "HF_TOKEN": "hf-user"},
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: len(_reports(home, "spec")) == 2)
    first, second = _reports(home, "spec")
    assert first == second
    assert first["argv"] == ["--lr", "1e-4", "--tag", "a b"] and first["cwd"] == str(project)
    assert first["helper"] == "sibling" and first["data"] == "rows"
    assert first["total"] == "100000" and first["lr"] == "0.01"
    assert first["secrets"] == [] and first["hf"] == "hf-user"
    second_pid = read_meta(home, "spec")["pid"]
    assert second_pid != first_pid and not set(SECRETS) & set(_environ(second_pid))
    assert run_cli("pause", "spec").returncode == 0


def test_cwd_option_and_a_key_given_on_the_command_line(home: Path, project: Path) -> None:
    (project / "sub" / "data").mkdir(parents=True)
    (project / "sub" / "data" / "input.txt").write_text("sub rows\n")
    result = run_cli(
        "--llm-api-key", "sk-from-flag", "start", "cwd", "--script", str(project / "train.py"),
        "--cwd", str(project / "sub"), env={"SOME_SETTING": "sk-from-flag"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = wait_for(lambda: _reports(home, "cwd"))[0]
    assert report["cwd"] == str(project / "sub") and report["data"] == "sub rows"
    pid = read_meta(home, "cwd")["pid"]
    assert "SOME_SETTING" not in _environ(pid), "a variable holding the assistant's key reached the child"
    assert "sk-from-flag" not in (home / "cwd" / "meta.json").read_text()
    assert run_cli("stop", "cwd", "--grace", "0").returncode == 0


def test_a_script_started_by_hand_is_resumed_as_it_was_started(home: Path, project: Path) -> None:
    env = {**os.environ, "TWINKLE_RUN_ID": "byhand", "TOTAL_STEPS": "7777", **SECRETS}
    env.pop("TWINKLE_AUTO_OUTPUT_CAPTURED", None)
    child = subprocess.Popen(
        [sys.executable, "train.py", "--epochs", "3"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: _reports(home, "byhand"))
        meta = read_meta(home, "byhand")
        assert meta["pid"] == child.pid and meta["launch"]["args"] == ["--epochs", "3"]
        assert meta["launch"]["cwd"] == str(project) and meta["launch"]["environ"]["TOTAL_STEPS"] == "7777"
        assert "TWINKLE_LLM_API_KEY" not in meta["launch"]["environ"]
        assert run_cli("pause", "byhand").returncode == 0
        child.wait(timeout=10)
        assert run_cli("resume", "byhand").returncode == 0
        wait_for(lambda: len(_reports(home, "byhand")) == 2)
        first, second = _reports(home, "byhand")
        assert second == {**first, "secrets": []}
        assert second["helper"] == "sibling" and second["argv"] == ["--epochs", "3"]
        assert second["total"] == "7777"
        assert run_cli("pause", "byhand").returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_bad_launch_options_are_refused_in_one_line(home: Path, project: Path) -> None:
    script = str(project / "train.py")
    cases = [
        (["--env", "NOEQUALS"], "expected NAME=VALUE"),
        (["--env", "HF_TOKEN=abc"], "--pass-env HF_TOKEN"),
        (["--cwd", str(project / "missing")], "not a directory"),
        (["--nproc-per-node", "2"], "needs --launcher torchrun"),
        (["--launcher", "torchrun", "--nproc-per-node", "0"], "at least 1"),
        (["--ray-address", "127.0.0.1:1"], "needs --launcher ray"),
    ]
    for extra, message in cases:
        result = run_cli("start", "bad", "--script", script, *extra)
        assert result.returncode == 1 and message in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / "bad").exists() or not (home / "bad" / "meta.json").exists()
    bad = run_cli("status", "bad", "--", "x")
    assert bad.returncode == 2 and "only `start`" in bad.stderr


def test_commands_of_each_launcher(tmp_path: Path) -> None:
    assert parse_env_assignments(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(RunError):
        parse_env_assignments(["1A=2"])
    torch = LaunchSpec(
        launcher="torchrun", interpreter="/py", launcher_args=("--nproc-per-node", "2"), args=("-x",)
    )
    assert torch.command("/run/train.py") == [
        "/py", "-u", "-m", "torch.distributed.run", "--nproc-per-node", "2", "/run/train.py", "-x",
    ]  # fmt: skip
    acc = LaunchSpec(launcher="accelerate", interpreter="/py", launcher_args=("--num_processes", "2"))
    assert acc.command("t.py")[:4] == ["/py", "-u", "-m", "accelerate.commands.launch"]
    assert LaunchSpec(interpreter="/py").command("t.py") == ["/py", "-u", "t.py"]
    # a run from before launch specs: plain python in the run folder with its recorded launch_env
    old = spec_from_meta({"launch_env": {"LR": "1"}})
    assert old.launcher == "python" and old.env == {"LR": "1"} and old.working_dir(tmp_path) == tmp_path
    spec = new_spec(cwd=tmp_path, args=["a"], env={"K": "v"})
    assert spec_from_meta({"launch": spec.to_meta()}) == spec
    with pytest.raises(RunError, match="unknown launcher"):
        spec_from_meta({"launch": {"launcher": "mpirun"}})


def test_the_chat_tools_start_path_records_the_same_spec(home: Path, project: Path, controller) -> None:
    """`start_training` passes the parts (argv, cwd, launcher, env) to the controller; resume replays them."""
    result = controller.start(
        "tool", PROJECT_SCRIPT, argv=["--from", "chat"], cwd=project, source_dir=project, env={"LR": "0.2"}
    )
    wait_for(lambda: _reports(home, "tool"))
    controller.pause("tool")
    again = controller.resume("tool")
    assert again.pid != result.pid
    wait_for(lambda: len(_reports(home, "tool")) == 2)
    first, second = _reports(home, "tool")
    assert first == second and first["argv"] == ["--from", "chat"] and first["lr"] == "0.2"
    assert first["cwd"] == str(project) and first["helper"] == "sibling"
    controller.pause("tool")
    with pytest.raises(RunError, match="needs --launcher torchrun"):
        controller.start("tool2", PROJECT_SCRIPT, nproc_per_node=2)
    assert not (home / "tool2").exists()


def test_a_run_whose_interpreter_is_gone_is_refused_before_anything_starts(home: Path, controller) -> None:
    controller.create("gone", "print(1)\n")
    meta = read_meta(home, "gone")
    spec = new_spec(interpreter="/nonexistent/venv/bin/python").to_meta()
    (home / "gone" / "meta.json").write_text(json.dumps({**meta, "status": "paused", "launch": spec}))
    result = run_cli("resume", "gone")
    assert (
        result.returncode == 1
        and "/nonexistent/venv/bin/python" in result.stderr
        and "is gone" in result.stderr
    )
    assert not (home / "gone" / "output.log").exists()


def test_every_kind_of_child_gets_the_scrubbed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training (child_env), Ray nodes and the Twinkle server (ray_env) share one rule."""
    from twinkle_auto.connection.process import child_env, register_secret
    from twinkle_auto.server.cluster import ray_env

    for name, value in {**SECRETS, "HF_TOKEN": "hf", "AWS_SECRET_ACCESS_KEY": "aws", "KEEP": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INNOCENT_NAME", "sk-given-on-the-command-line")
    register_secret("sk-given-on-the-command-line")
    for env in (child_env(), ray_env()):
        assert env["KEEP"] == "1" and "PATH" in env
        leaked = set(SECRETS) | {"HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "INNOCENT_NAME"}
        assert not leaked & set(env), leaked & set(env)
    assert child_env(pass_env=["HF_TOKEN"])["HF_TOKEN"] == "hf"
    assert ray_env()["RAY_AUTH_MODE"] == "disabled"


def test_an_auto_fix_relaunch_from_a_long_lived_assistant_has_no_secrets(
    home: Path, project: Path, controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitor relaunches through `controller.launch` inside the assistant, whose environment has the key."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    first = controller.start("fixed", PROJECT_SCRIPT, cwd=project, source_dir=project)
    wait_for(lambda: _reports(home, "fixed"))
    controller.pause("fixed")
    again = controller.launch("fixed", reason="auto-fix #1")
    wait_for(lambda: len(_reports(home, "fixed")) == 2)
    for pid in (again.pid,):
        assert not set(SECRETS) & set(_environ(pid))
    assert _reports(home, "fixed")[1]["secrets"] == [] and first.pid != again.pid
    assert "launch #2 (auto-fix #1)" in (home / "fixed" / "output.log").read_text()
    controller.pause("fixed")


def test_reading_a_launchers_command_line() -> None:
    from twinkle_auto.runtime.launch_info import split_launcher_cmdline as split

    py = "/venv/bin/python"
    assert split([py, "-u", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "/r/t.py", "-x"],
                 "/r/t.py", None) == ("torchrun", ["--standalone", "--nproc-per-node", "2"])  # fmt: skip
    assert split([py, "/venv/bin/torchrun", "--nproc-per-node=2", "t.py"], "/w/t.py", "/w") == (
        "torchrun", ["--nproc-per-node=2"],
    )  # fmt: skip
    assert split([py, "/venv/bin/accelerate", "launch", "--num_processes", "2", "t.py"], "/w/t.py", "/w") == (
        "accelerate", ["--num_processes", "2"],
    )  # fmt: skip
    # a launcher's name later on the command line is an argument, not the launcher; a shell is no launcher
    assert split([py, "train.py", "--out", "deepspeed"], "/w/train.py", "/w") is None
    assert split(["bash", "run.sh"], "", None) is None
