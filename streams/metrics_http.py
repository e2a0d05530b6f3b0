"""``/metrics`` and ``/healthz`` over HTTP, for every jobstream process.

Owns: the tiny threaded WSGI server (prometheus-client's WSGI app plus a health
check). Each process passes its own :class:`CollectorRegistry` (never the global
default), so several components in one process, and tests, never share metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line."""


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP in a daemon thread; ``port`` is the bound port."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int,
        healthy: Callable[[], bool],
        host: str = "0.0.0.0",
    ) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") == "/healthz":
                ok = healthy()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
                )
                return [b"ok\n" if ok else b"unhealthy\n"]
            return metrics_app(environ, start_response)

        self._server = make_server(host, port, app, _Server, _QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
