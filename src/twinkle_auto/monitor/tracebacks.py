"""Say whether the error that ended a run is fixed by editing its script (CODE) or not (ENV).

Why deterministic: the fix loop must not ask an LLM to rewrite a script because the GPU ran out of memory,
the disk filled up or two installed packages disagree. Parsing the log (prefixes, chains, ranks, cut
tracebacks) is `connection/tracebacks.py`'s job; this module judges what it found, by the words of the
exception (the tables below) and by *where* it was raised:

- a write that failed in the storage layer (EIO, ENOSPC, "failed writing file") is the disk, not the code;
- a TypeError/AttributeError raised inside installed packages, about an argument or attribute the user's
  code never names, is a version mismatch between two libraries (ENV, `pip` hint) — the same words
  raised from the user's own call are a wrong argument (CODE);
- a bare `SomeError: message` line without frames is a crash only when it is the process's last output
  and the process did not exit 0 (reporters paste only the last line; a script that logs a handled
  error and goes on has not crashed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twinkle_auto.connection.tracebacks import (
    Frame,
    ParsedTraceback,
    parse_traceback,
    strip_prefixes,
    user_frames,
)

# --- the environment table ---------------------------------------------------------------------------------
# (category, pattern) checked in order against the exception lines of the fatal traceback, or, when the log
# has no traceback at all, against each log line. First match wins. ENV means "a rewrite of the training
# script will not fix this": hardware, drivers, cluster, disk, network, the installed packages.
ENV_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern, re.MULTILINE))
    for category, pattern in (
        (
            "cuda_oom",
            r"CUDA out of memory|\bOutOfMemoryError\b|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED"
            r"|(?:HIP|MPS backend|XPU|NPU) out of memory|\bResourceExhaustedError\b|OOM when allocating tensor"
            r"|RESOURCE_EXHAUSTED: Out of memory",
        ),
        (
            "no_gpu",
            r"No CUDA GPUs are available|no CUDA-capable device is detected|Found no NVIDIA driver"
            r"|NVIDIA driver on your system is too old|CUDA driver version is insufficient"
            r"|Torch not compiled with CUDA enabled|CUDA_ERROR_NO_DEVICE|cudaErrorNoDevice",
        ),
        (
            "nccl",
            r"Watchdog caught collective operation timeout|collective operation timeout|NCCL error"
            r"|NCCL communicator was aborted|\bnccl(?:UnhandledCudaError|SystemError|InternalError|RemoteError)\b"
            r"|\bDistBackendError\b|\bDistNetworkError\b|Rendezvous(?:Timeout|Connection)Error"
            r"|ProcessGroupNCCL.*(?:[Tt]imeout|timed out)|Heartbeat monitor timed out"
            r"|Connection closed by peer|TCPStore.*(?:timed out|Connection reset)|NCCL timeout",
        ),
        (
            "cuda_error",
            r"CUDA error|CUDA driver error|CUDNN_STATUS_\w+|cuDNN error|CUBLAS_STATUS_\w+"
            r"|illegal memory access|uncorrectable ECC error|cuDNN failed to initialize|Blas GEMM launch failed"
            r"|CUDA Setup failed|no kernel image is available",
        ),
        (
            "disk_full",
            r"No space left on device|Disk quota exceeded|\[Errno 28\]|\[Errno 122\]|os error 28|\bENOSPC\b"
            r"|[Nn]ot enough (?:free )?disk space|[Ii]nsufficient disk space|disk is full",
        ),
        (
            "storage",
            r"\[Errno 5\]|Input/output error|os error 5\b|\bEIO\b|failed writing file|file write failed"
            r"|Read-only file system|\[Errno 30\]|Stale file handle|\[Errno 116\]|Remote I/O error"
            r"|Transport endpoint is not connected",
        ),
        (
            "host_oom",
            r"\bMemoryError\b|DefaultCPUAllocator: can't allocate memory|Cannot allocate memory"
            r"|DataLoader worker \(pid.*\) is killed by signal|\bBus error\b|unable to write to file </torch_",
        ),
        (
            "killed",
            r"^\s*Killed\s*$|Out of memory: Killed process|\boom-kill|Signal 9 \(SIGKILL\)|Signals\.SIGKILL"
            r"|exit(?:code| status)\s*:?\s*-9\b",
        ),
        (
            "native_crash",
            r"Segmentation fault|\bcore dumped\b|Fatal Python error: (?:Segmentation|Aborted|Bus)|\bSIGSEGV\b"
            r"|Signal 11 \(SIGSEGV\)|exit(?:code| status)\s*:?\s*-(?:11|6)\b|Illegal instruction",
        ),
        (
            "auth",
            r"\bGatedRepoError\b|401 Client Error|403 Client Error|Invalid user token|Invalid credentials"
            r"|You are trying to access a gated repo|\bUnauthorized\b for url",
        ),
        (
            "network",
            r"\bConnection(?:Refused|Reset|Aborted)?Error\b|Connection refused|Connection reset"
            r"|Couldn't reach|Max retries exceeded|Failed to establish a new connection"
            r"|Temporary failure in name resolution|Name or service not known|Network is unreachable"
            r"|\b(?:Read|Connect)Timeout(?:Error)?\b|Read timed out|\bSSLError\b|RemoteDisconnected"
            r"|\bProxyError\b|We couldn't connect to|\bNetworkError\b|\bLocalEntryNotFoundError\b"
            r"|\bHTTPError\b|\bHfHubHTTPError\b|\bTimeoutError\b|socket\.timeout",
        ),
        (
            "missing_package",
            r"\bModuleNotFoundError\b|No module named|\bPackageNotFoundError\b"
            r"|ImportError:.*(?:pip install|is not installed|requires the)"
            r"|requires the \S+ library but it was not found",
        ),
        ("interrupted", r"\bKeyboardInterrupt\b|Signals\.SIGTERM|SIGTERM received"),
    )
)

# Checked before ENV_PATTERNS: messages that look environmental but are fixed by editing the script.
CODE_OVERRIDES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # An index/label out of range inside a kernel: "CUDA error: device-side assert triggered".
    ("device_side_assert", re.compile(r"device-side assert")),
    # A wrong model/dataset id is a typo in the script, not a network failure.
    (
        "repo_not_found",
        re.compile(
            r"RepositoryNotFoundError|RevisionNotFoundError|(?<!Local)EntryNotFoundError|404 Client Error"
            r"|is not a local folder and is not a valid model identifier|DatasetNotFoundError"
        ),
    ),
)


# A storage error whose words alone could be a wrong path in the script counts only on a write path.
WRITE_PATH_ERRORS = re.compile(r"cannot be opened|unexpected pos \d+|Permission denied.*checkpoint")
"""torch.save's `File x cannot be opened` / `unexpected pos` when the volume fails mid-write."""
WRITE_FRAME_RE = re.compile(r"save|write|flush|dump|checkpoint|serializ|export", re.IGNORECASE)

