"""Runs on a Ray cluster: a launch becomes a Ray job, and status, logs, pause and stop go through Ray.

Why Ray Jobs: a run then lives on whichever node has room, and its process belongs to the cluster, not
to the machine the assistant happens to run on; Ray is already the engine of the training server. The
run folder stays the connection: the job's training process writes meta.json and metrics.jsonl into
TWINKLE_HOME as any run does (so the folders must be on a filesystem the nodes share, as they are on
one machine), and a small streamer process copies the job's driver log into output.log and records
how the job ended.

Actions (submit, stop) use `ray.job_submission.JobSubmissionClient`. Reads (is it running?) use the
same dashboard HTTP API with a short timeout through the standard library, so `status` and `runs`
neither import Ray nor hang on an unreachable cluster.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinkle_auto.connection import process as proc
from twinkle_auto.connection.errors import RunError, RunStateError
from twinkle_auto.runtime import format as fmt
from twinkle_auto.runtime.launch_info import ENV_LAUNCHED

if TYPE_CHECKING:
    from twinkle_auto.connection.control import LaunchResult, RunController
    from twinkle_auto.connection.launch import LaunchSpec

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
"""Ray's default dashboard address; `--ray-address` or RAY_ADDRESS (an http:// one) name another."""
ACTIVE = ("PENDING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
READ_TIMEOUT_S = 3.0
STREAM_INTERVAL_S = 0.5
STREAM_GIVE_UP_S = 60.0
"""A streamer whose dashboard stops answering for this long exits (and says so in meta.json)."""
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


class RayJobError(RunError):
    """The cluster refused or did not answer; one line."""


def resolve_address(address: str | None) -> str:
    """The dashboard URL jobs are submitted to (the Jobs API lives in the dashboard, not the GCS)."""
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if address.startswith("ray://"):
        raise RayJobError(f"{address}: Ray Jobs need the dashboard address (http://host:8265), not ray://")
    if not address.startswith(("http://", "https://")):
        address = "http://" + address
    return address.rstrip("/")


def _job(meta: dict[str, Any]) -> dict[str, Any]:
    job = meta.get("ray_job")
    if not isinstance(job, dict) or not isinstance(job.get("submission_id"), str):
        raise RunError("this run has no Ray job recorded")
    return job


def job_status(meta: dict[str, Any], *, timeout: float = READ_TIMEOUT_S) -> str:
    """PENDING / RUNNING / SUCCEEDED / FAILED / STOPPED, or UNREACHABLE when the dashboard does not answer."""
    job = _job(meta)
    url = f"{job['address']}/api/jobs/{job['submission_id']}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.loads(resp.read(1 << 20))
    except urllib.error.HTTPError as exc:
        return "MISSING" if exc.code == 404 else "UNREACHABLE"
    except (OSError, ValueError):
        return "UNREACHABLE"
    status = data.get("status") if isinstance(data, dict) else None
    return str(status) if isinstance(status, str) else "UNREACHABLE"


def is_active(meta: dict[str, Any]) -> bool:
    return job_status(meta) in ACTIVE


def process_info(meta: dict[str, Any]) -> proc.ProcessInfo:
    """The run's "process" state from its Ray job, in the words the store uses for local processes."""
    job = _job(meta)
    status = job_status(meta)
    sid = job["submission_id"]
    if status in ACTIVE:
        return proc.ProcessInfo(proc.ALIVE, None, f"Ray job {sid} {status.lower()}")
    if status == "UNREACHABLE":
        return proc.ProcessInfo(proc.UNKNOWN, None, f"Ray dashboard {job['address']} does not answer")
    return proc.ProcessInfo(proc.DEAD, None, f"Ray job {sid} {status.lower()}")


def refuse_if_active(meta: dict[str, Any], run_id: str) -> None:
    status = job_status(meta)
    sid = _job(meta)["submission_id"]
    if status in ACTIVE:
        raise RunStateError(f"run {run_id!r} is already running as Ray job {sid}")
    if status == "UNREACHABLE":
        raise RunStateError(
            f"run {run_id!r}: the Ray dashboard at {_job(meta)['address']} does not answer, so whether job "
            f"{sid} still runs is unknown; refusing to start a second copy"
        )


def _client(address: str) -> Any:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise RayJobError(
            "Ray is not installed; install the server extra: pip install 'twinkle-auto[server]'"
        ) from None
    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        raise RayJobError(
            f"cannot reach the Ray dashboard at {address}: {' '.join(str(exc).split())[:200]}"
        ) from None


def job_env(spec: LaunchSpec, extra: dict[str, str]) -> dict[str, str]:
    """The job's variables: the run's own settings and the let-through credentials, never our environment.

    A node has its own PATH and libraries; only what the person set for the run travels with it.
    """
    env = dict(spec.env)
    for name in spec.pass_env:
        if name in os.environ:
            env[name] = os.environ[name]
    if spec.source_dir:
        env["PYTHONPATH"] = spec.source_dir
    env.update(extra)
    return env


def submit(
    controller: RunController, run_id: str, spec: LaunchSpec, *, count: int, version: int, reason: str
) -> LaunchResult:
    """Submit train.py as a Ray job and record it; called by the controller under the run lock."""
    from twinkle_auto.connection.control import LaunchResult

    folder = controller.store.path(run_id)
    address = resolve_address(spec.ray_address)
    client = _client(address)
    script = folder / fmt.SCRIPT_FILE
    cwd = spec.working_dir(folder)
    # The nodes share the run folders (they write metrics there), so the job runs the run's train.py in
    # place, from the recorded working directory: nothing is uploaded, relative paths keep working.
    argv = [spec.interpreter if Path(spec.interpreter).exists() else "python", "-u", str(script), *spec.args]
    entrypoint = f"cd {shlex.quote(str(cwd))} && exec {shlex.join(argv)}"
    extra = {
        fmt.ENV_RUN_ID: run_id,
        fmt.ENV_HOME: str(controller.store.home),
        fmt.ENV_OUTPUT_CAPTURED: "1",
        ENV_LAUNCHED: "1",
        "PYTHONUNBUFFERED": "1",
    }
    submission_id = f"twinkle-{run_id}-{count}-{uuid.uuid4().hex[:8]}"
    log_path = folder / fmt.LOG_FILE
    with open(log_path, "ab") as log:
        log.write(
            f"\n===== twinkle-auto: launch #{count} ({reason}) of train.py v{version} as Ray job "
            f"{submission_id} at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode()
        )
    try:
        client.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id,
            runtime_env={"env_vars": job_env(spec, extra)},
            metadata={"twinkle_run_id": run_id},
        )
    except Exception as exc:
        raise RayJobError(f"Ray refused the job: {' '.join(str(exc).split())[:300]}") from None
    job = {"address": address, "submission_id": submission_id, "submitted_at": fmt.now()}

    def _merge(m: dict[str, Any]) -> dict[str, Any]:
        m["status"] = fmt.RUNNING
        for key in ("end_time", "error", "exit_code", "pid", "pgid", "pid_create_time"):
            m.pop(key, None)
        m["ray_job"] = job
        m["launch_count"] = count
        m["script_version"] = version
        m["launch"] = spec.to_meta()
        m["launch_env"] = dict(spec.env)
        m["host"] = spec.host
        m["launched_at"] = fmt.now()
        m.setdefault("start_time", fmt.now())
        return m

    try:
        fmt.update_meta(folder, transform=_merge)
    except BaseException as exc:
        try:
            client.stop_job(submission_id)
        except Exception:
            pass
        raise RunError(
            f"run {run_id!r}: could not record Ray job {submission_id} ({exc}); the job was stopped"
        ) from None
    _start_streamer(folder, address, submission_id)
    return LaunchResult(run_id, 0, count, version, ray_job=submission_id)


