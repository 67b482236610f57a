"""Where a training process sits: its rank, its host, its launcher, and which variables are secrets.

Standard library only (training scripts import it). The assistant's launch spec and the runtime of a
script started by hand describe a launch in the same words, so both live next to the run-folder format:
one rule for "is this variable a credential", one reading of RANK/LOCAL_RANK/WORLD_SIZE, one way to
find the torchrun/accelerate process that owns the ranks.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SECRET_PREFIXES = ("TWINKLE_LLM_",)
"""The assistant's own LLM settings: the key and everything beside it stay in the assistant."""
SECRET_NAME_RE = re.compile(
    r"(?:^|_)(?:API_?KEY|TOKEN|SECRET|SECRET_KEY|PASSWORD|PASSWD|CREDENTIALS?)$", re.I
)
"""Names that carry credentials by convention (OPENAI_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY...)."""
_SECRET_ALSO = re.compile(r"(?:^|_)(?:SECRET_ACCESS_KEY|PRIVATE_KEY)$", re.I)

ENV_LAUNCHED = "TWINKLE_AUTO_LAUNCHED"
"""Set for processes the assistant starts: it records pid, host and launch spec itself."""

SESSION_NOISE = frozenset(
    {
        "_",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "PS1",
        "PS2",
        "PROMPT_COMMAND",
        "TERM",
        "COLORTERM",
        "COLUMNS",
        "LINES",
        "DISPLAY",
        "WINDOWID",
        "SSH_CLIENT",
        "SSH_CONNECTION",
        "SSH_TTY",
        "SSH_AUTH_SOCK",
        "TMUX",
        "TMUX_PANE",
        "STY",
        "DBUS_SESSION_BUS_ADDRESS",
        "LS_COLORS",
        "HISTFILE",
        "PYTEST_CURRENT_TEST",
        "TWINKLE_RUN_ID",
        "TWINKLE_HOME",
        "TWINKLE_AUTO_OUTPUT_CAPTURED",
        ENV_LAUNCHED,
        # set per process by the launchers themselves; replaying them would confuse the next launch
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "ROLE_RANK",
        "ROLE_WORLD_SIZE",
        "ROLE_NAME",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
        "TORCHELASTIC_RESTART_COUNT",
        "TORCHELASTIC_MAX_RESTARTS",
        "TORCHELASTIC_USE_AGENT_STORE",
        "TORCHELASTIC_ERROR_FILE",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING",
        "GROUP_WORLD_SIZE",
        "OMP_NUM_THREADS_SET_BY_TORCHRUN",
    }
)
"""Variables that describe the terminal session or one process of a job, not the run."""
MAX_ENV_VALUE = 32_768


def recordable_environ(source: Mapping[str, str], secret: Any = None) -> dict[str, str]:
    """The environment as a launch spec records it: minus secrets, session noise and huge values."""
    is_secret = secret or (lambda name, value: name_is_secret(name))
    return {
        k: v
        for k, v in source.items()
        if k not in SESSION_NOISE
        and not k.startswith(("ACCELERATE_", "TORCHELASTIC_"))
        and len(v) <= MAX_ENV_VALUE
        and not is_secret(k, v)
    }


_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")
_WORLD_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")

_LAUNCHER_MODULES = {
    "torch.distributed.run": "torchrun",
    "torch.distributed.launch": "torchrun",
    "accelerate.commands.launch": "accelerate",
    "deepspeed.launcher.launch": "deepspeed",
    "deepspeed.launcher.runner": "deepspeed",
}
_LAUNCHER_PROGRAMS = {"torchrun": "torchrun", "accelerate": "accelerate", "deepspeed": "deepspeed"}


