"""A stand-in for `python -m twinkle.server launch --config …` that answers like the real gateway.

Used by the fast manager tests (no Ray, no twinkle-kit): it reads port and apps from the config the
manager wrote, serves healthz, capabilities and per-app healthz (with the replica header), prints the
launcher's "All applications started!" line, and exits 0 on SIGTERM.

Environment:
  FAKE_MODE    ok (default) | die (print a traceback-like line, exit 1 after FAKE_DELAY) |
               hang (never becomes ready)
  FAKE_DELAY   seconds before the apps answer (default 0.5)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


def main() -> None:
    with open(sys.argv[sys.argv.index("--config") + 1]) as f:
        config = yaml.safe_load(f)
    mode = os.environ.get("FAKE_MODE", "ok")
    delay = float(os.environ.get("FAKE_DELAY", "0.5"))
    host, port = config["http_options"]["host"], int(config["http_options"]["port"])
    apps = config["applications"]
    models = next(a["args"]["supported_models"] for a in apps if a["import_path"] == "server")
    routes = {a["route_prefix"]: a["import_path"] for a in apps if a["import_path"] in ("model", "sampler")}
    ready = threading.Event()
    print(f"fake twinkle server on {host}:{port}", flush=True)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: object, replica: bool = False) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if replica:
                self.send_header("X-Twinkle-Replica-Id", "fake1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/api/v1/healthz":
                return self._send(200, {"status": "ok"})
            if self.path == "/api/v1/twinkle/get_server_capabilities":
                return self._send(200, {"supported_models": [{"model_name": m} for m in models]})
            for prefix, kind in routes.items():
                if self.path == f"{prefix}/healthz" and ready.is_set():
                    if kind == "model":
                        return self._send(200, {"healthy": True, "detail": "model actors alive"}, True)
                    return self._send(404, {"detail": "Not Found"}, True)
            return self._send(404, {"detail": "Not Found"})

    server = ThreadingHTTPServer((host, port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: (print("Received SIGTERM", flush=True), os._exit(0)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(delay)
    if mode == "die":
        print("RuntimeError: fake deployment failed: out of GPU memory", flush=True)
        os._exit(1)
    if mode == "ok":
        ready.set()
        print("All applications started!", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
