"""A small HTTP server on 127.0.0.1 for download tests: serves bytes the test registers, honours
``Range`` requests, can throttle a response (to make downloads overlap) or cut it off after N bytes
(to leave a partial file), and counts the requests per path. Never reaches the network."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    delay_per_chunk: float = 0.0  # seconds slept after each 64 KiB chunk
    cut_after: int | None = None  # close the connection after this many bytes (once)
    ranges: bool = True  # honour Range requests


class LocalServer:
    """``with LocalServer() as srv: srv.add("/a", Route(b"..")); srv.url("/a")``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.range_requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                server.hits[path] += 1
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                body, status, start = route.body, route.status, 0
                rng = self.headers.get("Range")
                if rng and route.ranges and status == 200:
                    server.range_requests.append((path, rng))
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    status = 206
                part = body[start:]
                self.send_response(status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(part)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                limit = route.cut_after
                route.cut_after = None  # only the first response is cut
                sent = 0
                for i in range(0, len(part), 1 << 16):
                    chunk = part[i : i + (1 << 16)]
                    if limit is not None and sent + len(chunk) > limit:
                        self.wfile.write(chunk[: limit - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if route.delay_per_chunk:
                        time.sleep(route.delay_per_chunk)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
