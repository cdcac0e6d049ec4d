"""An optional ``/metrics`` endpoint of the agent's own (``prometheus.listen``), for a Prometheus without
node_exporter. It serves the text the agent rendered at its last tick; no work happens per scrape."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("picluster.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    """A tiny HTTP server on its own daemon thread; ``update(text)`` swaps what ``/metrics`` returns."""

    def __init__(self, host: str, port: int) -> None:
        self._body = b""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is here")
                    return
                body = server._body
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("event=metrics_request %s", format % args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def update(self, text: str) -> None:
        self._body = text.encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