# API mismatch shapes: (group name of the offending identifier) in a TypeError/AttributeError/ImportError.
API_MISMATCH_RE = re.compile(
    r"(?P<callee>\w+\.[\w.]+)\(\) got an unexpected keyword argument '(?P<name>\w+)'"
    r"|'(?P<owner>\w+)' object has no attribute '(?P<name4>\w+)'"
    r"|module '(?P<module>[\w.]+)' has no attribute '(?P<name5>\w+)'"
    r"|cannot import name '(?P<name6>\w+)' from '(?P<module2>[\w.]+)'"
)
"""Signature and attribute errors that a version skew produces. The callee must be qualified
(`Class.method()`): a bare function name is as often a callback the user wrote and handed to a library
(a reward function, a collator), whose wrong signature is a script bug."""
API_MISMATCH_EXCEPTIONS = frozenset({"TypeError", "AttributeError", "ImportError"})
VALUE_OWNERS = frozenset({"NoneType", "int", "float", "str", "list", "dict", "tuple", "bool", "Tensor"})
"""`'NoneType' object has no attribute x` is a value the code did not expect (CODE), not a version skew."""


def _match_table(text: str) -> tuple[str, str] | None:
    """('CODE'|'ENV', category) from the override and environment tables, or None."""
    for category, pattern in CODE_OVERRIDES:
        if pattern.search(text):
            return "CODE", category
    for category, pattern in ENV_PATTERNS:
        if pattern.search(text):
            return "ENV", category
    return None


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(frame: Frame | None) -> str:
    if frame is None:
        return ""
    line = f":{frame.line}" if frame.line is not None else ""
    return f"{frame.file}{line} in {frame.function}" if frame.function else f"{frame.file}{line}"


def _frames_data(frames: tuple[Frame, ...], limit: int = 6) -> list[dict[str, Any]]:
    return [
        {"file": f.file, "line": f.line, "function": f.function, "code": f.code, "origin": f.origin}
        for f in frames[-limit:]
    ]


