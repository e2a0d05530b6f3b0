"""Shared fixtures: real Redis (and, in tests/projections, real Postgres), isolated per test.

Every test gets its own ``JOBSTREAM_NAMESPACE`` (a fresh key prefix), so tests
never see each other's keys and may share one Redis. Async tests run on anyio's
asyncio backend (``@pytest.mark.anyio``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from jobstream.embedded import ensure_postgres, ensure_redis
from streams.settings import Settings


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings reaching real servers (embedded ones started if nothing is configured)."""
    return ensure_postgres(ensure_redis(Settings.from_env()))


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    """Per-test settings: a unique namespace, short heartbeats so reclaim tests are quick.

    Every key of the namespace is deleted afterwards, whoever wrote it (the test,
    a subprocess, a worker).
    """
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield msgspec.structs.replace(base_settings, namespace=ns, heartbeat_ttl_s=2.0)
    with redis_sync.Redis.from_url(base_settings.redis_url) as client:
        keys = list(client.scan_iter(match=f"{ns}:*", count=1000))
        if keys:
            client.unlink(*keys)


@pytest.fixture
def env(settings: Settings) -> Iterator[dict[str, str]]:
    """Environment for subprocesses (CLI, worker processes) of this test."""
    e = dict(os.environ)
    e.update(
        REDIS_URL=settings.redis_url,
        DATABASE_URL=settings.database_url,
        JOBSTREAM_NAMESPACE=settings.namespace,
        JOBSTREAM_HEARTBEAT_TTL_S=str(settings.heartbeat_ttl_s),
    )
    yield e


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A client on the test Redis; the test's namespace is deleted afterwards."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{settings.namespace}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
        await client.aclose()
