"""A small scripted OpenAI-compatible HTTP server on 127.0.0.1 for deterministic wire tests.

It answers /v1/chat/completions (plain and streamed as server-sent events) and /v1/models. A script is a
list of rules: the first whose `match` is in the last user message (or `after_tool` when the last message
is a tool result) gives the answer — text, tool calls, an HTTP error, a delay, or malformed arguments.
Every request body is recorded for assertions.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Rule:
    match: str = ""
    """Substring of the last user message ('' matches anything)."""
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    """(name, arguments); a str is sent verbatim (malformed JSON on purpose)."""
    status: int = 200
    delay: float = 0.0
    after_tool: bool = False
    """Applies only when the last message is a tool result."""
    times: int | None = None
    """Apply at most this many times (e.g. two 500s, then the next rule)."""


class StubLLM:
    def __init__(self, rules: list[Rule] | None = None, models: tuple[str, ...] = ("stub-model",)) -> None:
        self.rules = list(rules or [])
        self.models = models
        self.requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    # ----------------------------------------------------------------------------------------- rules
    def pick(self, body: dict[str, Any]) -> Rule:
        messages = body.get("messages", [])
        last = messages[-1] if messages else {}
        is_tool = last.get("role") == "tool"
        user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        content = (
            user.get("content") if isinstance(user.get("content"), str) else json.dumps(user.get("content"))
        )
        for rule in self.rules:
            if rule.after_tool != is_tool:
                continue
            if rule.match and rule.match.lower() not in (content or "").lower():
                continue
            if rule.times is not None:
                if rule.times <= 0:
                    continue
                rule.times -= 1
            return rule
        return Rule(text="(stub) I have nothing scripted for that.")

    # ------------------------------------------------------------------------------------------ server
    def start(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, data: Any) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(
                        200, {"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]}
                    )
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.requests.append(body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": "not found"}})
                    return
                if body.get("model") not in stub.models:
                    self._json(
                        404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
                    )
                    return
                rule = stub.pick(body)
                if rule.delay:
                    time.sleep(rule.delay)
                if rule.status != 200:
                    self._json(
                        rule.status,
                        {"error": {"message": f"scripted error {rule.status}", "type": "server_error"}},
                    )
                    return
                calls = [
                    {
                        "id": f"call_{uuid.uuid4().hex[:8]}",
                        "type": "function",
                        "function": {
                            "name": name,
                            "arguments": args if isinstance(args, str) else json.dumps(args),
                        },
                    }
                    for name, args in rule.tool_calls
                ]
                if body.get("stream"):
                    self._stream(body, rule, calls)
                    return
                message: dict[str, Any] = {"role": "assistant", "content": rule.text or None}
                if calls:
                    message["tool_calls"] = calls
                self._json(
                    200,
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": message,
                                "finish_reason": "tool_calls" if calls else "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": _tokens(body),
                            "completion_tokens": 5,
                            "total_tokens": _tokens(body) + 5,
                        },
                    },
                )

            def _stream(self, body: dict[str, Any], rule: Rule, calls: list[dict[str, Any]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()

                def send(delta: dict[str, Any], finish: str | None = None) -> None:
                    chunk = {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": body.get("model"),
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()

                send({"role": "assistant", "content": ""})
                words = (rule.text or "").split(" ") if rule.text else []
                for i, word in enumerate(words):
                    send({"content": word + (" " if i < len(words) - 1 else "")})
                for i, call in enumerate(calls):
                    send({"tool_calls": [{"index": i, **call}]})
                send({}, "tool_calls" if calls else "stop")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _tokens(body: dict[str, Any]) -> int:
    return len(json.dumps(body.get("messages", []))) // 4


if __name__ == "__main__":  # a stub for trying the app by hand: python tests/openai_stub.py
    stub = StubLLM(
        [
            Rule(match="list", tool_calls=[("list_training_runs", {})]),
            Rule(match="pause", tool_calls=[("pause_training", {})]),
            Rule(after_tool=True, text="Done — see the tool result above."),
        ]
    )
    print(stub.start(), flush=True)
    threading.Event().wait()
