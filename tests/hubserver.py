"""A local HTTP server on 127.0.0.1 that answers like the ModelScope hub, for tests of the real client.

Point the modelscope client at it with `MODELSCOPE_ENDPOINT=server.url`. It speaks the parts of the hub
that twinkle-auto uses, in the shapes `modelscope_hub` 0.5 parses:

* GET /openapi/v1/models|datasets|skills?search=&page_number=&page_size= →
  `{"success": true, "request_id": …, "data": {"models": […], "total_count": N, "page_number": p,
  "page_size": s}}`, entries as the OpenAPI lists them (id "owner/name", display_name, downloads, likes,
  tasks, license, created_at, last_modified ISO-8601 with Z, private, gated).
* GET /api/v1/skills/{owner}/{name}/archive/zip/{revision} → a zip whose single top folder holds the
  skill's files (the client flattens it), as the hub serves skill repositories.
* Errors as the OpenAPI surface sends them: HTTP status plus
  `{"success": false, "code": "InternalServerError", "message": …, "request_id": …}`.

Each route can be told to fail, answer slowly, or answer with a body that is not JSON. Every request is
recorded in `requests` for assertions.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROUTES = ("models", "datasets", "skills", "archive")


@dataclass
class Behaviour:
    kind: str = "ok"  # ok | error | slow | malformed
    status: int = 200
    code: str = ""
    message: str = ""
    delay: float = 0.0
    body: bytes = b""


def model_entry(
    repo_id: str,
    downloads: int = 0,
    task: str = "text-generation",
    updated: str = "2025-03-01T08:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    """One entry of /openapi/v1/models or /datasets as the hub lists it."""
    entry = {
        "id": repo_id,
        "display_name": repo_id.split("/", 1)[-1],
        "description": f"{repo_id} description",
        "downloads": downloads,
        "likes": downloads // 100,
        "tasks": [task] if task else [],
        "license": "apache-2.0",
        "created_at": "2024-09-18T10:00:00Z",
        "last_modified": updated,
        "private": False,
        "gated": False,
    }
    entry.update(extra)
    return entry


class HubServer:
    """The fake hub; use as a context manager (binds 127.0.0.1 on a free port)."""

    def __init__(self) -> None:
        self.models: list[dict[str, Any]] = []
        self.datasets: list[dict[str, Any]] = []
        self.skills: dict[str, dict[str, str]] = {}
        """repo_id -> {file name: text}; listed under /skills and served as zip archives."""
        self.behaviour: dict[str, Behaviour] = {route: Behaviour() for route in ROUTES}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------- control
    def fail(
        self, route: str, status: int = 500, code: str = "InternalServerError", message: str = "boom"
    ) -> None:
        self.behaviour[route] = Behaviour("error", status=status, code=code, message=message)

    def slow(self, route: str, delay: float) -> None:
        self.behaviour[route] = Behaviour("slow", delay=delay)

    def malformed(self, route: str, body: bytes = b"<html><body>502 Bad Gateway</body></html>") -> None:
        self.behaviour[route] = Behaviour("malformed", body=body)

    def reset(self, route: str) -> None:
        self.behaviour[route] = Behaviour()

    def hits(self, route: str) -> int:
        prefix = "/api/v1/skills/" if route == "archive" else f"/openapi/v1/{route}"
        return sum(1 for _, path, _ in self.requests if path.startswith(prefix))

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HubServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                hub._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.02), name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); the port then refuses connections."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------------------------- handling
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.requests.append(("GET", parts.path, query))
        route, args = self._route(parts.path)
        if route is None:
            return self._send_json(req, 404, self._error("ResourceNotFound", f"no route {parts.path}"))
        behaviour = self.behaviour[route]
        if behaviour.kind == "slow":
            deadline = time.monotonic() + behaviour.delay
            while time.monotonic() < deadline and not self._stopping.is_set():
                time.sleep(0.02)
            if self._stopping.is_set():
                return None
        if behaviour.kind == "error":
            return self._send_json(req, behaviour.status, self._error(behaviour.code, behaviour.message))
        if behaviour.kind == "malformed":
            return self._send(req, 200, behaviour.body, "text/html")
        if route == "archive":
            return self._send_archive(req, *args)
        return self._send_json(req, 200, self._listing(route, query))

    @staticmethod
    def _route(path: str) -> tuple[str | None, tuple[str, ...]]:
        for route in ("models", "datasets", "skills"):
            if path.rstrip("/") == f"/openapi/v1/{route}":
                return route, ()
        bits = path.strip("/").split("/")
        # api/v1/skills/{owner}/{name}/archive/zip/{revision}
        if len(bits) == 8 and bits[:3] == ["api", "v1", "skills"] and bits[5:7] == ["archive", "zip"]:
            return "archive", (f"{bits[3]}/{bits[4]}",)
        return None, ()

    def _listing(self, route: str, query: dict[str, str]) -> dict[str, Any]:
        if route == "skills":
            entries = [self._skill_entry(repo_id) for repo_id in self.skills]
        else:
            entries = self.models if route == "models" else self.datasets
        terms = query.get("search", "").lower().split()

        def matches(entry: dict[str, Any]) -> bool:
            text = f"{entry.get('id', '')} {entry.get('display_name', '')}".lower()
            return all(term in text for term in terms)

        found = [e for e in entries if matches(e)]
        page = max(1, int(query.get("page_number", "1")))
        size = max(1, int(query.get("page_size", "10")))
        items = found[(page - 1) * size : page * size]
        data = {route: items, "total_count": len(found), "page_number": page, "page_size": size}
        return {"success": True, "request_id": uuid.uuid4().hex, "data": data}

    def _skill_entry(self, repo_id: str) -> dict[str, Any]:
        owner, name = repo_id.split("/", 1)
        return {
            "id": repo_id,
            "owner": owner,
            "name": name,
            "display_name": name,
            "description": f"community skill {name}",
            "downloads": 1,
            "category": "developer-tools",
            "last_modified": "2025-05-01T00:00:00Z",
        }

    def _send_archive(self, req: BaseHTTPRequestHandler, repo_id: str) -> None:
        files = self.skills.get(repo_id)
        if files is None:
            return self._send_json(req, 404, self._error("ResourceNotFound", f"skill {repo_id} not found"))
        buffer = io.BytesIO()
        top = repo_id.split("/", 1)[1]
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, text in files.items():
                zf.writestr(f"{top}/{name}", text)
        return self._send(req, 200, buffer.getvalue(), "application/zip")

    @staticmethod
    def _error(code: str, message: str) -> dict[str, Any]:
        return {"success": False, "request_id": uuid.uuid4().hex, "code": code, "message": message}

    def _send_json(self, req: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        self._send(req, status, json.dumps(payload).encode(), "application/json")

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        try:
            req.send_response(status)
            req.send_header("Content-Type", content_type)
            req.send_header("Content-Length", str(len(body)))
            req.send_header("X-Request-Id", uuid.uuid4().hex)
            req.end_headers()
            req.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass
