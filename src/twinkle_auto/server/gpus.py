"""GPU detection: what nvidia-smi reports, narrowed to what `CUDA_VISIBLE_DEVICES` lets us use.

Detection never raises: a machine without nvidia-smi, or with a broken driver, simply has zero GPUs,
and the report says why — so the assistant can tell the person to use the `mock` backend instead of
failing with a traceback. Parsing and filtering are pure functions so tests feed them text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

QUERY = "index,name,memory.total,memory.used,utilization.gpu"
UUID_QUERY = "index,uuid"
NVIDIA_SMI_TIMEOUT_S = 15.0

BUSY_MEMORY_MB = 500
"""A GPU with more memory in use than this holds someone's CUDA context: not ours to hand out."""
BUSY_UTILIZATION_PCT = 10


@dataclass(frozen=True)
class GPU:
    """One physical GPU; `index` is nvidia-smi's (PCI bus order), the number CUDA_VISIBLE_DEVICES takes."""

    index: int
    name: str
    memory_total_mb: int | None
    memory_used_mb: int | None
    utilization_pct: int | None

    @property
    def busy(self) -> bool:
        return (self.memory_used_mb or 0) > BUSY_MEMORY_MB or (
            self.utilization_pct or 0
        ) > BUSY_UTILIZATION_PCT

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "memory_total_mb": self.memory_total_mb,
            "memory_used_mb": self.memory_used_mb,
            "utilization_pct": self.utilization_pct,
            "busy": self.busy,
        }


@dataclass(frozen=True)
class GPUReport:
    """The GPUs we may use, and when there are none, the one-line reason."""

    gpus: tuple[GPU, ...] = ()
    reason: str | None = None
    visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as found (None when unset)."""
    hidden: tuple[int, ...] = field(default=())
    """Indices nvidia-smi reports that CUDA_VISIBLE_DEVICES hides."""

    @property
    def free(self) -> tuple[GPU, ...]:
        return tuple(g for g in self.gpus if not g.busy)

    @property
    def busy(self) -> tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.busy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": len(self.gpus),
            "free": [g.index for g in self.free],
            "busy": [g.index for g in self.busy],
            "gpus": [g.as_dict() for g in self.gpus],
            "reason": self.reason,
            "cuda_visible_devices": self.visible_devices,
            "hidden": list(self.hidden),
        }


def _number(text: str) -> int | None:
    """nvidia-smi prints `[N/A]` or `[Not Supported]` for fields a GPU (or MIG slice) lacks."""
    text = text.strip()
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_nvidia_smi_csv(text: str) -> list[GPU]:
    """Parse `--query-gpu=index,name,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits`.

    Raises ValueError naming the first line that is not a GPU row (a driver message printed on stdout
    must not be mistaken for zero GPUs without a reason).
    """
    gpus: list[GPU] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or _number(parts[0]) is None:
            raise ValueError(f"unexpected nvidia-smi line: {line.strip()[:120]!r}")
        # A name may itself contain commas: the numeric fields are the last three.
        index = int(parts[0])
        name = ", ".join(parts[1:-3]).strip()
        total, used, util = (_number(p) for p in parts[-3:])
        gpus.append(GPU(index, name, total, used, util))
    return gpus


def parse_uuid_csv(text: str) -> dict[str, int]:
    """`--query-gpu=index,uuid` → {uuid: index}."""
    mapping: dict[str, int] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and _number(parts[0]) is not None:
            mapping[parts[1]] = int(parts[0])
    return mapping


def apply_visible_devices(
    gpus: Sequence[GPU], visible: str | None, uuids: Mapping[str, int] | None = None
) -> tuple[list[GPU], str | None]:
    """The GPUs CUDA_VISIBLE_DEVICES leaves visible, in its order, and a reason when that is none.

    CUDA stops at the first entry it cannot resolve, and so do we: `0,7,1` on a 2-GPU machine is `0`.
    UUID entries (`GPU-…`, prefixes allowed) are resolved with `uuids`.
    """
    if visible is None:
        return list(gpus), None
    text = visible.strip()
    if not text:
        return [], "CUDA_VISIBLE_DEVICES is set to an empty string, which hides every GPU"
    by_index = {g.index: g for g in gpus}
    chosen: list[GPU] = []
    for raw in text.split(","):
        entry = raw.strip()
        index: int | None = None
        if entry.lstrip("-").isdigit():
            index = int(entry)
        elif entry.startswith(("GPU-", "MIG-")) and uuids:
            matches = [i for u, i in uuids.items() if u.startswith(entry)]
            index = matches[0] if len(matches) == 1 else None
        if index is None or index not in by_index or by_index[index] in chosen:
            break
        chosen.append(by_index[index])
    if not chosen:
        return [], f"CUDA_VISIBLE_DEVICES={visible!r} names none of the GPUs nvidia-smi reports"
    return chosen, None


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


def _run(cmd: list[str], env: Mapping[str, str], timeout: float) -> tuple[int, str, str]:
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env),
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr


def detect_gpus(env: Mapping[str, str] | None = None, *, timeout: float = NVIDIA_SMI_TIMEOUT_S) -> GPUReport:
    """Ask nvidia-smi (found on env's PATH) for the GPUs, honouring CUDA_VISIBLE_DEVICES; never raises."""
    env = dict(os.environ if env is None else env)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    exe = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
    if exe is None:
        return GPUReport(
            reason="nvidia-smi not found on PATH (no NVIDIA driver here)", visible_devices=visible
        )
    base = [exe, "--format=csv,noheader,nounits"]
    try:
        code, out, err = _run([*base, f"--query-gpu={QUERY}"], env, timeout)
    except subprocess.TimeoutExpired:
        return GPUReport(reason=f"nvidia-smi did not answer within {timeout:.0f}s", visible_devices=visible)
    except OSError as exc:
        return GPUReport(reason=f"nvidia-smi could not run: {exc.strerror or exc}", visible_devices=visible)
    if code != 0:
        detail = _first_line(err) or _first_line(out) or "no message"
        return GPUReport(reason=f"nvidia-smi failed (exit {code}): {detail}", visible_devices=visible)
    try:
        all_gpus = parse_nvidia_smi_csv(out)
    except ValueError as exc:
        return GPUReport(reason=str(exc), visible_devices=visible)
    if not all_gpus:
        return GPUReport(reason="nvidia-smi reports no GPUs", visible_devices=visible)
    uuids: dict[str, int] | None = None
    if visible and any(p.strip().startswith(("GPU-", "MIG-")) for p in visible.split(",")):
        try:
            code, out, _ = _run([*base, f"--query-gpu={UUID_QUERY}"], env, timeout)
            uuids = parse_uuid_csv(out) if code == 0 else None
        except (subprocess.TimeoutExpired, OSError):
            uuids = None
    chosen, reason = apply_visible_devices(all_gpus, visible, uuids)
    hidden = tuple(g.index for g in all_gpus if g not in chosen)
    return GPUReport(tuple(chosen), reason, visible, hidden)