def _start_streamer(folder: Path, address: str, submission_id: str) -> None:
    """A detached process that appends the job's log to output.log and records how the job ended."""
    env = proc.child_env({**RAY_ENV, "PYTHONUNBUFFERED": "1"})
    child, ctime = proc.spawn_logged(
        [sys.executable, "-m", "twinkle_auto.connection.ray_jobs", str(folder), address, submission_id],
        log_path=folder / "ray_stream.log",
        marker=f"log streamer for {submission_id}",
        env=env,
    )
    fmt.update_meta(folder, {"ray_job": {"streamer_pid": child.pid, "streamer_create_time": ctime}})


def stream(folder: Path, address: str, submission_id: str) -> int:
    """Copy the job's log into output.log as it grows; at the end, record the job's outcome in meta.json."""
    log_path = folder / fmt.LOG_FILE
    sent = 0
    meta_job = {"ray_job": {"address": address, "submission_id": submission_id}}
    unreachable_since: float | None = None
    while True:
        status = job_status(meta_job)
        if status == "UNREACHABLE":
            # the cluster is gone (or the network): stop streaming after a while, the job is lost to us
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > STREAM_GIVE_UP_S:
                break
        else:
            unreachable_since = None
        try:
            with urllib.request.urlopen(f"{address}/api/jobs/{submission_id}/logs", timeout=10) as resp:
                logs = json.loads(resp.read()).get("logs") or ""
        except (OSError, ValueError):
            logs = None
        if isinstance(logs, str) and len(logs) > sent:
            with open(log_path, "ab") as f:
                f.write(logs[sent:].encode("utf-8", "replace"))
            sent = len(logs)
        if status in TERMINAL or status == "MISSING":
            break
        time.sleep(STREAM_INTERVAL_S)
    info: dict[str, Any] = {}
    try:
        with urllib.request.urlopen(f"{address}/api/jobs/{submission_id}", timeout=10) as resp:
            info = json.loads(resp.read())
    except (OSError, ValueError):
        pass

    def _merge(m: dict[str, Any]) -> dict[str, Any]:
        job = m.get("ray_job")
        if not isinstance(job, dict) or job.get("submission_id") != submission_id:
            return m  # resubmitted meanwhile; this job is history
        job["final_status"] = status
        code = info.get("driver_exit_code")
        if isinstance(code, int):
            m["exit_code"] = code
        if m.get("status") == fmt.RUNNING:
            if status == "SUCCEEDED":
                m["status"] = fmt.FINISHED
            elif status in ("FAILED", "MISSING"):
                m["status"] = fmt.FAILED
                msg = (
                    info.get("message")
                    if isinstance(info.get("message"), str)
                    else f"Ray job {status.lower()}"
                )
                m.setdefault("error", " ".join(msg.split())[:300])
            elif status == "STOPPED":
                m["status"] = fmt.STOPPED
            m.setdefault("end_time", fmt.now())
        return m

    fmt.update_meta(folder, transform=_merge)
    return 0


def stop_job(meta: dict[str, Any], *, grace: float) -> bool:
    """Stop the job (Ray sends SIGTERM, then SIGKILL); True when it had to be killed or did not end."""
    job = _job(meta)
    client = _client(job["address"])
    try:
        client.stop_job(job["submission_id"])
    except Exception as exc:
        raise RayJobError(
            f"Ray could not stop job {job['submission_id']}: {' '.join(str(exc).split())[:200]}"
        ) from None
    deadline = time.monotonic() + max(grace, 0.0) + 10.0
    status = job_status(meta)
    while status in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.2)
        status = job_status(meta)
    return status in ACTIVE


def job_logs(meta: dict[str, Any]) -> str:
    """The job's whole driver log, from Ray (output.log has the same text, streamed)."""
    job = _job(meta)
    return str(_client(job["address"]).get_job_logs(job["submission_id"]))


if __name__ == "__main__":  # the streamer: python -m twinkle_auto.connection.ray_jobs FOLDER ADDRESS ID
    sys.exit(stream(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
