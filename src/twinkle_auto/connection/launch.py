"""The launch spec: how a run was started, recorded in meta.json so resume and auto-fix replay exactly that.

A relaunch that guesses (the run folder as working directory, today's environment, plain `python`)
turns a pause into a different experiment: other settings, broken relative paths, a torchrun job run
as one process. So `start` records the interpreter, the script's arguments, the working directory, the
directory the script came from (its sibling modules stay importable), the run's environment (minus
secrets), the launcher and its options, and the host; every later launch is built from that record.

meta.json holds it under `launch`::

    {"launcher": "python" | "torchrun" | "accelerate" | "ray",
     "interpreter": "/venv/bin/python", "launcher_args": ["--nproc-per-node", "2"],
     "args": ["--lr", "1e-4"], "cwd": "/proj", "source_dir": "/proj",
     "env": {"LR": "0.01"},          # set for the run explicitly (--env K=V, the chat tool's env)
     "environ": {...},               # the rest of the starting environment, minus secrets and session noise
     "pass_env": ["HF_TOKEN"],       # credentials let through by name; values are never stored
     "ray_address": null, "host": "node-1"}

A run started by hand (twinkle-kit format, or our runtime before it recorded a spec) gets a spec that
says what the old behaviour was: plain python in the run folder, `launch_env` as its environment.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from twinkle_auto.connection.errors import RunError
from twinkle_auto.connection.process import child_env, is_secret
from twinkle_auto.runtime.launch_info import ENV_LAUNCHED, hostname, recordable_environ

PYTHON = "python"
TORCHRUN = "torchrun"
ACCELERATE = "accelerate"
DEEPSPEED = "deepspeed"
RAY = "ray"
LAUNCHERS = (PYTHON, TORCHRUN, ACCELERATE, DEEPSPEED, RAY)

_MODULE = {
    TORCHRUN: "torch.distributed.run",
    ACCELERATE: "accelerate.commands.launch",
    DEEPSPEED: "deepspeed.launcher.runner",
}
"""Launchers run as modules of the recorded interpreter: the same environment whatever PATH says."""


@dataclass(frozen=True)
class LaunchSpec:
    """One launch, reproducible: what `command()` and `environment()` build is what started the run."""

    launcher: str = PYTHON
    interpreter: str = sys.executable
    launcher_args: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    cwd: str | None = None
    source_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    ray_address: str | None = None
    host: str = field(default_factory=hostname)

    # ------------------------------------------------------------------------------------ building
    def command(self, script: str | Path) -> list[str]:
        """The argv of a local launch of `script` (the run folder's train.py)."""
        if self.launcher == PYTHON:
            return [self.interpreter, "-u", str(script), *self.args]
        if self.launcher in _MODULE:
            return [
                self.interpreter,
                "-u",
                "-m",
                _MODULE[self.launcher],
                *self.launcher_args,
                str(script),
                *self.args,
            ]
        raise RunError(f"launcher {self.launcher!r} does not start a local process")

    def check_local(self) -> None:
        """Refuse, in one line, a local launch that could only fail: the interpreter or launcher is gone."""
        if not os.path.isfile(self.interpreter) or not os.access(self.interpreter, os.X_OK):
            raise RunError(
                f"the interpreter this run was started with ({self.interpreter}) is gone; "
                "restore that environment, or start the run again with the current one"
            )
        module = _MODULE.get(self.launcher, "").split(".")[0]
        same = os.path.realpath(self.interpreter) == os.path.realpath(sys.executable)
        if module and same and importlib.util.find_spec(module) is None:
            raise RunError(f"--launcher {self.launcher}: {module} is not installed in {self.interpreter}")

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The child's environment: ours minus secrets, then the recorded run environment, then `extra`."""
        env = child_env(pass_env=self.pass_env)
        env.update(self.environ)
        env.update(self.env)
        if self.source_dir:
            # The script runs from the run folder; its own directory stays importable (sibling modules).
            old = env.get("PYTHONPATH", "")
            parts = [p for p in old.split(os.pathsep) if p and p != self.source_dir]
            env["PYTHONPATH"] = os.pathsep.join([self.source_dir, *parts])
        if extra:
            env.update(extra)
        return env

    def working_dir(self, folder: Path) -> Path:
        """The recorded working directory, or the run folder when none was recorded or it is gone."""
        if self.cwd and Path(self.cwd).is_dir():
            return Path(self.cwd)
        return folder

    # ------------------------------------------------------------------------------------- storage
    def to_meta(self) -> dict[str, Any]:
        return {
            "launcher": self.launcher,
            "interpreter": self.interpreter,
            "launcher_args": list(self.launcher_args),
            "args": list(self.args),
            "cwd": self.cwd,
            "source_dir": self.source_dir,
            "env": dict(self.env),
            "environ": dict(self.environ),
            "pass_env": list(self.pass_env),
            "ray_address": self.ray_address,
            "host": self.host,
        }


def _str_list(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _str_dict(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if not is_secret(str(k), str(v))}


def spec_from_meta(meta: Mapping[str, Any]) -> LaunchSpec:
    """The recorded spec, or the old behaviour for a run that has none (python in the run folder)."""
    raw = meta.get("launch")
    if not isinstance(raw, dict):
        return LaunchSpec(env=_str_dict(meta.get("launch_env")), host=str(meta.get("host") or hostname()))
    launcher = str(raw.get("launcher") or PYTHON)
    if launcher not in LAUNCHERS:
        raise RunError(f"meta.json names an unknown launcher {launcher!r}; use one of {', '.join(LAUNCHERS)}")
    interpreter = raw.get("interpreter")
    return LaunchSpec(
        launcher=launcher,
        interpreter=str(interpreter) if isinstance(interpreter, str) and interpreter else sys.executable,
        launcher_args=_str_list(raw.get("launcher_args")),
        args=_str_list(raw.get("args")),
        cwd=str(raw["cwd"]) if isinstance(raw.get("cwd"), str) else None,
        source_dir=str(raw["source_dir"]) if isinstance(raw.get("source_dir"), str) else None,
        env=_str_dict(raw.get("env")),
        environ=_str_dict(raw.get("environ")),
        pass_env=_str_list(raw.get("pass_env")),
        ray_address=str(raw["ray_address"]) if isinstance(raw.get("ray_address"), str) else None,
        host=str(raw.get("host") or meta.get("host") or hostname()),
    )


def parse_env_assignments(items: Sequence[str]) -> dict[str, str]:
    """`--env K=V` options as a dict; a malformed one is refused with one line."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise RunError(f"--env {item!r}: expected NAME=VALUE with a shell variable name")
        if is_secret(name, value):
            raise RunError(
                f"--env {name}: looks like a credential and would be stored in meta.json; "
                f"use --pass-env {name} to let it through from the environment instead"
            )
        out[name] = value
    return out


def run_environ(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The starting environment as it is recorded: minus secrets, session noise and huge values."""
    return recordable_environ(os.environ if source is None else source, is_secret)


def new_spec(
    *,
    launcher: str = PYTHON,
    launcher_args: Sequence[str] = (),
    args: Sequence[str] = (),
    cwd: str | Path | None = None,
    source_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    pass_env: Sequence[str] = (),
    ray_address: str | None = None,
    interpreter: str | None = None,
    record_environ: bool = True,
) -> LaunchSpec:
    """The spec `start` records (CLI and chat tool alike); paths are made absolute now, while they mean something."""
    if launcher not in LAUNCHERS:
        raise RunError(f"unknown launcher {launcher!r}; use one of {', '.join(LAUNCHERS)}")
    if launcher_args and launcher == PYTHON:
        raise RunError("launcher options need --launcher torchrun or accelerate")
    cwd_path = Path(cwd).expanduser().resolve() if cwd is not None else None
    if cwd_path is not None and not cwd_path.is_dir():
        raise RunError(f"--cwd {cwd}: not a directory")
    secrets = [k for k, v in (env or {}).items() if is_secret(k, v)]
    if secrets:
        raise RunError(f"env {secrets[0]}: a credential is never stored; pass it by name (pass_env) instead")
    return LaunchSpec(
        launcher=launcher,
        interpreter=interpreter or sys.executable,
        launcher_args=tuple(launcher_args),
        args=tuple(args),
        cwd=str(cwd_path) if cwd_path is not None else None,
        source_dir=str(Path(source_dir).expanduser().resolve()) if source_dir is not None else None,
        env={str(k): str(v) for k, v in (env or {}).items()},
        environ=run_environ() if record_environ else {},
        pass_env=tuple(pass_env),
        ray_address=ray_address,
    )


def with_launcher_options(spec: LaunchSpec, nproc_per_node: int | None, extra: str | None) -> LaunchSpec:
    """Add `--nproc-per-node N` (spelled as each launcher wants) and free-form launcher options."""
    args = list(spec.launcher_args)
    if nproc_per_node is not None:
        if nproc_per_node < 1:
            raise RunError("--nproc-per-node must be at least 1")
        if spec.launcher == TORCHRUN:
            args += ["--nproc-per-node", str(nproc_per_node)]
        elif spec.launcher == ACCELERATE:
            args += ["--num_processes", str(nproc_per_node)]
        else:
            raise RunError("--nproc-per-node needs --launcher torchrun or accelerate")
    if extra:
        if spec.launcher not in _MODULE:
            raise RunError("--launcher-args needs --launcher torchrun or accelerate")
        args += shlex.split(extra)
    return replace(spec, launcher_args=tuple(args))


__all__ = [
    "ACCELERATE",
    "ENV_LAUNCHED",
    "LAUNCHERS",
    "PYTHON",
    "RAY",
    "TORCHRUN",
    "LaunchSpec",
    "hostname",
    "new_spec",
    "parse_env_assignments",
    "run_environ",
    "spec_from_meta",
    "with_launcher_options",
]
