"""HTTP plumbing of ``jobstream web``: tokens, auth, JSON errors, body cap, request metrics.

Owns: reading the bearer tokens from the environment (:class:`Tokens`), the
access levels of routes (:func:`guarded`), the JSON error shape
(``{"error": "..."}`` via :class:`ApiError`), reading a request body under a byte
cap, and the ASGI middleware counting requests by route template and status.

Invariants:
- Tokens are compared with :func:`hmac.compare_digest`, never logged, never put in
  an error message or a metric label.
- There is no anonymous mode: :meth:`Tokens.from_env` raises :class:`ConfigError`
  when ``JOBSTREAM_WEB_TOKEN`` is unset or blank.
- Tokens are at least :data:`MIN_TOKEN_CHARS` (16) characters, and the admin token
  differs from the web token (else every web caller would be admin):
  :meth:`Tokens.from_env` raises :class:`ConfigError` otherwise, so
  ``jobstream web`` exits 2 instead of starting.
- Metric labels are bounded: the route *template* (``/jobs/{job_id}``, or
  ``unmatched``), a known method (else ``other``) and the status; never a job id.
- A body is never read past its cap: the ``Content-Length`` is checked first and
  the stream is cut as soon as it goes over.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Level = Literal["read", "admin"]
Endpoint = Callable[[Request], Awaitable[Response]]
MIN_TOKEN_CHARS = 16
_KNOWN_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
_encode = msgspec.json.Encoder().encode


class ConfigError(ValueError):
    """The web process is misconfigured and must not start."""


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``value`` encoded by msgspec (structs, datetimes) as an ``application/json`` response."""
    return Response(_encode(value), status, headers=headers, media_type="application/json")


async def api_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler turning :class:`ApiError` into its JSON response."""
    assert isinstance(exc, ApiError)
    return json_response({"error": exc.message}, exc.status, exc.headers)


class Tokens(msgspec.Struct, frozen=True):
    """The accepted bearer tokens: ``web`` (enqueue + read) and ``admin`` (everything)."""

    web: bytes
    admin: bytes | None = None

    def __repr__(self) -> str:
        return f"Tokens(web=***, admin={'***' if self.admin else None})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tokens:
        """Tokens from ``JOBSTREAM_WEB_TOKEN`` (required) and ``JOBSTREAM_ADMIN_TOKEN``.

        Raises :class:`ConfigError` (naming the variable, never its value) when the web
        token is unset, a token is shorter than :data:`MIN_TOKEN_CHARS`, or both are equal.
        """
        e = os.environ if env is None else env
        web = e.get("JOBSTREAM_WEB_TOKEN", "").strip()
        admin = e.get("JOBSTREAM_ADMIN_TOKEN", "").strip()
        if not web:
            raise ConfigError(
                "JOBSTREAM_WEB_TOKEN is not set: `jobstream web` has no anonymous mode; "
                "set JOBSTREAM_WEB_TOKEN (enqueue + read) and JOBSTREAM_ADMIN_TOKEN (admin)"
            )
        for name, value in (("JOBSTREAM_WEB_TOKEN", web), ("JOBSTREAM_ADMIN_TOKEN", admin)):
            if value and len(value) < MIN_TOKEN_CHARS:
                raise ConfigError(f"{name} is too short: use at least {MIN_TOKEN_CHARS} characters")
        if admin and hmac.compare_digest(admin.encode(), web.encode()):
            raise ConfigError(
                "JOBSTREAM_ADMIN_TOKEN equals JOBSTREAM_WEB_TOKEN: every web caller would be "
                "admin; give the admin token its own value"
            )
        return cls(web=web.encode(), admin=admin.encode() if admin else None)

    def level_of(self, authorization: str | None) -> Level | None:
        """The access level an ``Authorization`` header grants, or None."""
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode("latin-1")
        if scheme.lower() != "bearer" or not given:
            return None
        is_admin = self.admin is not None and hmac.compare_digest(given, self.admin)
        is_web = hmac.compare_digest(given, self.web)
        if is_admin:
            return "admin"
        return "read" if is_web else None


def guarded(level: Level, endpoint: Endpoint, tokens: Callable[[Request], Tokens]) -> Endpoint:
    """``endpoint`` behind a bearer token: 401 without a valid one, 403 below ``level``."""

    async def wrapper(request: Request) -> Response:
        got = tokens(request).level_of(request.headers.get("authorization"))
        if got is None:
            raise ApiError(
                401,
                "missing or invalid bearer token",
                {"WWW-Authenticate": 'Bearer realm="jobstream"'},
            )
        if level == "admin" and got != "admin":
            raise ApiError(403, "this action needs the admin token")
        return await endpoint(request)

    wrapper.__name__ = getattr(endpoint, "__name__", "endpoint")
    return wrapper


async def read_body(request: Request, cap: int) -> bytes:
    """The request body, or ApiError 413 once it is over ``cap`` bytes (never read further)."""
    too_large = ApiError(413, f"request body over {cap} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise too_large
    return bytes(body)


class WebMetrics:
    """The web process's metrics, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "jobstream_web_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "jobstream_web_response_start_seconds",
            "Time from request to response start, by route template",
            ["route", "method"],
            registry=self.registry,
        )
        self.streams = Gauge(
            "jobstream_web_event_streams", "Open job event streams (SSE)", registry=self.registry
        )


def route_label(scope: Scope) -> str:
    """The matched route's path template, ``unmatched`` if routing found none."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware counting every HTTP request once, at response start."""

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            counted = True
            route = route_label(scope)
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not counted:
                count(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not counted:
                count(500)
