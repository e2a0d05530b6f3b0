"""Failure behaviour: Postgres killed or restarted, Redis restarted or its group lost, Redis 6.2.

Outages use private servers (tests/projections/servers.py) or kill only the
projector's own Postgres backends; the machine's shared services are never stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from projections import db, maintenance
from projections.gauges import refresh_queue
from projections.projector import Projector, ProjectorConfig
from streams.settings import Settings
from tests.projections.conftest import make_projector, metric_total, wait_until
from tests.projections.eventgen import Producer
from tests.projections.servers import REDIS_62, REDIS_SYSTEM, PostgresServer, RedisServer

pytestmark = pytest.mark.anyio


async def _count(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM job_events"))


async def _statuses(pg: asyncpg.Connection) -> dict[str, str]:
    return {r["job_id"]: r["status"] for r in await pg.fetch("SELECT job_id, status FROM jobs")}


async def test_projector_backends_killed_mid_stream(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    consumer = f"kill-{pg_settings.namespace}"
    killed = 0
    expected: dict[str, str] = {}
    projector = make_projector(pg_settings, config, consumer, backoff_max_s=0.2)
    async with projector as p, anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        for i in range(6):
            expected |= await producer.jobs(40, prefix=f"k{i}-")
            if i % 2:  # kill while a batch may be in flight, else an idle connection
                await wait_until(lambda: _count(pg), producer.appended)
            killed += len(await pg.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1",
                f"jobstream-projector-{consumer}",
            ))  # fmt: skip
        expected |= await producer.jobs(40, prefix="last-")
        await wait_until(lambda: _count(pg), producer.appended)
        tg.cancel_scope.cancel()
    assert await _statuses(pg) == expected
    assert metric_total(p.metrics.registry, "jobstream_projector_events_total") <= producer.appended
    assert killed >= 3  # (a kill of an idle connection is seen as a reconnect, not an error)
    assert (await maintenance.check(pg)).ok


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


async def test_postgres_stopped_and_restarted_mid_stream(
    own_pg: PostgresServer, settings: Settings, schema: str, producer: Producer
) -> None:
    s = msgspec.structs.replace(settings, database_url=own_pg.url)
    await db.migrate_settings(s, schema)
    config = ProjectorConfig(schema=schema, consumer="p1", block_ms=50, backoff_max_s=0.3)
    expected = await producer.jobs(50, prefix="before-")
    async with Projector(s, config) as p, anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        conn = await db.connect(s, schema)
        await wait_until(lambda: _count(conn), producer.appended)
        await conn.close()
        await anyio.to_thread.run_sync(own_pg.stop)
        expected |= await producer.jobs(50, prefix="during-")  # projector retries meanwhile
        await anyio.to_thread.run_sync(own_pg.start)
        expected |= await producer.jobs(50, prefix="after-")
        conn = await db.connect(s, schema)
        await wait_until(lambda: _count(conn), producer.appended)
        tg.cancel_scope.cancel()
    assert await _statuses(conn) == expected
    assert (await maintenance.check(conn)).ok
    await conn.close()


async def test_group_destroyed_is_recreated_and_replay_is_noop(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer,
    redis: aioredis.Redis,
) -> None:  # fmt: skip
    expected = await producer.jobs(30)
    async with make_projector(pg_settings, config) as p:
        await p.run(until_caught_up=True)
        first = metric_total(p.metrics.registry, "jobstream_projector_events_total")
        await redis.xgroup_destroy(p.io.stream("default"), "projector")
        expected |= await producer.jobs(10, prefix="new-")
        with anyio.fail_after(30):
            await p.run(until_caught_up=True)
    assert await _count(pg) == producer.appended
    assert metric_total(p.metrics.registry, "jobstream_projector_events_total") == producer.appended
    assert first < producer.appended
    assert await _statuses(pg) == expected


@pytest.fixture
async def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RedisServer]:
    server = RedisServer(getattr(request, "param", REDIS_SYSTEM), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_restarted_with_data_lost(
    own_redis: RedisServer, pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig
) -> None:
    s = msgspec.structs.replace(pg_settings, redis_url=own_redis.url)
    client = aioredis.Redis.from_url(own_redis.url)
    producer = Producer(client, s.namespace)
    expected = await producer.jobs(20)
    async with make_projector(s, config, backoff_max_s=0.2) as p, anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await wait_until(lambda: _count(pg), producer.appended)
        await anyio.to_thread.run_sync(own_redis.stop)
        await anyio.to_thread.run_sync(own_redis.start)  # empty: no stream, no group
        await client.connection_pool.disconnect()  # the producer's stale connection
        expected |= await producer.jobs(20, prefix="after-")
        await wait_until(lambda: _count(pg), producer.appended)
        tg.cancel_scope.cancel()
    await client.aclose()
    assert await _statuses(pg) == expected
    assert metric_total(p.metrics.registry, "jobstream_projector_errors_total", source="redis") >= 1


@pytest.mark.parametrize("own_redis", [REDIS_62, REDIS_SYSTEM], indirect=True, ids=["6.2", "7"])
async def test_claim_trim_and_gauges_on_each_redis_version(
    own_redis: RedisServer, pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig
) -> None:
    s = msgspec.structs.replace(pg_settings, redis_url=own_redis.url)
    client = aioredis.Redis.from_url(own_redis.url)
    producer = Producer(client, s.namespace)
    expected = await producer.jobs(40)
    async with make_projector(s, config, "dead") as a:
        await a.io.ensure_group("default")
        await a.commit(await a.io.read({"default": ">"}, 50, None))  # dies before XACK
    async with make_projector(s, config, "live") as b:
        with anyio.fail_after(30):
            await b.run(until_caught_up=True)
        await refresh_queue(client, b.io.keys, "default", "projector", b.metrics)
        assert metric_total(b.metrics.registry, "jobstream_projector_lag_entries") == 0
        assert await client.xlen(b.io.stream("default")) <= 1  # trimmed below the acked position
    await client.aclose()
    assert await _statuses(pg) == expected
    assert await _count(pg) == producer.appended
