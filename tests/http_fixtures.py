"""A scriptable HTTP server on 127.0.0.1 for fetch tests (serves, fails, stalls on demand)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jobs.config import FetchSettings

LOOPBACK_ONLY = FetchSettings(
    allowed_networks=["127.0.0.0/8"],
    max_attempts=3,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    connect_timeout_s=2,
    read_timeout_s=1,
)


class Routes:
    """path -> list of responses (status, body, headers, delay_s); the last one repeats."""

    def __init__(self):
        self.routes: dict[str, list[tuple]] = {}
        self.hits: dict[str, int] = {}

    def add(self, path, *responses):
        self.routes[path] = list(responses)

    def next(self, path):
        self.hits[path] = self.hits.get(path, 0) + 1
        script = self.routes.get(path, [(404, b"not found", {}, 0)])
        return script[min(self.hits[path], len(script)) - 1]


def start_server(routes: Routes):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body, headers, delay = routes.next(self.path)
            time.sleep(delay)
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(key, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