def _origin(parsed: ParsedTraceback) -> str:
    """Where the deciding exception was raised, in words a user reads in the finding."""
    if not parsed.frames:
        return "no frames in the log"
    inner = parsed.frames[-1]
    users = user_frames(parsed)
    if inner.origin == "user":
        return f"raised in your code ({_where(inner)})"
    if users:
        return f"raised inside {inner.package or inner.origin} ({_where(inner)}), called from your code ({_where(users[-1])})"
    return (
        f"raised inside {inner.package or inner.origin} ({_where(inner)}); no frame of your code in the log"
    )


def _on_write_path(parsed: ParsedTraceback) -> bool:
    frames = [f for exc in parsed.chain for f in exc.frames]
    return any(WRITE_FRAME_RE.search(f"{f.function} {f.code}") for f in frames)


def _mismatch_names(parsed: ParsedTraceback) -> tuple[str, str, str] | None:
    """(offending name, callee, owner) when the deciding exception has an API-mismatch shape."""
    if parsed.short_name not in API_MISMATCH_EXCEPTIONS:
        return None
    match = API_MISMATCH_RE.search(parsed.message)
    if not match:
        return None
    groups = match.groupdict()
    name = next((groups[k] for k in ("name", "name4", "name5", "name6") if groups[k]), "")
    callee = groups.get("callee") or ""
    owner = groups.get("owner") or groups.get("module") or groups.get("module2") or ""
    return name, callee, owner


def _mentions(script: str, name: str, callee: str) -> dict[str, bool]:
    """Whether the script passes/uses `name` (as `name=`, `.name`, `'name'`) and defines the callee."""
    out = {}
    if name:
        pattern = rf"\b{re.escape(name)}\s*=|\.{re.escape(name)}\b|['\"]{re.escape(name)}['\"]"
        out[name] = bool(re.search(pattern, script))
    short = callee.split(".")[-1] if callee else ""
    if short and not short.startswith("__"):
        out[f"def {short}"] = bool(
            re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(short)}\b", script, re.M)
        )
    owner = callee.split(".")[0] if callee else ""
    if owner:
        out[f"class {owner}"] = bool(re.search(rf"^\s*class\s+{re.escape(owner)}\b", script, re.M))
    return out


def script_mentions(log_tail: str, script: str | Callable[[], str | None] | None) -> dict[str, bool] | None:
    """What the training script says about the identifiers of the error in the log, as a tiny dict.

    The monitor keeps it in its state instead of the script's text: for a TypeError about keyword 'k'
    raised in a library, {'k': True} means the user passes it (a script bug), False a version skew.
    None when the log has no such error or there is no script.
    """
    if not script or not log_tail:
        return None
    parsed = parse_traceback(log_tail)
    names = _mismatch_names(parsed) if parsed is not None else None
    if names is None:
        return None
    text = script() if callable(script) else script  # read only when the log has such an error
    if not text:
        return None
    name, callee, owner = names
    return _mentions(text, name, callee or owner)


def _named_by_user(
    name: str, callee: str, parsed: ParsedTraceback, script: str | dict[str, bool] | None
) -> bool:
    """Whether the user's code passes/defines the offending identifier, or calls the failing callable."""
    if callee.startswith("__main__.") or callee.startswith("<"):
        return True
    short = callee.split(".")[0] if callee else ""
    users = user_frames(parsed)
    for frame in users[-1:]:
        if short and re.search(rf"\b{re.escape(short)}\s*\(", frame.code):
            return True  # the user's own call to the callable that rejected the argument
    for frame in users:
        if name and re.search(rf"\b{re.escape(name)}\b", frame.code):
            return True
    mentions = _mentions(script, name, callee) if isinstance(script, str) else (script or {})
    return any(mentions.values())


def _api_mismatch(parsed: ParsedTraceback, script: str | dict[str, bool] | None) -> dict[str, Any] | None:
    """A TypeError/AttributeError/ImportError raised between installed packages about a name the user's
    code never uses: the installed versions do not fit together (ENV, with a pip hint)."""
    if not parsed.frames or parsed.frames[-1].origin != "library":
        return None
    names = _mismatch_names(parsed)
    if names is None:
        return None
    name, callee, owner = names
    if owner in VALUE_OWNERS:
        return None
    if _named_by_user(name, callee or owner, parsed, script):
        return None
    inner = parsed.frames[-1]
    users = user_frames(parsed)
    after = parsed.frames[parsed.frames.index(users[-1]) + 1 :] if users else parsed.frames
    packages = list(dict.fromkeys(f.package for f in after if f.package))
    target = callee or owner
    if len(packages) >= 2:
        between = f"{packages[0]} and {packages[-1]}"
        pip = f"pip install -U {packages[0]} {packages[-1]}"
    else:
        first = packages[0] if packages else (inner.package or "an installed package")
        between = f"{first} and the package that defines {target}" if target else first
        pip = f"pip install -U {first}" if packages else "pip install -U <the package named above>"
    hint = (
        f"{between} do not fit together: {target or 'the callee'} does not accept '{name}' here, and your "
        f"code never passes it. Install matching versions ({pip}, or pin the older release of the other); "
        "`pip check` lists known conflicts."
    )
    return {
        "packages": packages,
        "callee": target,
        "name": name,
        "between": between,
        "hint": hint,
        "pip": pip,
    }


