"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 server (for tests and tests/benchmarks/faults.py).

Each request, with probability ``rate``, meets one fault, chosen at random (seeded) from ``kinds``:

* ``503``: an S3 ``SlowDown`` answer, the request never reaches the server;
* ``500``: an S3 ``InternalError`` answer, the request never reaches the server;
* ``reset``: the connection is reset before the request is forwarded;
* ``reset_after``: the request *is* forwarded and done by the server, then the connection is reset before
  the answer (the client cannot know whether its write happened);
* ``delay``: the answer comes ``delay_s`` late.

Everything else is forwarded unchanged (method, path, headers, body), so signatures stay valid.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

KINDS = ("503", "500", "reset", "reset_after", "delay")
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        rate: float = 0.1,
        kinds: tuple[str, ...] = KINDS,
        delay_s: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.upstream = urlparse(upstream)
        self.rate = rate
        self.kinds = kinds
        self.delay_s = delay_s
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reset(self) -> None:
                # RST, not FIN: what a dying load balancer or a dropped NAT entry looks like to a client
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                self.connection.close()

            def _error(self, status: int, code: str) -> None:
                body = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>injected by FaultProxy</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy.draw()
                if fault == "503":
                    return self._error(503, "SlowDown")
                if fault == "500":
                    return self._error(500, "InternalError")
                if fault == "reset":
                    return self._reset()
                if fault == "delay":
                    time.sleep(proxy.delay_s)
                status, reason, headers, data = proxy.forward(self.command, self.path, self.headers, body)
                if fault == "reset_after":
                    return self._reset()
                self.send_response(status, reason)
                for key, value in headers:
                    if key.lower() not in _HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def draw(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.rate <= 0 or self.random.random() >= self.rate:
                return None
            kind = self.random.choice(self.kinds)
            self.injected[kind] += 1
            return kind

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, str, list[Any], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in _HOP}
            conn.request(method, path, body=body if body or method in ("PUT", "POST") else None, headers=out)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    @property
    def faults(self) -> int:
        with self.lock:
            return sum(self.injected.values())

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
