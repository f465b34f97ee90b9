"""A real HTTP webhook receiver on 127.0.0.1 for the delivery tests: records every POST and
answers with the status its path is configured for (a list is consumed one status per request,
the last one repeating)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self):
        return orjson.loads(self.body)


class Receiver:
    def __init__(self, port: int = 0, statuses: dict[str, list[int]] | None = None, delay_s: float = 0.0,
                 headers: dict[str, dict[str, str]] | None = None) -> None:
        self.requests: list[Received] = []
        self.statuses = {k: list(v) for k, v in (statuses or {}).items()}
        self.extra_headers = headers or {}
        self.delay_s = delay_s
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.requests.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
                    todo = outer.statuses.get(self.path, [200])
                    status = todo.pop(0) if len(todo) > 1 else todo[0]
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                self.send_response(status)
                for k, v in outer.extra_headers.get(self.path, {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, n: int, timeout_s: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.on(path)) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.on(path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A port nothing listens on (connections to it are refused until a Receiver takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
