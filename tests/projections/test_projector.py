"""The projector end to end against real Redis and Postgres: fold, replay, crash, concurrency."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from projections import maintenance
from projections.projector import ProjectorConfig
from projections.store import Entry
from streams.settings import Settings
from tests.projections.conftest import make_projector, metric_total, wait_until
from tests.projections.eventgen import Producer

pytestmark = pytest.mark.anyio


async def _statuses(pg: asyncpg.Connection) -> dict[str, str]:
    return {r["job_id"]: r["status"] for r in await pg.fetch("SELECT job_id, status FROM jobs")}


async def test_projects_every_scenario(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    expected = await producer.jobs(70, queue="a")
    expected |= await producer.jobs(35, queue="b", kind="email", prefix="e")
    async with make_projector(pg_settings, config) as p:
        with anyio.fail_after(30):
            await p.run(until_caught_up=True)
    assert await _statuses(pg) == expected
    total = await pg.fetchval("SELECT count(*) FROM job_events")
    assert total == metric_total(p.metrics.registry, "jobstream_projector_events_total") == 375
    row = await pg.fetchrow("SELECT * FROM jobs WHERE job_id = 'j1'")  # a retried job
    assert row is not None
    assert row["attempt"] == 2 and row["worker"] == "w2" and row["result"] == "null"
    assert row["started_at"] < row["finished_at"] and row["error_type"] == "IOError"
    assert (await maintenance.check(pg)).ok


async def test_replayed_batch_changes_nothing(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer,
    redis: aioredis.Redis,
) -> None:  # fmt: skip
    await producer.jobs(20)
    async with make_projector(pg_settings, config) as p:
        await p.run(until_caught_up=True)
        assert await p.io.read({"default": "0"}, 1000, None) == []  # nothing pending: all acked
        raw: Any = await redis.xrange(p.io.stream("default"))
        replay = [Entry("default", i.decode(), f[b"e"]) for i, f in raw]
        before = await pg.fetch("SELECT * FROM jobs ORDER BY job_id")
        result = await p.commit(replay)
        assert result.inserted == 0 and result.applied == []
        assert await pg.fetch("SELECT * FROM jobs ORDER BY job_id") == before


async def test_crash_between_commit_and_ack_is_exactly_once(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    expected = await producer.jobs(60)
    async with make_projector(pg_settings, config, "crashed") as a:
        await a.io.ensure_group("default")
        batch = await a.io.read({"default": ">"}, 100, None)
        assert (await a.commit(batch)).inserted == 100  # committed, never acked: "crash"
    async with make_projector(pg_settings, config, "survivor") as b:
        with anyio.fail_after(30):
            await b.run(until_caught_up=True)  # claims the crashed batch once it is idle
        assert await b.io.pending_count("default") == 0
    total = await pg.fetchval("SELECT count(*) FROM job_events")
    assert total == producer.appended
    assert metric_total(b.metrics.registry, "jobstream_projector_events_total") == total - 100
    assert await _statuses(pg) == expected
    assert (await maintenance.check(pg)).ok


async def test_restart_with_same_consumer_replays_own_pending(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    expected = await producer.jobs(30)
    async with make_projector(pg_settings, config, "p1") as a:
        await a.io.ensure_group("default")
        await a.commit(await a.io.read({"default": ">"}, 50, None))
    async with make_projector(pg_settings, config, "p1", claim_min_idle_ms=3_600_000) as b:
        with anyio.fail_after(30):
            await b.run(until_caught_up=True)
    assert await _statuses(pg) == expected
    n = await pg.fetchval("SELECT count(*) FROM job_events")
    assert metric_total(b.metrics.registry, "jobstream_projector_events_total") == n - 50


async def test_late_claimed_batch_is_refolded_in_stream_order(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    expected = await producer.jobs(40, scenarios=("retried", "dead", "completed"))
    async with make_projector(pg_settings, config, "slow") as a:
        await a.io.ensure_group("default")
        early = await a.io.read({"default": ">"}, 60, None)  # read, then dies before commit
    async with make_projector(pg_settings, config, "fast") as b:
        with anyio.fail_after(30):
            await b.run(until_caught_up=True)  # projects the rest first, the early batch last
    assert len(early) == 60
    assert await _statuses(pg) == expected
    assert (await maintenance.check(pg)).ok


async def test_two_projectors_at_once_never_double_count(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    small = msgspec.structs.replace(config, batch_size=37)
    expected: dict[str, str] = {}
    async with (
        make_projector(pg_settings, small, "p1") as a,
        make_projector(pg_settings, small, "p2") as b,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.run, name="p1")
            tg.start_soon(b.run, name="p2")
            for i in range(60):  # until both have projected something (at least 10 rounds)
                expected |= await producer.jobs(30, queue=f"q{i % 3}", prefix=f"r{i}-")
                events = [metric_total(p.metrics.registry, "jobstream_projector_events_total")
                          for p in (a, b)]  # fmt: skip
                if i >= 9 and all(events):
                    break
            await wait_until(
                lambda: pg.fetchval("SELECT count(*) FROM job_events"), producer.appended
            )
            tg.cancel_scope.cancel()
        for p in (a, b):
            with anyio.fail_after(30):
                await p.run(until_caught_up=True)
    total = await pg.fetchval("SELECT count(*) FROM job_events")
    counted = [metric_total(p.metrics.registry, "jobstream_projector_events_total") for p in (a, b)]
    assert total == sum(counted) == producer.appended
    assert all(c > 0 for c in counted)
    assert await _statuses(pg) == expected
    assert (await maintenance.check(pg)).ok
