"""Postgres fixtures for the projection tests: one schema per test, dropped afterwards.

The schema is named after the test's Redis namespace (``settings.namespace``),
so a test's Redis keys and Postgres tables share one name. Postgres is real:
``DATABASE_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from projections import db
from projections.projector import Projector, ProjectorConfig
from streams.settings import Settings
from tests.projections.eventgen import Producer


@pytest.fixture
def pg_settings(settings: Settings) -> Settings:
    return settings  # the root conftest resolved DATABASE_URL (embedded if need be)


@pytest.fixture
def schema(settings: Settings) -> str:
    return db.validate_schema(settings.namespace.lower())


@pytest.fixture
async def pg(pg_settings: Settings, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection on the migrated test schema; the schema is dropped afterwards."""
    await db.migrate_settings(pg_settings, schema)
    conn = await db.connect(pg_settings, schema)
    try:
        yield conn
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


@pytest.fixture
async def producer(redis: aioredis.Redis, settings: Settings) -> Producer:
    return Producer(redis, settings.namespace)


@pytest.fixture
def config(schema: str) -> ProjectorConfig:
    """Projector tuning for tests: short blocks, quick claims."""
    return ProjectorConfig(
        schema=schema, block_ms=50, claim_interval_s=0.2, claim_min_idle_ms=300, batch_size=500
    )


def make_projector(
    settings: Settings, config: ProjectorConfig, consumer: str = "p1", **changes: object
) -> Projector:
    return Projector(settings, msgspec.structs.replace(config, consumer=consumer, **changes))


def metric_total(registry: CollectorRegistry, sample: str, **labels: str) -> float:
    """Sum of every sample named ``sample`` whose labels include ``labels``."""
    return sum(
        s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


async def wait_until(
    value: Callable[[], Awaitable[object]], expected: object, timeout_s: float = 30.0
) -> None:
    """Poll ``value()`` until it equals ``expected`` (bounded; fails after ``timeout_s``)."""
    with anyio.fail_after(timeout_s):
        while await value() != expected:  # noqa: ASYNC110 - an external condition, bounded
            await anyio.sleep(0.02)
