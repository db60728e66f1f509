"""A DCGM exporter stand-in for the collector tests: serves recorded exposition texts from
``http.server`` in a thread on 127.0.0.1, the next text of a path at each request (the last
one again once they are used up)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dcgm"


class Exporter:
    def __init__(self, routes: dict[str, list[bytes]]) -> None:
        self.routes = routes
        self.served: dict[str, int] = {p: 0 for p in routes}
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with exporter.lock:
                    texts = exporter.routes.get(self.path)
                    if not texts:
                        self.send_error(404)
                        return
                    i = exporter.served[self.path]
                    exporter.served[self.path] = i + 1
                body = texts[min(i, len(texts) - 1)]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@contextmanager
def serving(routes: dict[str, list[bytes]]) -> Iterator[Exporter]:
    ex = Exporter(routes)
    ex.thread.start()
    try:
        yield ex
    finally:
        ex.server.shutdown()
        ex.server.server_close()


def recorded(node: str, scrapes: int = 3) -> list[bytes]:
    """``tests/fixtures/dcgm/<node>-<k>.prom`` for k = 1..scrapes."""
    return [(FIXTURES / f"{node}-{k}.prom").read_bytes() for k in range(1, scrapes + 1)]