def name_is_secret(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(SECRET_PREFIXES) or bool(
        SECRET_NAME_RE.search(upper) or _SECRET_ALSO.search(upper)
    )


def hostname() -> str:
    """The name other machines sharing the run folders know this one by."""
    return socket.gethostname()


@dataclass(frozen=True)
class Ranks:
    """This process's place in a distributed job (rank 0 of 1 when it is not one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _first_int(env: Mapping[str, str], names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                continue
    return default


def read_ranks(env: Mapping[str, str] | None = None) -> Ranks:
    """RANK/LOCAL_RANK/WORLD_SIZE as torchrun, accelerate and deepspeed set them (MPI names too)."""
    env = os.environ if env is None else env
    world = max(1, _first_int(env, _WORLD_VARS, 1))
    rank = _first_int(env, _RANK_VARS, 0)
    local = _first_int(env, _LOCAL_RANK_VARS, rank)
    return Ranks(rank=max(0, rank), local_rank=max(0, local), world_size=world)


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(1 << 20)
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def proc_cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def split_launcher_cmdline(cmdline: list[str], script: str, cwd: str | None) -> tuple[str, list[str]] | None:
    """(launcher, launcher options) from a launcher's argv, e.g. torchrun's, or None if it is not one."""
    launcher: str | None = None
    start = -1
    # The launcher is the program itself or the script/module its interpreter runs, never a later argument.
    for i, arg in enumerate(cmdline[:3]):
        if arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] in _LAUNCHER_MODULES:
            launcher, start = _LAUNCHER_MODULES[cmdline[i + 1]], i + 2
            break
        base = os.path.basename(arg)
        if i <= 1 and base in _LAUNCHER_PROGRAMS:
            launcher, start = _LAUNCHER_PROGRAMS[base], i + 1
            if launcher == "accelerate" and start < len(cmdline) and cmdline[start] == "launch":
                start += 1
            break
    if launcher is None:
        return None
    target = os.path.realpath(script)
    for j in range(start, len(cmdline)):
        candidate = os.path.realpath(os.path.join(cwd or ".", cmdline[j]))
        if candidate == target:
            return launcher, cmdline[start:j]
    return launcher, []


def launcher_pid(ranks: Ranks) -> int:
    """The process that stands for the whole job: the local launcher of a distributed job, else us.

    Only a parent that is a known launcher (torchrun, accelerate, deepspeed) stands for the job; under
    anything else (srun, mpirun, a shell) this process is recorded, and only it is signalled.
    """
    if ranks.distributed:
        parent = os.getppid()
        if parent > 1 and split_launcher_cmdline(proc_cmdline(parent), "", None) is not None:
            return parent
    return os.getpid()


def hand_launch_spec(script: str | None, ranks: Ranks, secret: Any = None) -> dict[str, Any]:
    """The launch spec of a script started by hand, as the assistant would have recorded it."""
    script = os.path.abspath(script or (sys.argv[0] if sys.argv and sys.argv[0] else "train.py"))
    spec: dict[str, Any] = {
        "launcher": "python",
        "interpreter": sys.executable,
        "launcher_args": [],
        "args": list(sys.argv[1:]),
        "cwd": os.getcwd(),
        "source_dir": os.path.dirname(script),
        "env": {},
        "environ": recordable_environ(os.environ, secret),
        "pass_env": [],
        "ray_address": None,
        "host": hostname(),
    }
    if ranks.distributed:
        parent = os.getppid()
        found = split_launcher_cmdline(proc_cmdline(parent), script, proc_cwd(parent))
        if found is not None:
            spec["launcher"], spec["launcher_args"] = found[0], found[1]
        else:
            local_world = os.environ.get("LOCAL_WORLD_SIZE") or str(ranks.world_size)
            spec["launcher"], spec["launcher_args"] = "torchrun", ["--nproc-per-node", local_world]
    return spec


__all__ = [
    "ENV_LAUNCHED",
    "Ranks",
    "hand_launch_spec",
    "hostname",
    "launcher_pid",
    "name_is_secret",
    "proc_cmdline",
    "proc_cwd",
    "read_ranks",
    "recordable_environ",
    "split_launcher_cmdline",
]
