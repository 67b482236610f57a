"""Find the fatal Python traceback in a log tail and say whether a script edit could fix it.

Why this is deterministic: the fix loop must not ask an LLM to rewrite a script because the GPU ran out of
memory or the network dropped. Logs are messy: torchrun prefixes every line with `[rank0]:`, Ray with
`(Worker pid=..)`, issue pastes with `> `; reporters and log tails cut the head off a traceback, or keep
only its last line; interpreter shutdown adds harmless "Exception ignored in:" tracebacks after the real
one; launchers (torchrun, accelerate) end with a wrapper exception that hides the child's error.
"""

from __future__ import annotations

import re

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
            r"|(?:HIP|MPS backend|XPU|NPU) out of memory",
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
            r"|ProcessGroupNCCL.*(?:[Tt]imeout|timed out)|Heartbeat monitor timed out",
        ),
        (
            "cuda_error",
            r"CUDA error|CUDA driver error|CUDNN_STATUS_\w+|cuDNN error|CUBLAS_STATUS_\w+"
            r"|illegal memory access|uncorrectable ECC error",
        ),
        (
            "disk_full",
            r"No space left on device|Disk quota exceeded|\[Errno 28\]|os error 28|\bENOSPC\b"
            r"|not enough free disk space",
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
            r"RepositoryNotFoundError|RevisionNotFoundError|EntryNotFoundError|404 Client Error"
            r"|is not a local folder and is not a valid model identifier|DatasetNotFoundError"
        ),
    ),
)

# Exceptions raised by launchers about a child that failed: the child's own traceback says why.
WRAPPER_EXCEPTIONS = frozenset({"ChildFailedError", "CalledProcessError", "ProcessRaisedException"})

# --- line shapes -------------------------------------------------------------------------------------------
_PREFIX_RE = re.compile(r"^(?:\[(?:rank|default)\d+\]:\s?|\([\w.-]+ pid=\d+[^)]*\)\s?|>\s?)+")
_HEADER_RE = re.compile(r"Traceback \(most recent call last\)")
_CHAIN_RE = re.compile(
    r"^(?:During handling of the above exception, another exception occurred"
    r"|The above exception was the direct cause of the following exception):?\s*$"
)
_IGNORED_RE = re.compile(r"^Exception ignored in\b")
_EXC_NAME = (
    r"(?:[A-Za-z_]\w*\.)*(?:[A-Z]\w*(?:Error|Exception|Failure|Fault)"
    r"|KeyboardInterrupt|SystemExit|StopIteration|StopAsyncIteration|GeneratorExit)"
)
_EXC_RE = re.compile(rf"^(?P<name>{_EXC_NAME})(?::[ \t]*(?P<msg>.*?))?\s*$")
_FRAME_RE = re.compile(r"^\s*(?:File [\"~/\\.\w]|Cell In\[|-*>\s*\d+\s)")
_ELLIPSIS_RE = re.compile(r"^\s*(?:\.{3,}|…+)\s*$")
_PROGRESS_RE = re.compile(r"\d+%\||\|\s*\d+/\d+\s*\[")
_MAX_MESSAGE_LINES = 25
_CUT_FRAME_LINES = 2


def _normalize(line: str) -> str:
    """Drop launcher prefixes (`[rank0]:`, `(Worker pid=1)`, `> `) but keep the indentation after them."""
    return _PREFIX_RE.sub("", line, count=1)


def _is_exception_line(norm: str) -> bool:
    match = _EXC_RE.match(norm)
    return bool(match) and (match.group("msg") is not None or norm.strip() == match.group("name"))


def _is_frame_body(norm: str) -> bool:
    """A line that can sit inside a traceback: a frame, indented code or carets, an elision, a blank."""
    return not norm.strip() or norm[:1] in " \t" or bool(_FRAME_RE.match(norm) or _ELLIPSIS_RE.match(norm))


def _message_end(norms: list[str], exc: int) -> int:
    """Index of the last line of a (possibly multi-line) exception message starting at `exc`."""
    end = exc
    for j in range(exc + 1, min(len(norms), exc + 1 + _MAX_MESSAGE_LINES)):
        line = norms[j]
        if (
            not line.strip()
            or _HEADER_RE.search(line)
            or _CHAIN_RE.match(line)
            or _IGNORED_RE.match(line)
            or _PROGRESS_RE.search(line)
            or _is_exception_line(line)
        ):
            break
        end = j
    return end


def _frames_start(norms: list[str], exc: int) -> int:
    """Walk back from an exception line to the start of its traceback (header, or first frame if cut)."""
    i = exc - 1
    while i >= 0 and _is_frame_body(norms[i]) and not _HEADER_RE.search(norms[i]):
        i -= 1
    if i >= 0 and _HEADER_RE.search(norms[i]):
        return i
    body = range(i + 1, exc)
    frames = [j for j in body if _FRAME_RE.match(norms[j]) or _ELLIPSIS_RE.match(norms[j])]
    if not frames:
        return exc
    if i < 0 and frames[0] - (i + 1) <= _CUT_FRAME_LINES:
        # The text itself starts mid-frame (a pasted or tailed log): keep the cut frame's code line.
        return next(j for j in body if norms[j].strip())
    return frames[0]


