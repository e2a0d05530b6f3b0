"""Dead letters, trimming, metrics, prune, queries and the end-to-end run with a real worker."""

from __future__ import annotations

import urllib.request
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from projections import maintenance, queries
from projections.projector import ProjectorConfig
from streams.settings import Settings
from tests.projections.conftest import make_projector, metric_total
from tests.projections.eventgen import Producer

pytestmark = pytest.mark.anyio


async def test_undecodable_entries_are_dead_lettered_and_projection_continues(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    expected = await producer.jobs(5, prefix="a")
    await producer.add_raw("default", {"e": b"{not json"})
    await producer.add_raw("default", {"other": b"x"})
    await producer.add_raw("default", {"e": b'{"type":"job.exploded","job_id":"x"}'})
    await producer.add_raw("default", {"e": msgspec.json.encode(
        {"type": "job.queued", "job_id": "nul", "queue": "default", "kind": "k", "attempt": 1,
         "payload": {"s": "a\u0000b"}})})  # fmt: skip
    expected |= await producer.jobs(5, prefix="b")
    async with make_projector(pg_settings, config) as p:
        with anyio.fail_after(30):
            await p.run(until_caught_up=True)
    dead = await pg.fetch("SELECT raw, error FROM dead_letters ORDER BY entry_ms, entry_seq")
    assert bytes(dead[0]["raw"]) == b"{not json"
    assert len(dead) == 4 and all(d["error"] for d in dead)
    assert metric_total(p.metrics.registry, "jobstream_projector_dead_letters_total") == 4
    statuses = {r["job_id"]: r["status"] for r in await pg.fetch("SELECT job_id, status FROM jobs")}
    assert statuses == expected


async def test_trim_never_removes_an_entry_another_group_has_not_acked(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer,
    redis: aioredis.Redis,
) -> None:  # fmt: skip
    await producer.jobs(20)
    async with make_projector(pg_settings, config) as p:
        stream = p.io.stream("default")
        await redis.xgroup_create(stream, "audit", id="0")
        got: Any = await redis.xreadgroup("audit", "a1", {stream: ">"}, count=30)
        audit_ids = [i for i, _ in got[0][1]]
        await redis.xack(stream, "audit", *audit_ids[:10])  # 20 delivered but unacked remain
        with anyio.fail_after(30):
            await p.run(until_caught_up=True)
        await p.trim()
        remaining: Any = await redis.xrange(stream)
        assert remaining[0][0] == audit_ids[10]  # oldest pending of "audit" is kept
        await redis.xack(stream, "audit", *audit_ids[10:])
        p._dirty.add("default")
        await p.trim()
        remaining = await redis.xrange(stream)
        assert remaining[0][0] == audit_ids[-1]  # "audit" last-delivered-id: nothing above lost
        assert len(remaining) == producer.appended - 29


async def test_metrics_equal_table_counts_and_are_served(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    await producer.jobs(63, queue="a")
    await producer.jobs(21, queue="b", kind="email", prefix="e")
    cfg = msgspec.structs.replace(config, metrics_port=0, gauge_interval_s=0.05)
    async with make_projector(pg_settings, cfg) as p:
        with anyio.fail_after(30):
            await p.run(until_caught_up=True)
        reg = p.metrics.registry
        rows = await pg.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        counts = {r["status"]: r["n"] for r in rows}
        assert metric_total(reg, "jobstream_jobs_completed_total") == counts["completed"]
        assert metric_total(reg, "jobstream_jobs_failed_total", final="true") == counts["failed"]
        assert metric_total(reg, "jobstream_jobs_canceled_total") == counts["canceled"]
        assert metric_total(reg, "jobstream_jobs_enqueued_total") == sum(counts.values())
        assert metric_total(reg, "jobstream_jobs_completed_total", queue="b", kind="email") == 6
        assert metric_total(reg, "jobstream_job_run_seconds_count") > 0
        assert metric_total(reg, "jobstream_job_wait_seconds_count") > 0
        assert p.server is not None
        url = f"http://127.0.0.1:{p.server.port}"
        body = await anyio.to_thread.run_sync(
            lambda: urllib.request.urlopen(f"{url}/metrics").read()
        )
        assert b"jobstream_jobs_completed_total" in body and b"job_id" not in body
        health = await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(f"{url}/healthz"))
        assert health.status == 200


async def test_prune_removes_only_old_terminal_jobs(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    expected = await producer.jobs(35)
    async with make_projector(pg_settings, config) as p:
        await p.run(until_caught_up=True)
    assert (await maintenance.prune(pg, older_than_s=3600)).jobs == 0
    await pg.execute("UPDATE jobs SET finished_at = finished_at - interval '2 hours'")
    result = await maintenance.prune(pg, older_than_s=3600, batch=7)
    terminal = [j for j, s in expected.items() if s in ("completed", "failed", "canceled")]
    assert result.jobs == len(terminal)
    left = {r["job_id"]: r["status"] for r in await pg.fetch("SELECT job_id, status FROM jobs")}
    assert left == {j: s for j, s in expected.items() if j not in terminal}
    orphans = await pg.fetchval(
        "SELECT count(*) FROM job_events WHERE job_id <> ALL($1)", list(left)
    )
    assert orphans == 0
    assert (await maintenance.check(pg)).ok


async def test_queries(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    await producer.jobs(14)
    async with make_projector(pg_settings, config) as p:
        await p.run(until_caught_up=True)
    job = await queries.get_job(pg, "j1")  # retried then completed
    assert job is not None and job.status == "completed" and job.attempt == 2
    assert [e.type for e in job.events][:3] == ["job.queued", "job.started", "job.failed"]
    assert job.payload == {"n": "j1"}
    failed = await queries.list_jobs(pg, status="failed", since_s=3600)
    assert sorted(j.job_id for j in failed) == ["j2", "j9"]
    assert len(await queries.list_jobs(pg, limit=3)) == 3
    groups = await queries.failures(pg)
    assert groups[0].error_type == "IOError" and groups[0].count == 6
    st = await queries.stats(pg)
    assert st.by_status["completed"] == 4 and st.kinds[0].run_p99_s is not None
    assert st.kinds[0].wait_p50_s is not None
