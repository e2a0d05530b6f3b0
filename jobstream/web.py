"""``jobstream web``: the HTTP face — enqueue, job status, live events, admin actions.

Owns: the app factory (:func:`create_app`: Starlette routes of
:mod:`jobstream.web_routes`, the request-metrics middleware, JSON error handlers,
a lifespan that opens and closes the clients of :class:`~jobstream.web_state.WebState`)
and the ``web [--host 127.0.0.1] [--port 8000] [--max-streams N]
[--max-stream-seconds S] [--max-stream-scan N]`` sub-command, served by uvicorn.

Invariants:
- The process refuses to start without ``JOBSTREAM_WEB_TOKEN`` (no anonymous
  mode); ``JOBSTREAM_ADMIN_TOKEN`` unset means the admin routes are closed to all.
- Payloads are validated at the door by the platform registry
  (``handlers.registry()``), exactly as ``jobstream enqueue`` does.
- One app = one set of clients and one metrics registry; nothing global, so
  several apps (tests) live side by side.
- No token, payload or Redis/Postgres password is ever logged.
- Tokens are at least 16 characters and the admin token differs from the web
  token; otherwise the process refuses to start (exit 2, see
  :meth:`~jobstream.web_http.Tokens.from_env`).
- ``/healthz`` and ``/metrics`` need no token, on purpose: Prometheus scrapes
  ``/metrics`` without one, and it carries no job id, payload or token (its labels
  are route templates, methods and statuses). Keep it off the public internet at
  the network level if request counts are sensitive.
- Event streams (SSE) are capped (``max_streams``, 503 beyond), and each one is
  bounded in time (``max_stream_s``, default 10 minutes; the client reconnects
  with ``Last-Event-ID``) and in entries scanned (``max_scan_entries``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import redis.asyncio as aioredis
import redis.exceptions
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware

import handlers
from jobstream.embedded import ensure_postgres, ensure_redis
from jobstream.web_http import (
    ApiError,
    ConfigError,
    MetricsMiddleware,
    Tokens,
    WebMetrics,
    api_error_handler,
)
from jobstream.web_routes import redis_unavailable, routes
from jobstream.web_state import ProjectionReader, WebState
from projections import db
from streams.client import Client
from streams.registry import Registry
from streams.settings import Settings, redact_url

log = logging.getLogger("jobstream.web")


def create_app(
    settings: Settings,
    tokens: Tokens,
    *,
    registry: Registry | None = None,
    schema: str = db.DEFAULT_SCHEMA,
    metrics_registry: CollectorRegistry | None = None,
    max_streams: int = 100,
    sse_block_ms: int = 1000,
    keepalive_s: float = 15.0,
    max_stream_s: float = 600.0,
    max_scan_entries: int = 100_000,
) -> Starlette:
    """The ASGI app; its clients open in the lifespan (``app.router.lifespan_context``)."""
    metrics = WebMetrics(metrics_registry)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = WebState(
            settings=settings,
            tokens=tokens,
            client=Client(settings, registry=registry),
            stream_redis=aioredis.Redis.from_url(
                settings.redis_url, max_connections=max_streams + 4
            ),
            projection=ProjectionReader(settings, schema),
            metrics=metrics,
            max_streams=max_streams,
            sse_block_ms=sse_block_ms,
            keepalive_s=keepalive_s,
            max_stream_s=max_stream_s,
            max_scan_entries=max_scan_entries,
        )
        app.state.web = state
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await state.aclose()

    return Starlette(
        routes=routes(),
        middleware=[Middleware(MetricsMiddleware, metrics=metrics)],
        exception_handlers={
            ApiError: api_error_handler,
            redis.exceptions.ConnectionError: redis_unavailable,
            redis.exceptions.TimeoutError: redis_unavailable,
        },
        lifespan=lifespan,
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "web",
        help="serve the HTTP API (needs JOBSTREAM_WEB_TOKEN; JOBSTREAM_ADMIN_TOKEN for admin)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    p.add_argument(
        "--max-streams", type=_positive_int, default=100, help="open SSE streams (default 100)"
    )
    p.add_argument(
        "--max-stream-seconds",
        type=_positive_float,
        default=600.0,
        help="an SSE stream ends after this long; the client resumes (default 600)",
    )
    p.add_argument(
        "--max-stream-scan",
        type=_positive_int,
        default=100_000,
        help="events-stream entries one SSE connection may scan (default 100000)",
    )
    p.set_defaults(func=cmd_web)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def cmd_web(args: argparse.Namespace) -> int:
    try:
        tokens = Tokens.from_env()
        settings = ensure_postgres(ensure_redis(Settings.from_env()))
        schema = db.schema_from_env()
    except (ConfigError, ValueError) as exc:
        print(f"jobstream web: {exc}", file=sys.stderr)
        return 2
    if tokens.admin is None:
        log.warning("JOBSTREAM_ADMIN_TOKEN is not set: cancel and retry are refused to everyone")
    app = create_app(
        settings,
        tokens,
        registry=handlers.registry(),
        schema=schema,
        max_streams=args.max_streams,
        max_stream_s=args.max_stream_seconds,
        max_scan_entries=args.max_stream_scan,
    )
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_config=None, lifespan="on", server_header=False
    )
    log.info(
        "web on http://%s:%d (redis %s, projection schema %s)",
        args.host,
        args.port,
        redact_url(settings.redis_url),
        schema,
    )
    anyio.run(uvicorn.Server(config).serve)
    return 0