def _chain_start(norms: list[str], start: int) -> int:
    """Extend a traceback upward over 'During handling of the above exception' links."""
    while _HEADER_RE.search(norms[start]):
        i = start - 1
        while i >= 0 and not norms[i].strip():
            i -= 1
        if i < 0 or not _CHAIN_RE.match(norms[i].strip()):
            break
        previous = next((j for j in range(i - 1, -1, -1) if _HEADER_RE.search(norms[j])), None)
        if previous is None:
            break
        start = previous
    return start


def _preceded_by_ignored(norms: list[str], start: int) -> bool:
    """Whether the block is an 'Exception ignored in:' report (harmless, e.g. at interpreter shutdown)."""
    i = start - 1
    while i >= 0 and not norms[i].strip():
        i -= 1
    return i >= 0 and bool(_IGNORED_RE.match(norms[i].strip()))


def _find_block(norms: list[str], before: int) -> tuple[int, int] | None:
    """(start, end) line indexes of the last fatal traceback that ends before line `before`."""
    i = before - 1
    while i >= 0:
        match = _EXC_RE.match(norms[i])
        if match and _is_exception_line(norms[i]):
            bare = match.group("msg") is None
            start = _frames_start(norms, i)
            if bare and start == i:  # a bare class name alone on a line is not evidence of a crash
                i -= 1
                continue
            start = _chain_start(norms, start)
            if _preceded_by_ignored(norms, start):
                i = start - 1
                continue
            return start, _message_end(norms, i)
        if _HEADER_RE.search(norms[i]):  # a traceback cut before its exception line (log still flushing)
            return _chain_start(norms, i), before - 1
        i -= 1
    return None


def _split(text: str) -> tuple[list[str], list[str]]:
    lines = text.splitlines()
    return lines, [_normalize(line) for line in lines]


def last_traceback(text: str) -> str | None:
    """The last fatal Python traceback in `text`, verbatim, or None.

    From its "Traceback (most recent call last):" line (or, when the head was cut off, its first surviving
    frame, or just the final `SomeError: msg` line) through the exception line(s), chained tracebacks
    included. "Exception ignored in:" reports are skipped: they are printed at shutdown and are not why the
    process died.
    """
    if not text:
        return None
    lines, norms = _split(text)
    block = _find_block(norms, len(norms))
    if block is None:
        return None
    start, end = block
    return "\n".join(lines[start : end + 1]).strip("\n") or None


def _exceptions_in(norm_block: list[str]) -> list[tuple[str, str]]:
    """(name, message) of each exception line in a block, message continuation lines joined."""
    found = []
    for idx, line in enumerate(norm_block):
        match = _EXC_RE.match(line)
        if not match or not _is_exception_line(line):
            continue
        end = _message_end(norm_block, idx)
        extra = [norm_block[j].strip() for j in range(idx + 1, end + 1)]
        message = " ".join([match.group("msg") or "", *extra]).strip()
        found.append((match.group("name"), message))
    return found


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


def _classify_lines(norms: list[str], before: int) -> dict | None:
    block = _find_block(norms, before)
    if block is None:
        return None
    start, end = block
    exceptions = _exceptions_in(norms[start : end + 1])
    if not exceptions:
        return None
    name, message = exceptions[-1]
    short = name.rsplit(".", 1)[-1]
    exception_text = "\n".join(f"{n}: {m}" for n, m in exceptions)
    verdict = _match_table(exception_text)
    if verdict is None and short in WRAPPER_EXCEPTIONS:
        # torchrun/accelerate say only that a child failed; the child's traceback sits above.
        return _classify_lines(norms, start)
    if verdict is None:
        verdict = ("CODE", short)
    kind, category = verdict
    return {"kind": kind, "category": category, "exception": name, "message": _one_line(message)}


def _classify_log_lines(norms: list[str]) -> dict | None:
    """No traceback: look for environment failures that print no Python exception (NCCL watchdog, OOM killer)."""
    for line in reversed(norms):
        verdict = _match_table(line)
        if verdict is not None and verdict[0] == "ENV":
            return {"kind": "ENV", "category": verdict[1], "exception": "", "message": _one_line(line)}
    return None


def classify_error(log_tail: str) -> dict | None:
    """Classify why a process died from its log tail: {"kind", "category", "exception", "message"} or None.

    kind is "ENV" when the failure is environmental (see ENV_PATTERNS: OOM, CUDA/NCCL, disk, network, a
    missing package, no GPU, the OOM killer), "CODE" for any other Python exception (category = its class
    name, or a CODE_OVERRIDES category). None when the log shows no error at all, or only a launcher's
    wrapper exception with nothing underneath.
    """
    if not log_tail:
        return None
    _, norms = _split(log_tail)
    result = _classify_lines(norms, len(norms))
    return result if result is not None else _classify_log_lines(norms)
