"""Fixtures for the web tests: the real app, in-process, on the test's real Redis.

The app is driven through httpx's ASGI transport after its lifespan has opened
its clients; its projection schema is the test's namespace (not migrated unless
a test does it, so status falls back to Redis by default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

import handlers
from jobstream.web import create_app
from jobstream.web_http import Tokens
from projections import db
from streams.settings import Settings

WEB_TOKEN = "web-token-for-tests-0123456789"
ADMIN_TOKEN = "admin-token-for-tests-9876543210"
READ = {"Authorization": f"Bearer {WEB_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def schema(settings: Settings) -> str:
    return db.validate_schema(settings.namespace.lower())


@pytest.fixture
def metrics_registry() -> CollectorRegistry:
    return CollectorRegistry()


def make_app(
    settings: Settings, schema: str, metrics_registry: CollectorRegistry, **limits: Any
) -> Starlette:
    """The web app as tests build it: test tokens, short blocking reads and keep-alives."""
    tokens = Tokens(web=WEB_TOKEN.encode(), admin=ADMIN_TOKEN.encode())
    return create_app(
        settings,
        tokens,
        registry=handlers.registry(),
        schema=schema,
        metrics_registry=metrics_registry,
        sse_block_ms=100,
        keepalive_s=0.5,
        **limits,
    )


@pytest.fixture
async def app(
    settings: Settings,
    redis: aioredis.Redis,
    schema: str,
    metrics_registry: CollectorRegistry,
) -> AsyncIterator[Starlette]:
    application = make_app(settings, schema, metrics_registry)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
        yield client