def classify_parsed(
    parsed: ParsedTraceback | None,
    log_tail: str = "",
    *,
    script: str | dict[str, bool] | None = None,
    exit_code: int | None = None,
) -> dict[str, Any] | None:
    """The verdict on an already parsed traceback (see `classify_error`)."""
    if parsed is None or not parsed.exception:
        return _classify_log_lines(log_tail) if parsed is None else _cut_only(parsed, log_tail)
    if parsed.kept_training:  # handled: the run went on training after it (principle 6)
        return _classify_log_lines(log_tail[parsed.span[1] :])
    name = parsed.exception
    exception_text = "\n".join(f"{e.exception}: {e.message}" for e in parsed.chain)
    base: dict[str, Any] = {
        "exception": name,
        "message": _one_line(parsed.message),
        "origin": _origin(parsed),
        "where": _where(parsed.innermost),
        "frames": _frames_data(parsed.frames),
        "rank": parsed.rank,
    }
    if parsed.context:
        first = parsed.context[0]
        base["context"] = _one_line(f"{first.exception}: {first.message}", 300)
    verdict = _match_table(exception_text)
    if verdict is None and WRITE_PATH_ERRORS.search(exception_text) and _on_write_path(parsed):
        verdict = ("ENV", "storage")
    if not parsed.has_frames:
        if verdict is not None and verdict[0] == "ENV":
            return {"kind": "ENV", "category": verdict[1], **base}
        env = _classify_log_lines(log_tail)
        if env is not None:
            return env
        if not parsed.final or exit_code == 0:
            return None  # a logged, handled error, or a process that ended well: not a crash
        return {"kind": "CODE", "category": verdict[1] if verdict else parsed.short_name, **base}
    if verdict is None:
        mismatch = _api_mismatch(parsed, script)
        if mismatch is not None:
            base["origin"] += f"; dependency mismatch between {mismatch['between']}"
            return {"kind": "ENV", "category": "dependency_mismatch", **base, **mismatch}
        verdict = ("CODE", parsed.short_name)
    return {"kind": verdict[0], "category": verdict[1], **base}


def _cut_only(parsed: ParsedTraceback, log_tail: str) -> dict[str, Any] | None:
    """A traceback whose exception line never made it to the log: only the log lines can say ENV."""
    return _classify_log_lines(log_tail)


def _classify_log_lines(log_tail: str) -> dict[str, Any] | None:
    """No traceback: environment failures that print no Python exception (NCCL watchdog, OOM killer, the
    runtime's own `cannot write ... [Errno 28]`)."""
    for raw in reversed((log_tail or "").splitlines()):
        line = strip_prefixes(raw).text
        verdict = _match_table(line)
        if verdict is not None and verdict[0] == "ENV":
            return {
                "kind": "ENV",
                "category": verdict[1],
                "exception": "",
                "message": _one_line(line),
                "origin": "log line (no traceback)",
            }
    return None


def classify_error(
    log_tail: str, *, script: str | dict[str, bool] | None = None, exit_code: int | None = None
) -> dict[str, Any] | None:
    """Classify why a process died from its log tail, or None when the log shows no error that ended it.

    {"kind": "CODE"|"ENV", "category", "exception", "message", "origin", "where", "frames", ...}. `origin`
    says where the error was raised (your code, a library called from it, only libraries, a log line).
    `script` (the training script's text, or `script_mentions()` of it) tells a wrong argument the user
    passed from a version skew;
    `exit_code` 0 means a frameless error line was handled, not fatal.
    """
    if not log_tail:
        return None
    return classify_parsed(parse_traceback(log_tail), log_tail, script=script, exit_code=exit_code)


def last_traceback(text: str) -> str | None:
    """The traceback that decides (the chain included), verbatim, or the bare final error line; else None."""
    parsed = parse_traceback(text) if text else None
    if parsed is None:
        return None
    return parsed.text.strip("\n") or None
