"""``jobstream web``: the HTTP face — enqueue, job status, live events, admin actions.

Owns: the app factory (:func:`create_app`: Starlette routes of
:mod:`jobstream.web_routes`, the request-metrics middleware, JSON error handlers,
a lifespan that opens and closes the clients of :class:`~jobstream.web_state.WebState`)
and the ``web [--host 127.0.0.1] [--port 8000]`` sub-command, served by uvicorn.

Invariants:
- The process refuses to start without ``JOBSTREAM_WEB_TOKEN`` (no anonymous
  mode); ``JOBSTREAM_ADMIN_TOKEN`` unset means the admin routes are closed to all.
- Payloads are validated at the door by the platform registry
  (``handlers.registry()``), exactly as ``jobstream enqueue`` does.
- One app = one set of clients and one metrics registry; nothing global, so
  several apps (tests) live side by side.
- No token, payload or Redis/Postgres password is ever logged.
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
    p.set_defaults(func=cmd_web)


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
    app = create_app(settings, tokens, registry=handlers.registry(), schema=schema)
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
